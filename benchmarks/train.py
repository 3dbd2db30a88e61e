#!/usr/bin/env python
"""Training throughput: end to end from shards vs model-only on in-memory tensors, in one run.

    python benchmarks/train.py --preset paper --batch-size 64 --steps 60       # one GPU
    python benchmarks/train.py --preset tiny --device cpu --steps 30           # CPU

End to end = the real loader (shards -> workers -> pinned memory -> device) + GPU augmentations +
forward/backward/SGD of both towers and all heads, exactly as `videolabel train` runs them between
label solves. Model-only = the same step on one batch already on the device (no loading, no copy).
Also reported: data_wait (share of step time spent waiting for the next batch), peak GPU memory, and
the label-pass speed (eval forward with augmentations, clips/s) that the solves cost.
The cache is synthetic (random pixels written with the real shard writer): the read path is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model  # noqa: E402
from _synthetic import make_synthetic_cache  # noqa: E402

from videolabel.config import IngestConfig  # noqa: E402
from videolabel.data.loader import StepBatches, make_loader  # noqa: E402
from videolabel.train.config import make_config  # noqa: E402
from videolabel.train.loop import Trainer  # noqa: E402


def machine() -> str:
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{gpu}; {cpu} x{os.cpu_count()}; torch {torch.__version__}; python {platform.python_version()}"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="default: 64 (paper on GPU), 32 otherwise")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--workers", type=int, default=None, help="default: min(8, cores)")
    ap.add_argument("--videos", type=int, default=None, help="videos in the synthetic cache")
    ap.add_argument("--heads", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=400)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--cache", default=None, help="use this cache instead of a synthetic one")
    ap.add_argument("--flops", action="store_true",
                    help="also count the FLOPs of one training step (torch.utils.flop_counter; for MFU)")
    ap.add_argument("--cpu-bf16", action="store_true",
                    help="CPU only: bf16 autocast and channels-last-3d inputs, as on CUDA (exercises those branches)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    paper = args.preset == "paper"
    batch = args.batch_size or (64 if cuda and paper else 32)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="videolabel-bench-train-") as tmp:
        if args.cache:
            cache = Path(args.cache)
        else:
            icfg = IngestConfig(clips_per_video=2) if paper else IngestConfig(
                frames=8, fps=8, height=64, width=64, clips_per_video=2)
            n_videos = args.videos or max(4 * batch, (args.steps + args.warmup) * batch // 2 + batch)
            t0 = time.perf_counter()
            cache = make_synthetic_cache(Path(tmp) / "cache", n_videos, icfg)
            print(f"synthetic cache: {n_videos} videos in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        cfg = make_config(None, {
            "preset": args.preset, "num_clusters": args.clusters, "num_heads": args.heads, "batch_size": batch,
            "workers": workers, "compile": args.compile, "amp": not args.no_amp, "progress": "none",
            "epochs": 1000, "align": False,
        })
        tr = Trainer(cache, Path(tmp) / "run", cfg, device=args.device)
        dev = tr.dev
        if args.cpu_bf16 and not cuda:  # the CUDA branches of the step, on the CPU
            # the training step and the label passes both enter tr.passes.autocast()
            tr.passes.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # type: ignore[method-assign]
            for aug in (tr.inputs.video_train, tr.inputs.video_eval):
                aug.channels_last = True
        n = tr.n
        total = args.warmup + args.steps
        labels = torch.randint(0, args.clusters, (args.heads, n), device=dev)
        has_audio = torch.ones(n, dtype=torch.bool, device=dev)
        sampler = StepBatches(tr.first_clip, tr.n_clips, batch, 1, 0, 0, 0, total)
        loader = make_loader(tr.ds, sampler, workers, cuda, cfg.prefetch)

        # --- end to end
        it = iter(loader)
        wait = 0.0
        t_start = None
        for step in range(total):
            if step == args.warmup:
                sync(dev)
                t_start, wait = time.perf_counter(), 0.0
                if cuda:
                    torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            b = next(it)
            video, audio, vidx = tr.passes.to_device(b)
            wait += time.perf_counter() - t0
            vidx = vidx.to(dev)
            tr.train_step(video, audio, labels[:, vidx], has_audio[vidx], step)
        sync(dev)
        e2e_s = time.perf_counter() - t_start
        e2e = args.steps * batch / e2e_s
        data_wait = wait / e2e_s
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else float("nan")
        del it

        # --- model only: one batch, already on the device
        b = tr.ds.__getitems__(list(range(batch)))
        video, audio, vidx = tr.passes.to_device(b)
        vidx = vidx.to(dev)
        y = labels[:, vidx]
        for step in range(args.warmup):
            tr.train_step(video, audio, y, has_audio[vidx], step)
        sync(dev)
        t0 = time.perf_counter()
        for step in range(args.steps):
            tr.train_step(video, audio, y, has_audio[vidx], step)
        sync(dev)
        model_only = args.steps * batch / (time.perf_counter() - t0)
        flops = None
        if args.flops:  # one step counted (forward, backward; the optimizer's few FLOPs are not)
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                tr.train_step(video, audio, y, has_audio[vidx], args.warmup + args.steps)
            flops = counter.get_total_flops() / batch

        # --- label pass (eval forward + train-time augmentations, per-clip generators)
        m = min(n, 8 * cfg.eval_batch_size)
        clips = tr.first_clip[:m]
        tr.passes.head_log_probs(clips[: cfg.eval_batch_size], 1)
        sync(dev)
        t0 = time.perf_counter()
        tr.passes.head_log_probs(clips, 2)
        sync(dev)
        label_pass = m / (time.perf_counter() - t0)

    res = {
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "preset": args.preset, "device": str(dev),
        "batch": batch, "workers": workers, "steps": args.steps, "compile": args.compile, "amp": not args.no_amp,
        "e2e_clips_per_s": round(e2e, 1), "model_only_clips_per_s": round(model_only, 1),
        "e2e_over_model_only": round(e2e / model_only, 3), "data_wait": round(data_wait, 4),
        "peak_gpu_mem_gib": None if not cuda else round(peak, 2), "label_pass_clips_per_s": round(label_pass, 1),
        "train_flops_per_clip": flops, "cpu_bf16": bool(args.cpu_bf16 and not cuda),
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(f"| {res['date']} | {res['machine']} | {args.preset} | {batch} | {workers} | {res['e2e_clips_per_s']} | "
              f"{res['model_only_clips_per_s']} | {res['e2e_over_model_only']} | {100 * data_wait:.1f}% | "
              f"{res['peak_gpu_mem_gib']} | {res['label_pass_clips_per_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
