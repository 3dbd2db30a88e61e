"""Benchmark: the label solve training runs (Sinkhorn-Knopp, eq. 3, head by head) and the metrics at N = 1M.

Each head is solved by :func:`videolabel.train.solve.solve_head`, as ``videolabel.train.labelling.solve_labels`` does, with
the training defaults of :class:`~videolabel.train.config.TrainConfig` (lambda, tol, iteration cap) and a
uniform prior.

Usage:
    python benchmarks/sinkhorn.py                       # defaults for the machine (see below)
    python benchmarks/sinkhorn.py --config 200000,1000,2 --config 1000000,100,2 --device cpu
    python benchmarks/sinkhorn.py --skip-metrics --logit-scale 2 --tol 1e-6

Defaults: with CUDA, N = 1,000,000, K = 1000, 10 heads (the paper's scale is N ~ 170k-240k videos,
K ~ 300-400, 10 heads); on CPU, N = 200,000 x K = 1000 and N = 1,000,000 x K = 100, 2 heads each.
The log-probabilities are ``log_softmax(s * randn)`` with s = ``--logit-scale``: the iteration count
depends strongly on how peaked P^lambda is (s = 0.3 resembles freshly initialised heads, larger s
later training). Prints markdown table rows.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cpu_model  # noqa: E402

from videolabel.cluster.priors import uniform_prior  # noqa: E402
from videolabel.metrics import clustering_scores  # noqa: E402
from videolabel.train.config import TrainConfig  # noqa: E402
from videolabel.train.solve import solve_head  # noqa: E402


def _machine(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {device.type}: {name}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_sinkhorn(n: int, k: int, heads: int, device: torch.device, scale: float, tol: float,
                   max_iters: int, seed: int, lam: float = TrainConfig.lam) -> dict[str, float]:
    """Time the training's label solve (:func:`solve_head` per head) on H random [N, K] heads.

    Data generation is not timed; the previous labels (which only a non-uniform prior reads) are zeros.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    log_ps = torch.empty((heads, n, k), dtype=torch.float32, device=device)
    for h in range(heads):
        log_ps[h] = torch.log_softmax(scale * torch.randn(n, k, generator=gen, device=device), 1)
    _sync(device)
    start = time.perf_counter()
    masses, previous = uniform_prior(k), torch.zeros(n, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = [solve_head(log_ps[h], masses, previous, match=False, lam=lam, tol=tol, max_iters=max_iters)
                   for h in range(heads)]
    _sync(device)
    elapsed = time.perf_counter() - start
    iters = [res.iterations for res in results]
    return {"seconds": elapsed, "iterations": float(np.mean(iters)), "max_error": max(r.error for r in results),
            "s_per_head_iter": elapsed / max(1, sum(iters))}


def bench_metrics(n: int, k: int, c: int, seed: int) -> tuple[float, dict[str, float]]:
    """Time ``clustering_scores`` on N samples, C classes, K clusters (half the samples follow the class)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    pred = np.where(rng.random(n) < 0.5, (y * 7) % k, rng.integers(0, k, n))
    start = time.perf_counter()
    scores = clustering_scores(y, pred)
    return time.perf_counter() - start, scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=None, metavar="N,K,HEADS",
                        help="a problem size; repeat for several (default depends on the device)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--logit-scale", type=float, default=1.0, help="std of the random logits (default 1)")
    parser.add_argument("--tol", type=float, default=TrainConfig.sinkhorn_tol,
                        help="relative marginal error (default: the training default)")
    parser.add_argument("--max-iters", type=int, default=TrainConfig.sinkhorn_iters)
    parser.add_argument("--lam", type=float, default=TrainConfig.lam)
    parser.add_argument("--metrics-n", type=int, default=1_000_000)
    parser.add_argument("--metrics-k", type=int, default=1000)
    parser.add_argument("--metrics-c", type=int, default=300)
    parser.add_argument("--skip-metrics", action="store_true")
    parser.add_argument("--skip-sinkhorn", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.config:
        configs = [tuple(int(x) for x in c.split(",")) for c in args.config]
    elif device.type == "cuda":
        configs = [(1_000_000, 1000, 10)]
    else:
        configs = [(200_000, 1000, 2), (1_000_000, 100, 2)]

    today = _dt.date.today().isoformat()
    print(f"Machine: {_machine(device)}; date {today}; lambda = {args.lam:g}, tol = {args.tol:g}, "
          f"logits ~ {args.logit_scale:g} * N(0, 1)\n")
    if not args.skip_sinkhorn:
        print("| N | K | heads | device | iterations (mean) | max rel. error | time (s) | s / (head x iter) |")
        print("|---|---|---|---|---|---|---|---|")
        for n, k, heads in configs:
            res = bench_sinkhorn(n, k, heads, device, args.logit_scale, args.tol, args.max_iters, args.seed, args.lam)
            print(f"| {n:,} | {k} | {heads} | {device.type} | {res['iterations']:.0f} | {res['max_error']:.1e} | "
                  f"{res['seconds']:.1f} | {res['s_per_head_iter']:.4f} |", flush=True)
        print()
    if not args.skip_metrics:
        seconds, scores = bench_metrics(args.metrics_n, args.metrics_k, args.metrics_c, args.seed)
        print("| metrics: N | K | C | time (s) | nmi | ari | ami | acc |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {args.metrics_n:,} | {args.metrics_k} | {args.metrics_c} | {seconds:.2f} | {scores['nmi']:.4f} | "
              f"{scores['ari']:.4f} | {scores['ami']:.4f} | {scores['acc']:.4f} |")


if __name__ == "__main__":
    main()
