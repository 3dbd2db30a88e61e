"""Ingest benchmark: run_ingest vs bare ffmpeg decoding, and random-access reads from the shards.

Generates a set of H.264 + AAC videos from lavfi sources with the ffmpeg binary (kept between runs
in ``--data``), then in one run times:

(a) ``run_ingest`` into a fresh cache (``--workers`` processes);
(b) bare ffmpeg on the same files at the same parallelism: per video one process decoding the whole
    video to rgb24 rawvideo at the same fps / scale / crop into a pipe, and one decoding the audio
    to mono f32le at the same sample rate into a pipe - what a minimal script would do;
(c) random-access reads through ``ShardDataset.__getitems__`` with random batches, through
    ``--batch`` calls of ``__getitem__`` stacked into one batch (what a loader does without
    ``__getitems__``) and through ``__getitem__`` with random single clips dropped at once, in one
    process (clips/s per core), after one warm-up pass over every clip (page cache warm and every page
    of the maps touched, for every path alike), the three paths alternating.

(a) and (b) alternate for ``--rounds`` rounds (shared machines are noisy): the report gives the best
and the median wall time of each, and CPU seconds (user + sys of the process and its children).

``--baseline DIR`` (a checkout of earlier code, e.g. ``git worktree add /tmp/old HEAD~3``) adds that
code's ``run_ingest`` and reads to the same rounds, so before and after are measured side by side:
each contender runs in a child process with its code first on ``sys.path``.

    python benchmarks/ingest.py                     # 200 videos of 10 s, 640x360
    python benchmarks/ingest.py --n 40 --seconds 4  # quick
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model  # noqa: E402

from videolabel.config import IngestConfig
from videolabel.data.dataset import ShardDataset
from videolabel.ingest import run_ingest
from videolabel.media.binary import ffmpeg_version, find_ffmpeg
from videolabel.media.decode import SCALE_FLAGS


def generate(ffmpeg: str, data: Path, n: int, seconds: float, size: str, workers: int, gop: int | None = None) -> list[Path]:
    """``n`` H.264/AAC videos (x264 veryfast; GOP ``gop`` frames, default x264's 250) of ``seconds``
    at ``size``; cached in ``data``."""
    w, h = (int(x) for x in size.split("x"))
    tag = data / f".set-{n}-{seconds:g}-{size}-{gop}"
    paths = [data / f"v{k:04d}.mp4" for k in range(n)]
    if tag.exists() and all(p.exists() for p in paths):
        return paths
    data.mkdir(parents=True, exist_ok=True)

    def one(k: int) -> None:
        src = ["testsrc2", "mandelbrot", "life", "cellauto"][k % 4]
        opts = {"testsrc2": f"s={w}x{h}:r=30", "mandelbrot": f"s={w}x{h}:r=30", "life": f"s={w}x{h}:r=30:mold=10:ratio=0.1",
                "cellauto": f"s={w}x{h}:r=30:rule={18 + k % 100}"}[src]
        cmd = [ffmpeg, "-y", "-hide_banner", "-loglevel", "error", "-nostdin",
               "-f", "lavfi", "-i", f"{src}={opts},format=yuv420p",
               "-f", "lavfi", "-i", f"sine=frequency={200 + 10 * k}:sample_rate=44100",
               "-t", f"{seconds:g}", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
               "-c:a", "aac", "-b:a", "96k", "-threads", "1", *(["-g", str(gop)] if gop else []), str(paths[k])]
        subprocess.run(cmd, check=True, capture_output=True)

    t = time.monotonic()
    with cf.ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, range(n)))
    tag.write_text("ok")
    print(f"generated {n} videos in {time.monotonic() - t:.1f} s", file=sys.stderr)
    return paths


def bare_ffmpeg(ffmpeg: str, paths: list[Path], cfg: IngestConfig, workers: int) -> float:
    """Seconds to decode all ``paths`` with plain ffmpeg commands, ``workers`` at a time."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    vf = (f"fps={cfg.fps:g},scale={cfg.width}:{cfg.height}:force_original_aspect_ratio=increase:flags={SCALE_FLAGS},"
          f"crop={cfg.width}:{cfg.height},format=rgb24")

    def one(p: Path) -> int:
        v = subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", str(threads), "-i", str(p),
                            "-an", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"], capture_output=True, check=True)
        a = subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", str(threads), "-i", str(p),
                            "-vn", "-ac", "1", "-ar", str(cfg.sample_rate), "-f", "f32le", "pipe:"], capture_output=True, check=True)
        return len(v.stdout) + len(a.stdout)

    t = time.monotonic()
    with cf.ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, paths))
    return time.monotonic() - t


def reads(cache: Path, batch: int, seconds: float, rounds: int = 3) -> tuple[float, float, float, int]:
    """(clips/s through __getitems__, clips/s through __getitem__ with each clip dropped at once, clips/s
    through ``batch`` calls of __getitem__ stacked into one batch, clips in the cache), one process: best of
    ``rounds`` alternating rounds of ``seconds / 3`` each, after a warm-up pass.

    The third is what a DataLoader does with a dataset that has no __getitems__ (fetch each index, then
    collate by stacking): the path a batched read replaces. The second, a clip read and dropped, reuses
    the same few cache-hot megabytes for every clip, which no loader does."""
    ds = ShardDataset(cache)
    rng = np.random.default_rng(0)
    for i in range(0, len(ds), batch):  # touch every page of the maps once (both paths read them)
        ds.__getitems__(list(range(i, min(len(ds), i + batch))))
    ds[0]
    best_b = best_s = best_c = 0.0
    for _ in range(rounds):
        n = 0
        t = time.monotonic()
        while time.monotonic() - t < seconds / 3:
            b = ds.__getitems__(rng.integers(0, len(ds), batch).tolist())
            n += b["video"].shape[0]
        best_b = max(best_b, n / (time.monotonic() - t))
        n = 0
        t = time.monotonic()
        while time.monotonic() - t < seconds / 3:
            ds[int(rng.integers(0, len(ds)))]
            n += 1
        best_s = max(best_s, n / (time.monotonic() - t))
        n = 0
        t = time.monotonic()
        while time.monotonic() - t < seconds / 3:
            b = ShardDataset.collate([ds[i] for i in rng.integers(0, len(ds), batch).tolist()])
            n += b["video"].shape[0]
        best_c = max(best_c, n / (time.monotonic() - t))
    return best_b, best_s, best_c, len(ds)


def _child(code: Path, what: str, *args: str) -> dict:
    """Run ``what`` (ingest or reads) of this script in a child process with ``code`` first on sys.path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), f"--_{what}", *args], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{what} with {code} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child_main(argv: list[str]) -> None:
    """The child of :func:`_child`: ``--_ingest SRC OUT WORKERS SHARD CLIPS`` or ``--_reads CACHE BATCH SECONDS``."""
    import videolabel

    if argv[0] == "--_ingest":
        src, out, workers, shard, clips = argv[1:6]
        c0 = _cpu()
        s = run_ingest(Path(src), Path(out), IngestConfig(clips_per_video=int(clips)), workers=int(workers),
                       shard_size=int(shard), progress="none")
        print(json.dumps({"seconds": s.seconds, "cpu": _cpu() - c0, "ingested": s.ingested, "code": videolabel.__file__}))
    else:
        b, s1, sc, n = reads(Path(argv[1]), int(argv[2]), float(argv[3]))
        print(json.dumps({"batched": b, "single": s1, "single_collated": sc, "clips": n,
                          "code": videolabel.__file__}))


def _cpu() -> float:
    """CPU seconds used so far by this process and its waited-for children (ffmpeg, workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="number of videos (default 200)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each video (default 10)")
    ap.add_argument("--size", default="640x360", help="source size WxH (default 640x360)")
    ap.add_argument("--gop", type=int, default=None, help="keyframe interval in frames (default: x264's 250)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--clips-per-video", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64, help="random-read batch size")
    ap.add_argument("--read-seconds", type=float, default=5.0)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "videolabel-bench-data")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (default 3)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of earlier code: its ingest and reads run in the same rounds")
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]

    ffmpeg = find_ffmpeg()
    load0 = round(os.getloadavg()[0], 2)
    cfg = IngestConfig(clips_per_video=args.clips_per_video)
    name = f"{args.n}x{args.seconds:g}s-{args.size}" + (f"-g{args.gop}" if args.gop else "")
    paths = generate(ffmpeg, args.data / name, args.n, args.seconds, args.size, args.workers, args.gop)
    src = paths[0].parent
    work = Path(tempfile.mkdtemp(prefix="videolabel-bench-"))
    codes = {"ingest": here} if args.baseline is None else {"ingest": here, "baseline": args.baseline.resolve()}
    walls: dict[str, list[float]] = {k: [] for k in ("bare", *codes)}
    cpus: dict[str, list[float]] = {k: [] for k in walls}
    read_res: dict[str, dict] = {}
    try:
        for p in paths:  # warm the page cache for both contenders alike
            p.read_bytes()
        for rnd in range(args.rounds):
            c0 = _cpu()
            walls["bare"].append(bare_ffmpeg(ffmpeg, paths, cfg, args.workers))
            cpus["bare"].append(_cpu() - c0)
            order = list(codes) if rnd % 2 == 0 else list(reversed(codes))
            for name in order:
                shutil.rmtree(work / name, ignore_errors=True)
                r = _child(codes[name], "ingest", str(src), str(work / name), str(args.workers), str(args.shard_size),
                           str(args.clips_per_video))
                assert r["ingested"] == args.n, r
                walls[name].append(r["seconds"])
                cpus[name].append(r["cpu"])
            print(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items()), file=sys.stderr)
        for name in codes:  # every code reads the cache this code wrote (the same bytes)
            read_res[name] = _child(codes[name], "reads", str(work / "ingest"), str(args.batch), str(args.read_seconds))
        r_batched, r_single, n_clips = read_res["ingest"]["batched"], read_res["ingest"]["single"], read_res["ingest"]["clips"]
        r_collated = read_res["ingest"]["single_collated"]
        size_mb = sum(f.stat().st_size for f in (work / "ingest").rglob("*") if f.is_file()) / 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {k: min(v) for k, v in walls.items()}
    med = {k: float(np.median(v)) for k, v in walls.items()}
    cpu = {k: float(np.median(v)) for k, v in cpus.items()}
    res = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "ffmpeg": ffmpeg_version(ffmpeg),
                    "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "set": {"videos": args.n, "seconds": args.seconds, "size": args.size, "codec": "h264 (x264 veryfast) + aac",
                "gop_frames": args.gop or 250},
        "workers": args.workers,
        "rounds": args.rounds,
        "ingest_s_best": round(best["ingest"], 2),
        "ingest_s_median": round(med["ingest"], 2),
        "bare_ffmpeg_s_best": round(best["bare"], 2),
        "bare_ffmpeg_s_median": round(med["bare"], 2),
        "ingest_videos_per_s_best": round(args.n / best["ingest"], 2),
        "bare_videos_per_s_best": round(args.n / best["bare"], 2),
        "ratio_ingest_over_bare_best": round(best["bare"] / best["ingest"], 2),
        "ratio_ingest_over_bare_median": round(med["bare"] / med["ingest"], 2),
        "ingest_cpu_s_per_video": round(cpu["ingest"] / args.n, 4),
        "bare_cpu_s_per_video": round(cpu["bare"] / args.n, 4),
        "clips": n_clips,
        "cache_mb": round(size_mb, 1),
        "read_clips_per_s_batched": round(r_batched, 1),
        "read_batch": args.batch,
        "read_clips_per_s_single": round(r_single, 1),
        "read_clips_per_s_single_collated": round(r_collated, 1),
        "loadavg_1m_at_start": load0,
    }
    if args.baseline is not None:
        res["baseline"] = {
            "code": str(args.baseline), "ingest_s_best": round(best["baseline"], 2), "ingest_s_median": round(med["baseline"], 2),
            "ratio_ingest_over_bare_best": round(best["bare"] / best["baseline"], 2),
            "ratio_ingest_over_bare_median": round(med["bare"] / med["baseline"], 2),
            "ingest_cpu_s_per_video": round(cpu["baseline"] / args.n, 4),
            "read_clips_per_s_batched": round(read_res["baseline"]["batched"], 1),
            "read_clips_per_s_single": round(read_res["baseline"]["single"], 1),
            "read_clips_per_s_single_collated": round(read_res["baseline"].get("single_collated", float("nan")), 1),
        }
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"machine: {res['machine']['cpu']}, {res['machine']['cores']} cores; {res['machine']['ffmpeg']}")
    print(f"set: {args.n} videos x {args.seconds:g} s, {args.size}, {res['set']['codec']}; workers {args.workers}")
    print(f"(a) run_ingest : best {best['ingest']:7.2f} s  median {med['ingest']:7.2f} s  "
          f"{res['ingest_videos_per_s_best']:6.2f} videos/s  {res['ingest_cpu_s_per_video']:.3f} CPU s/video  "
          f"({n_clips} clips, {size_mb:.0f} MB)")
    print(f"(b) bare ffmpeg: best {best['bare']:7.2f} s  median {med['bare']:7.2f} s  "
          f"{res['bare_videos_per_s_best']:6.2f} videos/s  {res['bare_cpu_s_per_video']:.3f} CPU s/video")
    print(f"ratio ingest / bare throughput: {res['ratio_ingest_over_bare_best']:.2f}x best-of-{args.rounds}, "
          f"{res['ratio_ingest_over_bare_median']:.2f}x median (goal >= 0.8x)")
    print(f"(c) random reads: {r_batched:.0f} clips/s per core (__getitems__, batch {args.batch}), "
          f"{r_collated:.0f} clips/s ({args.batch} x __getitem__ stacked into a batch, as a loader without "
          f"__getitems__ does), {r_single:.0f} clips/s (__getitem__, each clip dropped at once)")
    if args.baseline is not None:
        b = res["baseline"]
        print(f"baseline {args.baseline}: ingest best {b['ingest_s_best']:.2f} s median {b['ingest_s_median']:.2f} s, "
              f"{b['ingest_cpu_s_per_video']:.3f} CPU s/video, ratio {b['ratio_ingest_over_bare_best']:.2f}x best "
              f"{b['ratio_ingest_over_bare_median']:.2f}x median; reads {b['read_clips_per_s_batched']:.0f} batched, "
              f"{b['read_clips_per_s_single']:.0f} single")
    print(f"load average (1 min) at start {load0}, at end {res['machine']['loadavg_1m_at_end']}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--_ingest", "--_reads"):
        _child_main(sys.argv[1:])
    else:
        main()
