"""Assignments: every video of a cache labelled by a trained run (or by k-means baselines), as Parquet.

One row per video (``layout="wide"``) or per video and head (``"long"``). The clips of a video are
treated as augmentations: their log-probabilities are averaged, and the two modalities are combined as
in the paper's eq. 6 (mean of log P; a video without audio is labelled by its frames alone), after
rescaling both to the same spread when the run trained with ``balance_modalities``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from videolabel.assign_options import METHODS, MODALITIES, AssignOptions
from videolabel.assign_table import build_table, pick_head, write_features
from videolabel.assignments import write_assignments
from videolabel.data.dataset import ShardDataset
from videolabel.errors import VideolabelError
from videolabel.inference import LOG_PROB_KEYS, RunModel, infer, load_run
from videolabel.train import dist as D

__all__ = ["METHODS", "MODALITIES", "AssignOptions", "AssignSummary", "assign"]


@dataclass
class AssignSummary:
    out: str
    videos: int
    clips: int
    seconds: float
    clips_per_s: float
    method: str
    num_clusters: int
    num_heads: int
    clusters_used: int
    features: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def assign(run_dir: str | Path | Sequence[str | Path], out: str | Path, *, cache: str | Path | None = None,
           options: AssignOptions | None = None, device: str | None = None) -> AssignSummary:
    """Label every video of ``cache`` (default: the run's training cache) and write Parquet to ``out``.

    ``run_dir`` may name several runs (say, the same training with different seeds): each labels the
    videos, and the run whose chosen head's frames-only and audio-only clusters agree most
    (:mod:`videolabel.cluster.select`) is the one written, with every candidate's scores in the file's
    metadata (``run_choice``); with ``method="kmeans"``, k-means on that run's features. No ground truth
    is used.

    Under torchrun each process labels a contiguous share of the videos and writes a part file; rank 0
    joins the parts in order, so no video is dropped or duplicated whatever the number of processes."""
    opts = (options or AssignOptions()).validate()
    runs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    if not runs:
        raise VideolabelError("give at least one run folder")
    if len(runs) > 1 and opts.random_init:
        raise VideolabelError("--random-init labels with untrained encoders: give one run")
    info = D.setup(device)
    t0 = time.perf_counter()
    try:
        out = Path(out)
        best: tuple[float, str, RunModel, ShardDataset, dict[str, torch.Tensor], Any] | None = None
        candidates: list[dict[str, Any]] = []
        cache_used: Path | None = None
        for i, rd in enumerate(runs):
            run = load_run(rd, info.device, random_init=opts.random_init)
            ds, cache_dir = _open_cache(run, cache)
            _check_run(run, opts, several=len(runs) > 1)
            if cache_used is not None and cache_dir.resolve() != cache_used.resolve():
                raise VideolabelError(f"runs {runs[0]} and {rd} label different caches ({cache_used} and "
                                      f"{cache_dir}): pass --cache to label the same videos with each")
            cache_used = cache_dir
            if info.is_main and i == 0:
                try:
                    out.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise VideolabelError(f"cannot write {out}: {exc.strerror}") from None
            n = len(ds.videos)
            start, stop = D.split_range(n, info.world_size, info.rank)
            res = infer(run, ds, np.arange(start, stop), opts, info.device)
            full = _gather({k: v.cpu() for k, v in res.items()}, out, i, info)
            if full is None:  # not the main process
                continue
            if len(runs) == 1:
                best = (0.0, str(rd), run, ds, full, None)
                break
            has_audio = torch.as_tensor(ds.videos["has_audio"].to_numpy(bool).copy())
            pick = pick_head(run, full, has_audio, opts.head if opts.method == "selavi" else "auto", opts.modality)
            head, scores, _, _ = pick
            assert scores is not None  # _check_run: both towers trained
            candidates.append({"run": str(rd), "run_id": run.run_id, "checkpoint_sha1": run.checkpoint_sha1,
                               "head": head, "head_av_nmi": scores})
            if best is None or scores[head] > best[0]:
                best = (scores[head], str(rd), run, ds, full, pick)
        if not info.is_main:
            return AssignSummary(out=str(out), videos=len(ds.videos), clips=0, seconds=0.0, clips_per_s=0.0,
                                 method=opts.method, num_clusters=0, num_heads=0, clusters_used=0)
        assert best is not None
        _, chosen, run, ds, full, pick = best
        table, meta = build_table(run, ds, full, opts, pick=pick if opts.method == "selavi" else None)
        if candidates:
            meta["run_choice"] = {"chosen": chosen, "candidates": candidates}
        write_assignments(table, out, meta)
        feat_path = write_features(ds, full, opts) if opts.features else None
        secs = time.perf_counter() - t0
        clips = int(full["clips"])
        used = int(table["cluster"].nunique())
        return AssignSummary(out=str(out), videos=len(ds.videos), clips=clips, seconds=round(secs, 2),
                             clips_per_s=round(clips * len(runs) / max(secs, 1e-9), 2),
                             method=meta["method"], num_clusters=meta["num_clusters"], num_heads=meta["num_heads"],
                             clusters_used=used, features=feat_path, meta=meta)
    finally:
        D.teardown()


def _open_cache(run: RunModel, cache: str | Path | None) -> tuple[ShardDataset, Path]:
    """The cache to label (default: the run's training cache), checked against the run's ingest settings."""
    cache_dir = Path(cache) if cache else (Path(run.cache) if run.cache else None)
    if cache_dir is None:
        raise VideolabelError("the run does not record its cache: pass --cache")
    ds = ShardDataset(cache_dir)
    if ds.config.hash() != run.ingest_hash:
        raise VideolabelError(f"cache {cache_dir} was ingested with a different config than the run's "
                              f"training cache ({ds.config.hash()} vs {run.ingest_hash}): re-ingest it with "
                              "the run's settings (see the run's checkpoint ingest_config)")
    return ds, cache_dir


def _check_run(run: RunModel, opts: AssignOptions, *, several: bool) -> None:
    """Refuse labelling from heads the run did not train, and an out-of-range ``--head``."""
    trained = run.train_config.modalities
    if opts.method == "selavi" and trained == "concat":
        if opts.modality != "both":
            raise VideolabelError("the run trained its heads on concatenated features (modalities=concat): "
                                  "use --modality both")
    elif opts.method == "selavi" and trained != "both":
        only = "visual" if trained == "video" else "audio"
        if opts.modality != only:
            raise VideolabelError(f"the run trained only its {only} heads (modalities={trained}): "
                                  f"use --modality {only}")
    if several and trained != "both":
        raise VideolabelError(f"choosing among several runs needs runs that trained both towers; {run.run_id} "
                              f"has modalities={trained}")
    if isinstance(opts.head, int) and not 0 <= opts.head < run.train_config.num_heads:  # else auto or consensus
        raise VideolabelError(f"--head must be auto, consensus or in 0..{run.train_config.num_heads - 1}")


def _gather(local: dict[str, torch.Tensor], out: Path, index: int, info: Any) -> dict[str, torch.Tensor] | None:
    """Every process's share of :func:`infer`'s result joined in rank order on the main process (None
    elsewhere), through part files beside ``out`` that are removed once read."""
    if not info.distributed:
        return local
    def part(r: int) -> Path:
        return out.with_name(f".{out.name}.part{index}-{r}-of-{info.world_size}.pt")
    torch.save(local, part(info.rank))
    D.barrier()
    full = None
    if info.is_main:
        parts = [torch.load(part(r), weights_only=True) for r in range(info.world_size)]
        full = {k: torch.cat([p[k] for p in parts], dim=1 if k in LOG_PROB_KEYS else 0)
                for k in parts[0] if k != "clips"}
        full["clips"] = torch.tensor(sum(int(p["clips"]) for p in parts))
        for r in range(info.world_size):
            part(r).unlink(missing_ok=True)
    D.barrier()
    return full
