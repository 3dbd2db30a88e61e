"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so the safe loader reads it. It
carries the model, the optimiser, the labels, the drawn prior masses, the place in the schedule and
in the data order, the generator states, the training config and the cache's ingest config: what a
model needs to be reused (preprocessing travels with the model, method.md).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from videolabel.errors import VideolabelError
from videolabel.fsutil import fsync_dir

LAST = "checkpoint-last.pt"
FINAL = "model-final.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (tmp file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise VideolabelError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user-facing error
        raise VideolabelError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None


def find_checkpoint(run_dir: str | Path, prefer_final: bool = True) -> Path:
    """The final model of a run if it finished, else its last checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VideolabelError(f"run folder not found: {run_dir}")
    order = (FINAL, LAST) if prefer_final else (LAST, FINAL)
    for name in order:
        if (run_dir / name).is_file():
            return run_dir / name
    raise VideolabelError(f"no checkpoint in {run_dir} (expected {FINAL} or {LAST})")


def file_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
