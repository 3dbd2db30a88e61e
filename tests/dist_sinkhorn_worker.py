"""Worker for tests/test_cluster_sinkhorn.py: row-sharded Sinkhorn-Knopp under torch.distributed (gloo).

Usage: python -m torch.distributed.run --nproc-per-node 2 --standalone tests/dist_sinkhorn_worker.py OUTDIR

Reads OUTDIR/input.pt (written by the test): ``log_ps`` [H, N, K], ``r`` [K], ``splits`` (a list of row
counts per rank, for each scenario). Every collective call is recorded (name, numel) so the test can
check that only K-sized vectors and scalars cross ranks. Writes OUTDIR/rank{RANK}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from videolabel.cluster.sinkhorn import sinkhorn, sinkhorn_multihead  # noqa: E402

RECORDS: list[tuple[str, str, int]] = []
PHASE = ["setup"]


def _record_all_reduce(orig):
    def wrapper(tensor, *args, **kwargs):
        RECORDS.append((PHASE[0], "all_reduce", int(tensor.numel())))
        return orig(tensor, *args, **kwargs)

    return wrapper


def _forbidden(name, orig):
    def wrapper(*args, **kwargs):
        RECORDS.append((PHASE[0], name, -1))
        return orig(*args, **kwargs)

    return wrapper


def main() -> None:
    outdir = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = torch.load(outdir / "input.pt")
    log_ps, r, splits = data["log_ps"], data["r"], data["splits"]

    dist.all_reduce = _record_all_reduce(dist.all_reduce)
    for name in ("all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast", "broadcast_object_list",
                 "reduce", "gather", "scatter", "reduce_scatter", "reduce_scatter_tensor", "all_to_all",
                 "all_to_all_single", "send", "recv", "isend", "irecv"):
        if hasattr(dist, name):
            setattr(dist, name, _forbidden(name, getattr(dist, name)))

    out: dict[str, object] = {"world": world}
    for scenario, split in enumerate(splits):
        start = sum(split[:rank])
        rows = slice(start, start + split[rank])
        PHASE[0] = f"single{scenario}"
        res = sinkhorn(log_ps[0, rows], r, tol=1e-9, max_iters=5000, return_plan=True)
        PHASE[0] = f"multi{scenario}"
        multi = sinkhorn_multihead(log_ps[:, rows], [r] + [None] * (log_ps.shape[0] - 1), tol=1e-9,
                                   max_iters=5000, return_plan=True, heads_per_batch=2)
        out[f"single{scenario}"] = {
            "labels": res.labels,
            "row_sums": res.plan.sum(1),
            "col_sums": res.plan.sum(0),
            "iterations": res.iterations,
            "error": res.error,
        }
        out[f"multi{scenario}"] = [{"labels": m.labels, "col_sums": m.plan.sum(0), "row_sums": m.plan.sum(1)}
                                   for m in multi]
    PHASE[0] = "done"
    out["records"] = RECORDS
    torch.save(out, outdir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
