#!/usr/bin/env python
"""What the GPU machine needs and cannot make (``make gpu-bundle``): an AV-Digits cache, made here.

The GPU machine has no ffmpeg and no network, so the AV-Digits videos are built here
(``examples/avdigits/build.py``), ingested here with the real ``run_ingest`` (as ``make demo`` does:
64x64, 8 frames at 8 fps), and the cache and ``labels.csv`` are packed into ``OUT/avdigits.tar.xz``,
which ``benchmarks/gpu_suite.py --bundle OUT`` unpacks there. Everything else the suite needs is in the
working tree (the synthetic training caches are written on the GPU machine, the packages are there).
Checks that the working tree plus the bundle stay under the 64 MiB that travel, then prints the
command to run on the device and its ``carry`` list.

    python benchmarks/gpu_bundle.py                    # -> .gpu_bundle/
    python benchmarks/gpu_bundle.py --per-class 2 --out /tmp/b   # toy (the smoke test's)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from videolabel.config import IngestConfig  # noqa: E402
from videolabel.ingest import run_ingest  # noqa: E402

LIMIT = 64 * 2**20  # what the device tool carries: tracked + untracked-not-ignored files + carried paths
#: the cache as `make demo` ingests it (the tiny recipe was tuned on it)
CACHE_CONFIG = dict(frames=8, fps=8.0, height=64, width=64)


def tree_bytes(root: Path) -> int:
    """Bytes of the files that travel besides the carried paths: tracked and untracked-not-ignored."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True)
    total = 0
    for name in out.stdout.split(b"\0"):
        if name:
            p = root / name.decode("utf-8", "surrogateescape")
            if p.is_file():
                total += p.stat().st_size
    return total


def build(out: Path, per_class: int, clips: int, seed: int = 0, workers: int | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="videolabel-gpu-bundle-") as tmp:
        avd = Path(tmp) / "avdigits"
        cmd = [sys.executable, str(ROOT / "examples" / "avdigits" / "build.py"), "--out", str(avd),
               "--per-class", str(per_class), "--size", "64x64", "--seconds", "2", "--seed", str(seed)]
        if workers:
            cmd += ["--workers", str(workers)]
        subprocess.run(cmd, check=True, capture_output=True)
        stage = Path(tmp) / "stage"
        cfg = IngestConfig(clips_per_video=clips, **CACHE_CONFIG)  # type: ignore[arg-type]
        summary = run_ingest(avd / "videos", stage / "cache", cfg, workers=workers, progress="none")
        shutil.copy(avd / "labels.csv", stage / "labels.csv")
        raw = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
        tar = out / "avdigits.tar.xz"
        with tarfile.open(tar, "w:xz", preset=3) as tf:  # 3: faster than 6 on starved cores
            tf.add(stage / "cache", arcname="cache")
            tf.add(stage / "labels.csv", arcname="labels.csv")
    info = {"videos": summary.ingested, "clips": summary.clips, "failed": summary.failed, "per_class": per_class,
            "clips_per_video": clips, "ingest": cfg.to_dict(), "cache_bytes": raw, "tar_bytes": tar.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d %H:%M")}
    (out / "bundle.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu_bundle")
    ap.add_argument("--per-class", type=int, default=30, help="videos per digit (default 30: 300 videos)")
    ap.add_argument("--clips-per-video", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    info = build(args.out, args.per_class, args.clips_per_video, workers=args.workers)
    bundle = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    try:
        tree = tree_bytes(ROOT)
    except (OSError, subprocess.CalledProcessError):
        tree = 0
    total = tree + bundle
    print(f"bundle {args.out}: {info['videos']} videos, {info['clips']} clips; cache {info['cache_bytes'] / 2**20:.1f} MiB "
          f"packed to {info['tar_bytes'] / 2**20:.1f} MiB; working tree {tree / 2**20:.1f} MiB; "
          f"carried in all {total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB")
    try:
        rel = args.out.resolve().relative_to(ROOT)
    except ValueError:
        rel = args.out
    print("device command (run tool):")
    print(json.dumps({"command": f"PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py --bundle {rel} --out $OUT "
                                 "--budget 450",
                      "carry": [str(rel)], "timeout_s": 540}))
    if total > LIMIT:
        print(f"too large: {total / 2**20:.1f} MiB > 64 MiB; use a smaller --per-class", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
