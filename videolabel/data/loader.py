"""Batches of clip indices and the DataLoader that reads them from a :class:`ShardDataset`.

:class:`StepBatches` is the training order (one clip per video per epoch, drawn from the run seed);
:class:`ListBatches` reads fixed clips in order (label passes, inference). :func:`make_loader` builds the
loader both the trainer and ``videolabel assign`` use.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import warnings
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from videolabel.data.dataset import ShardDataset
from videolabel.seeds import EPOCH, generator, seed_for

__all__ = ["ListBatches", "StepBatches", "default_loader_workers", "make_loader", "pick_clip", "usable_cpus"]


def pick_clip(first_clip: np.ndarray, n_clips: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One clip index per video from uniforms ``u`` in [0, 1): clip floor(u * n_clips) of each video."""
    return first_clip + np.minimum((u * n_clips).astype(np.int64), n_clips - 1)


class StepBatches(Sampler[list[int]]):
    """Batches of clip indices for global steps ``start .. total - 1`` on one rank.

    Epoch e visits every video once in an order drawn from (seed, e), with one clip per video drawn
    from the same generator (clips are augmentations); the order is padded by wrapping to a multiple
    of the global batch, and rank r takes its slice of each global batch.
    """

    def __init__(self, first_clip: np.ndarray, n_clips: np.ndarray, batch: int, world: int, rank: int,
                 seed: int, start: int, total: int) -> None:
        self.first_clip, self.n_clips = first_clip, n_clips
        self.batch, self.world, self.rank = batch, world, rank
        self.seed, self.start, self.total = seed, start, total
        self.n = len(first_clip)
        self.steps_per_epoch = max(1, math.ceil(self.n / (batch * world)))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Clip indices of epoch ``epoch`` for all ranks, padded to whole global batches."""
        g = generator(seed_for(self.seed, EPOCH, epoch))
        perm = torch.randperm(self.n, generator=g).numpy()
        u = torch.rand(self.n, generator=g, dtype=torch.float64).numpy()
        clips = pick_clip(self.first_clip[perm], self.n_clips[perm], u)
        need = self.steps_per_epoch * self.batch * self.world
        return np.resize(clips, need)  # wraps around: pads with the first videos again

    def __iter__(self) -> Iterator[list[int]]:
        epoch, order = -1, np.zeros(0, np.int64)
        for step in range(self.start, self.total):
            e, i = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, order = e, self.epoch_order(e)
            g0 = i * self.batch * self.world + self.rank * self.batch
            yield order[g0 : g0 + self.batch].tolist()

    def __len__(self) -> int:
        return max(0, self.total - self.start)


class ListBatches(Sampler[list[int]]):
    """Fixed clip indices in fixed-size batches, in order (label passes, inference)."""

    def __init__(self, indices: np.ndarray, batch: int) -> None:
        self.indices, self.batch = indices, batch

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, len(self.indices), self.batch):
            yield self.indices[i : i + self.batch].tolist()

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch)


def _identity(batch: Any) -> Any:
    return batch


def _ignore_sigint(_worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the training process, which checkpoints (:class:`StopFlag`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or a SLURM job's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_loader_workers() -> int:
    """Loader processes per training (or labelling) process that fit this machine.

    Up to 4, leaving one CPU per process for the model (0 on one CPU: the process loads its own batches).
    """
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(4, usable_cpus() // local - 1))


_warned_workers = False


def _warn_workers_once(workers: int) -> None:
    """One line when more loader processes are asked for than there are CPUs.

    torch's own warning (repeated for every loader) is silenced then.
    """
    global _warned_workers
    cpus = usable_cpus()
    if workers <= cpus or _warned_workers:
        return
    _warned_workers = True
    print(f"videolabel: warning: {workers} loader workers on {cpus} usable CPU(s) may be slow or freeze; "
          f"--workers {default_loader_workers()} fits this machine", file=sys.stderr, flush=True)
    warnings.filterwarnings("ignore", message=r"This DataLoader will create \d+ worker processes", category=UserWarning)


def make_loader(ds: ShardDataset, sampler: Sampler[list[int]], workers: int, pin: bool,
                prefetch: int = 4) -> DataLoader[Any]:
    """A DataLoader over ``ds`` reading the batches of ``sampler`` (already collated by the dataset)."""
    kw: dict[str, Any] = {}
    if workers > 0:
        _warn_workers_once(workers)
        kw["prefetch_factor"] = prefetch
        kw["worker_init_fn"] = _ignore_sigint
    return DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=_identity, pin_memory=pin, **kw)
