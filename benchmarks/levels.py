"""Benchmark: what ``audio_level="video"`` costs when a run starts, from the statistics ingest stored or measured.

A run that levels its sound (the ``tiny`` default) needs each video's peak and per-band background
(:func:`videolabel.data.levels.video_level_table`). Ingest stores them with each video's record
(:mod:`videolabel.ingest.levelstats`); a cache ingested before that is measured by two passes over its sound,
in every process of every run and every ``assign``. This times both ways on a cache, checks that they give the
same table bit for bit, and extrapolates the measured way to a large collection.

Usage:
    python benchmarks/levels.py CACHE [CACHE ...] [--rounds 3] [--device cpu]

A cache ingested before the statistics were stored is timed the measured way only; one ingested since, both
ways (the measured way by hiding the stored statistics).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cpu_model  # noqa: E402

from videolabel.data.dataset import ShardDataset  # noqa: E402
from videolabel.data.levels import video_level_table  # noqa: E402


def _best(ds: ShardDataset, device: str, rounds: int) -> tuple[float, tuple]:
    """The best time of ``rounds`` level tables of ``ds`` (as its ``level_stats`` say), and the table."""
    best, out = math.inf, None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = video_level_table(ds, math.log(1.0), device=device)  # the tiny preset's log_floor
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("caches", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"- Date: {_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %z}; machine: {cpu_model()} "
          f"({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"device {args.device}; best of {args.rounds}")
    print()
    print("| cache | videos | clips | reading the stored statistics (once) | table from them | measured (two passes) "
          "| ms per clip measured | same table |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for cache in args.caches:
        ds = ShardDataset(cache)
        t0 = time.perf_counter()
        stats = ds.level_stats  # read from the records when first asked for
        read_s = time.perf_counter() - t0
        stored_s, stored = _best(ds, args.device, args.rounds) if stats is not None else (math.nan, None)
        ds.level_stats = None
        measured_s, measured = _best(ds, args.device, args.rounds)
        ds.level_stats = stats
        same = "-" if stored is None else (
            "yes, bit for bit" if stored[0].tobytes() == measured[0].tobytes() and stored[1] == measured[1] else "NO")
        print(f"| {cache} | {len(ds.videos):,} | {len(ds):,} | "
              f"{'-' if stored is None else f'{1e3 * read_s:.1f} ms'} | "
              f"{'-' if stored is None else f'{1e3 * stored_s:.1f} ms'} | {measured_s:.2f} s | "
              f"{1e3 * measured_s / max(len(ds), 1):.2f} | {same} |")


if __name__ == "__main__":
    main()
