#!/usr/bin/env python
"""Inference throughput of `videolabel assign` (clips/s), end to end from shards.

    python benchmarks/assign.py --preset paper --videos 2000          # one GPU (goal >= 900 clips/s on an H100)
    python benchmarks/assign.py --preset tiny --device cpu            # CPU

Runs the same function as `videolabel assign` (loader -> eval augmentations -> both encoders and all heads,
bf16 on CUDA -> clip averaging) on a synthetic cache written with the real shard writer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import make_synthetic_cache  # noqa: E402
from train import machine, sync  # noqa: E402

from videolabel.assign import AssignOptions  # noqa: E402
from videolabel.config import IngestConfig  # noqa: E402
from videolabel.data.dataset import ShardDataset  # noqa: E402
from videolabel.inference import RunModel, infer  # noqa: E402
from videolabel.models import build_model  # noqa: E402
from videolabel.train.config import make_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--device", default=None)
    ap.add_argument("--videos", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--heads", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=400)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    paper = args.preset == "paper"
    batch = args.batch_size or (128 if dev.type == "cuda" else 64)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    n_videos = args.videos or (2000 if dev.type == "cuda" else 200)
    with tempfile.TemporaryDirectory(prefix="videolabel-bench-assign-") as tmp:
        icfg = IngestConfig(clips_per_video=1) if paper else IngestConfig(frames=8, fps=8, height=64, width=64,
                                                                          clips_per_video=1)
        cache = make_synthetic_cache(Path(tmp) / "cache", n_videos, icfg)
        ds = ShardDataset(cache)
        cfg = make_config(None, {"preset": args.preset, "num_clusters": args.clusters, "num_heads": args.heads})
        model = build_model(args.preset, num_clusters=args.clusters, num_heads=args.heads).to(dev).eval()
        if cfg.channels_last:  # as `load_run` holds a trained run's weights (videolabel.inference)
            model.to_channels_last()
        run = RunModel(model=model, train_config=cfg, ingest_config=icfg.to_dict(), ingest_hash=icfg.hash(),
                       checkpoint=Path("none"), checkpoint_sha1="", run_id="bench", cache=str(cache))
        opts = AssignOptions(batch_size=batch, workers=workers)
        infer(run, ds, np.arange(min(n_videos, 2 * batch)), opts, dev)  # warm-up (cudnn autotune, workers)
        sync(dev)
        t0 = time.perf_counter()
        infer(run, ds, np.arange(n_videos), opts, dev)
        sync(dev)
        rate = n_videos / (time.perf_counter() - t0)
    res = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "preset": args.preset, "device": str(dev),
           "batch": batch, "workers": workers, "videos": n_videos, "clips_per_s": round(rate, 1)}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"| {res['date']} | {res['machine']} | {args.preset} | {batch} | {workers} | {n_videos} | {res['clips_per_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
