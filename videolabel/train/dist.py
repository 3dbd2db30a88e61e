"""Distributed set-up: torchrun's environment, NCCL on CUDA and gloo on CPU, and even splits."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from videolabel.errors import VideolabelError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> DistInfo:
    """Initialise torch.distributed from torchrun's variables, if present, and pick the device.

    ``device``: "cuda", "cpu" or None (CUDA when available).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    index = check_device(device)
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(index if index is not None else local_rank % max(torch.cuda.device_count(), 1))
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(minutes=60),
            device_id=dev if use_cuda else None,
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def check_device(device: str | None) -> int | None:
    """Refuse (one line) a ``--device`` other than cpu, cuda or cuda:N, and CUDA where there is none;
    returns N for cuda:N."""
    if device is None or device == "cpu":
        return None
    head, _, tail = device.partition(":")
    if head != "cuda" or (tail and not tail.isdigit()):
        raise VideolabelError(f"--device must be cuda, cuda:N or cpu, not {device!r}")
    if not torch.cuda.is_available():
        raise VideolabelError(f"--device {device}: no CUDA GPU is usable here (torch {torch.__version__}, "
                              f"built for CUDA {torch.version.cuda or 'none'}); use --device cpu")
    if tail and int(tail) >= torch.cuda.device_count():
        raise VideolabelError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    return int(tail) if tail else None


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def split_range(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Contiguous share [start, stop) of ``n`` items for ``rank``: sizes differ by at most one,
    every item belongs to exactly one rank (no drop, no duplicate, whatever ``n % world_size``)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def all_gather_rows(x: torch.Tensor, n_total: int) -> torch.Tensor:
    """Concatenate each rank's rows (shares from :func:`split_range`) in rank order.

    Used for the N labels per head only (never the N x K matrix). Pads to the largest share since
    all_gather needs equal sizes, then trims.
    """
    if not is_dist():
        return x
    world = dist.get_world_size()
    size = split_range(n_total, world, 0)[1]  # rank 0 holds the largest share
    pad = torch.zeros((size,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    pad[: x.shape[0]] = x
    parts = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(parts, pad)
    rows = [parts[r][: (lambda s: s[1] - s[0])(split_range(n_total, world, r))] for r in range(world)]
    return torch.cat(rows, dim=0)


def all_reduce_max(flag: bool, device: torch.device) -> bool:
    """True if any rank says True (used to agree on stopping at a signal)."""
    if not is_dist():
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if is_dist():
        dist.barrier()
