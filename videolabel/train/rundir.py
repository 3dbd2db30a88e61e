"""The run folder of ``videolabel train --out RUN/`` (docs/architecture.md "The run folder").

One writer per folder (a lock held for the run's life), ``config.json`` / ``run.json`` written when a run
starts, ``metrics.jsonl`` appended to (and cut back to a checkpoint's step on ``--resume``), and the
final ``labels.parquet``. Checkpoints are :mod:`videolabel.train.checkpoint`'s.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import videolabel
from videolabel.errors import VideolabelError
from videolabel.fsutil import FolderLock, write_parquet_atomic
from videolabel.train.checkpoint import LAST
from videolabel.train.config import TrainConfig, diff_configs

__all__ = ["RunFolder", "check_resumable", "hash_ids", "run_info"]

METRICS = "metrics.jsonl"
LABELS = "labels.parquet"


def hash_ids(ids: list[str]) -> str:
    """A short hash of the cache's ordered video ids: a resumed run must see the same videos."""
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]


def run_info(cfg: TrainConfig, *, device: torch.device, world_size: int, cache_dir: Path,
             ingest_config: dict[str, Any], ingest_hash: str, videos: int, videos_hash: str,
             steps_per_epoch: int, total_steps: int, schedule: list[int]) -> dict[str, Any]:
    """The content of ``run.json``: versions, device, world size, seed, cache, ingest config, schedule."""
    cuda = device.type == "cuda"
    return {
        "videolabel": videolabel.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if cuda else None,
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "world_size": world_size,
        "seed": cfg.seed,
        "cache": str(cache_dir.resolve()),
        "ingest_config": ingest_config,
        "ingest_config_hash": ingest_hash,
        "videos": videos,
        "videos_hash": videos_hash,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "schedule": schedule,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def check_resumable(state: dict[str, Any], cfg: TrainConfig, *, ingest_hash: str, videos_hash: str, videos: int,
                    world_size: int) -> None:
    """Refuse (one line) to resume a checkpoint under another config, cache, set of videos or world size."""
    diffs = diff_configs(state["train_config"], cfg)
    if diffs:
        raise VideolabelError(f"--resume with a different config ({'; '.join(diffs)}); "
                              "use the run's config or start a new run")
    if state["ingest_hash"] != ingest_hash:
        raise VideolabelError("--resume on a cache made with a different ingest config "
                              f"(run {state['ingest_hash']}, cache {ingest_hash})")
    if state["videos_hash"] != videos_hash:
        raise VideolabelError(f"--resume on a cache whose videos changed (run had {state['n_videos']}, "
                              f"cache has {videos}); start a new run")
    if state["world_size"] != world_size:
        raise VideolabelError(f"--resume with {world_size} process(es); the run used "
                              f"{state['world_size']} (the data order depends on it)")


class RunFolder:
    """``RUN/`` as one process sees it; only the main process (``is_main``) writes."""

    def __init__(self, out: str | Path, *, is_main: bool) -> None:
        self.out = Path(out)
        self.is_main = is_main
        self._lock: FolderLock | None = None

    def open(self, resume: bool) -> None:
        """Make the folder and take its lock (main process): a second ``train --out`` of it fails at once."""
        if not self.is_main:
            return
        if resume and not self.out.is_dir():
            raise VideolabelError(f"nothing to resume: no run folder {self.out}")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VideolabelError(f"cannot write run folder {self.out}: {exc.strerror}") from None
        self._lock = FolderLock(self.out, "run folder").acquire()

    def close(self) -> None:
        """Release the folder; safe to call twice."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def checkpoint_to_resume(self) -> Path:
        """``RUN/checkpoint-last.pt``, which ``--resume`` needs."""
        ckpt = self.out / LAST
        if not ckpt.is_file():
            raise VideolabelError(f"nothing to resume: no {LAST} in {self.out}")
        return ckpt

    def start(self, cfg: TrainConfig, info: dict[str, Any]) -> None:
        """A new run: refuse a folder that holds one, then write ``config.json``, ``run.json``, empty metrics."""
        if self.out.exists() and any(self.out.glob("*.pt")):
            raise VideolabelError(f"run folder {self.out} already holds a run: pass --resume to continue it, "
                                  "or choose another --out")
        if not self.is_main:
            return
        try:  # the folder was made by open(), with the lock
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            (self.out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
            (self.out / METRICS).write_text("")
        except OSError as exc:
            raise VideolabelError(f"cannot write run folder {self.out}: {exc.strerror}") from None

    def drop_metrics_after(self, step: int) -> None:
        """Resuming at ``step``: drop the metrics logged after it (they will be logged again)."""
        path = self.out / METRICS
        if self.is_main and path.is_file():
            keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
            path.write_text("".join(ln + "\n" for ln in keep))

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (with the time) to ``metrics.jsonl``."""
        if not self.is_main:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.out / METRICS, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def write_labels(self, videos: pd.DataFrame, labels: np.ndarray) -> Path | None:
        """``labels.parquet``: ``video_id, path, label_h0 .. label_h{H-1}`` from [H, N] labels (main process)."""
        if not self.is_main:
            return None
        df = pd.DataFrame({"video_id": videos["video_id"].to_numpy(), "path": videos["path"].to_numpy()})
        for h in range(labels.shape[0]):
            df[f"label_h{h}"] = labels[h]
        path = self.out / LABELS
        write_parquet_atomic(df, path)
        return path
