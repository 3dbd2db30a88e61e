"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so the safe loader reads it. It
carries the model, the optimiser, the labels, the drawn prior masses, the place in the schedule and
in the data order, the generator states, the training config and the cache's ingest config: what a
model needs to be reused (preprocessing travels with the model, method.md).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch

from videolabel.errors import VideolabelError, first_line
from videolabel.fsutil import fsync_dir, replace_atomic

LAST = "checkpoint-last.pt"
FINAL = "model-final.pt"
#: the layout version a checkpoint's ``format`` records; a checkpoint of a later one is refused
CHECKPOINT_FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`~videolabel.fsutil.replace_atomic`: tmp file, fsync,
    rename; the tmp file is removed on error), then fsync the folder."""
    path = Path(path)
    replace_atomic(lambda tmp: torch.save(state, tmp), path)
    fsync_dir(path.parent)
    return path


#: what a checkpoint must hold, and of which type, to label videos (``assign``) ...
ASSIGN_KEYS: dict[str, type] = {"model": dict, "train_config": dict, "ingest_config": dict, "ingest_hash": str}
#: ... and to continue its run (``train --resume``)
RESUME_KEYS: dict[str, type] = {
    **ASSIGN_KEYS, "optimizer": dict, "labels": torch.Tensor, "prior_masses": torch.Tensor, "step": int,
    "solve_index": int, "aligned": bool, "rng_cpu": torch.Tensor, "videos_hash": str, "n_videos": int,
    "world_size": int,
}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    need: dict[str, type] | None = None) -> dict[str, Any]:
    """Read a checkpoint with the safe loader; every failure is a one-line :class:`VideolabelError`.

    ``need`` (e.g. :data:`ASSIGN_KEYS`): keys the checkpoint must hold, with their types; a checkpoint
    that loads but lacks one, or holds another type, is refused before anything uses it."""
    path = Path(path)
    if not path.is_file():
        raise VideolabelError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # never repeat torch's advice to load with weights_only=False
        what = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln), "")
        if not what:  # not a pickle of objects at all: a damaged or foreign file
            raise VideolabelError(f"cannot read checkpoint {path}: not a checkpoint file "
                                  "(damaged or foreign)") from None
        raise VideolabelError(f"refused checkpoint {path}: it holds objects other than tensors and plain "
                              f"values, which only code could rebuild ({what.rstrip('.')}); videolabel reads "
                              "only the checkpoints `videolabel train` writes") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user-facing error
        raise VideolabelError(f"cannot read checkpoint {path}: {type(exc).__name__}: {first_line(exc)}") from None
    if need is not None:
        check_state(state, path, need)
    return state


def check_state(state: Any, path: str | Path, need: dict[str, type]) -> None:
    """Refuse (one line) a loaded checkpoint without the keys and types of ``need``."""
    if not isinstance(state, dict):
        raise VideolabelError(f"{path} is not a videolabel checkpoint (it holds a {type(state).__name__}, "
                              "not a dict)")
    fmt = state.get("format", CHECKPOINT_FORMAT)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > CHECKPOINT_FORMAT:
        raise VideolabelError(f"{path} has checkpoint format {fmt!r}; this videolabel reads format "
                              f"{CHECKPOINT_FORMAT} and older: use a newer videolabel")
    for key, kind in need.items():
        if key not in state:
            raise VideolabelError(f"{path} is not a complete videolabel checkpoint: no {key!r}")
        value = state[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise VideolabelError(f"damaged checkpoint {path}: {key} is a {type(value).__name__}, "
                                  f"not a {kind.__name__}")
    bad = next((k for k, v in state["model"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)),
               None) if "model" in need else None
    if bad is not None:
        raise VideolabelError(f"damaged checkpoint {path}: model entry {bad!r} is not a tensor")


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(weights)``, refusing (one line: the first problem and how many) weights
    whose names or shapes do not fit the model the checkpoint's own settings describe."""
    own = model.state_dict()
    problems = [f"{k} is missing" for k in own if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in own]
    problems += [f"{k} has shape {list(weights[k].shape)}, the model needs {list(v.shape)}"
                 for k, v in own.items() if k in weights and tuple(weights[k].shape) != tuple(v.shape)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise VideolabelError(f"damaged checkpoint {path}: its weights do not fit the model of its own settings: "
                              f"{problems[0]}{more}")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise VideolabelError(f"damaged checkpoint {path}: {first_line(exc)}") from None


def train_config_of(state: dict[str, Any], path: str | Path) -> Any:
    """The checkpoint's :class:`~videolabel.train.config.TrainConfig`, checked (one-line error)."""
    from videolabel.config import from_dict
    from videolabel.train.config import TrainConfig

    # types only: validate() would refuse, say, a prior file that has since moved, which labelling never reads
    return from_dict(TrainConfig, state["train_config"], origin=f"damaged checkpoint {path}: train_config")


def find_checkpoint(run_dir: str | Path) -> Path:
    """The final model of a run if it finished, else its last checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VideolabelError(f"run folder not found: {run_dir}")
    for name in (FINAL, LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    raise VideolabelError(f"no checkpoint in {run_dir} (expected {FINAL} or {LAST})")


def file_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha1 of a file's bytes (hex), read in chunks."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
