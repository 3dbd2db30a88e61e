#!/usr/bin/env python
"""Every GPU figure of the project from one command, each part time-boxed: one JSON + Markdown report.

    python3 benchmarks/gpu_suite.py --bundle .gpu_bundle --out OUT      # on a CUDA machine (< 8 min)
    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu-smoke         # on a CPU, toy sizes (a few minutes; the compile parts are the slowest)

``make gpu-bundle`` builds what the GPU machine cannot (it has no ffmpeg and no network): a small
AV-Digits cache made here with the real ``videolabel ingest``, packed into ``.gpu_bundle/``, and prints
the exact command and ``carry`` list to run there.

Parts, in this order (a part that cannot start inside the suite's ``--budget`` is reported skipped):

* ``env``: GPU, driver, CUDA, cuDNN, NCCL, torch, CPU, and the GPU's dense bf16 peak (table below).
* ``sinkhorn``: one label solve as training runs it (:func:`videolabel.train.solve.solve_head`, head by
  head, training defaults) at N = 1M, K = 1000, 10 heads (``benchmarks/sinkhorn.py``).
* ``train-b64``, ``train-b32``, ``train-b64-compile``, ``train-b32-compile``: ``benchmarks/train.py``
  on the paper preset in bf16: end to end through the real loader and model-only, clips/s, data_wait,
  peak memory, FLOPs per clip (counted on one step) and MFU against the bf16 peak; the label pass.
* ``assign``: ``benchmarks/assign.py``, the paper preset (``videolabel assign``'s own ``infer``).
* ``avdigits-tiny``, ``avdigits-paper``: ``videolabel train`` (the library entry point), ``assign`` and
  ``evaluate`` on the carried AV-Digits cache: the tuned ``tiny`` recipe, and the paper preset (its
  R(2+1)D-18 and ResNet-9 at their full input size, the 64x64 frames upsampled), with their NMI.
* ``torchrun``: ``videolabel train --nproc 2`` (torchrun, NCCL, SyncBatchNorm) when 2 GPUs are there.

Each part runs in a child process under a timeout; a failure or a hang is recorded with its
traceback (the child's stderr) and the suite goes on. ``--smoke`` runs every part at toy sizes on the
CPU: the paper preset's networks at a tiny input, bf16 autocast and channels-last-3d inputs on the CPU,
``torch.compile`` with the eager backend (dynamo's capture, no compiler), gloo for the 2-process part.
The training figures use a synthetic cache (random pixels, the real shard writer): the read path is
that of an ingested cache.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

SUITE_VERSION = 1

#: dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, no sparsity), by a name fragment of
#: ``torch.cuda.get_device_name``; the first fragment found wins, so the specific names come first
BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.0), ("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0),
    ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("B100", 1750.0), ("A100", 312.0), ("A800", 312.0),
    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 6000 Ada", 364.0),
    ("RTX 4090", 165.0), ("RTX A6000", 155.0), ("RTX 3090", 71.0),
]

#: the issue's goals (issue 17, item 4)
GOALS = {"train_clips_per_s": 400.0, "e2e_over_model_only": 0.95, "sinkhorn_s": 5.0, "assign_clips_per_s": 900.0}


def bf16_peak(name: str) -> float | None:
    for frag, peak in BF16_PEAK_TFLOPS:
        if frag.lower() in name.lower():
            return peak
    return None


# --------------------------------------------------------------------------------------------- parts
# Each part is a function of the context (a dict: smoke, device, work, bundle, ...) returning a dict;
# it runs in a child process (``--run-part``).


def _smoke_preset() -> None:
    """The paper preset's networks (R(2+1)D-18, ResNet-9) at a tiny input, for ``--smoke``."""
    from videolabel.models import presets

    presets.PRESETS["paper"] = presets.PRESETS["paper"].replace(
        video_frames=2, video_crop=16, video_short_side=18, scale_jitter=(18, 20), audio_mels=32, audio_frames=25)


def _eager_compile() -> None:
    """``torch.compile`` with the eager backend (dynamo's graph capture without a compiler), for ``--smoke``."""
    import functools

    import torch

    torch.compile = functools.partial(torch.compile, backend="eager")  # type: ignore[assignment]


def _json_call(fn: Callable[[list[str]], Any], argv: list[str]) -> dict[str, Any]:
    """Run a benchmark script's ``main(argv)`` (with ``--json``) and parse the JSON line it prints."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn(argv)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def part_env(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch
    from _common import cpu_model

    res: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "cpu": cpu_model(), "cpus": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(), "gpus": torch.cuda.device_count(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nccl": torch.distributed.is_nccl_available() if torch.distributed.is_available() else False,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        res.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   multiprocessors=p.multi_processor_count, bf16_peak_tflops=bf16_peak(p.name),
                   nccl_version=".".join(map(str, torch.cuda.nccl.version())) if res["nccl"] else None)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            res["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
            res["driver"] = out.stdout.split(",")[1].strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError, IndexError) as exc:
            res["nvidia_smi"] = f"not available: {exc}"
    else:
        res.update(gpu=None, bf16_peak_tflops=None)
    for mod in ("faiss", "ffmpeg", "imageio_ffmpeg"):
        try:
            __import__(mod)
            res[f"{mod}_importable"] = True
        except ImportError:
            res[f"{mod}_importable"] = False
    res["ffmpeg_on_path"] = shutil.which("ffmpeg")
    return res


def part_cache(ctx: dict[str, Any]) -> dict[str, Any]:
    """The synthetic training cache the train parts share (paper geometry; toy in smoke)."""
    from _synthetic import make_synthetic_cache

    from videolabel.config import IngestConfig

    icfg = IngestConfig(frames=2, fps=8, height=18, width=18, clips_per_video=1) if ctx["smoke"] else \
        IngestConfig(clips_per_video=2)
    videos = 12 if ctx["smoke"] else 384
    t0 = time.perf_counter()
    make_synthetic_cache(ctx["train_cache"], videos, icfg)
    return {"videos": videos, "clips": icfg.clips_per_video * videos, "seconds": round(time.perf_counter() - t0, 1),
            "geometry": f"{icfg.frames}x{icfg.height}x{icfg.width}, {icfg.n_mels}x{icfg.mel_frames} log-mel"}


def _train(ctx: dict[str, Any], batch: int, compile_: bool) -> dict[str, Any]:
    import train as bench_train

    smoke = ctx["smoke"]
    if smoke:
        _smoke_preset()
        if compile_:
            _eager_compile()
    argv = ["--preset", "paper", "--cache", ctx["train_cache"], "--batch-size", str(batch), "--json",
            "--clusters", "100" if smoke else "400", "--heads", "2" if smoke else "10",
            "--steps", "1" if smoke else ("20" if compile_ else "30"), "--warmup", "1" if smoke else "8",
            "--workers", "1" if smoke else str(min(8, os.cpu_count() or 1))]
    if compile_:
        argv.append("--compile")
    else:
        argv.append("--flops")
    if smoke:
        argv += ["--device", "cpu"]
        if batch == SMOKE_BATCH["train-b64"] and not compile_:  # bf16 on a CPU is slow: one part has it
            argv.append("--cpu-bf16")
    res = _json_call(bench_train.main, argv)
    peak = ctx.get("bf16_peak_tflops")
    flops = res.get("train_flops_per_clip") or ctx.get("train_flops_per_clip")
    if flops:
        res["train_gflop_per_clip"] = round(flops / 1e9, 1)
        if peak:
            res["mfu_e2e"] = round(res["e2e_clips_per_s"] * flops / (peak * 1e12), 4)
            res["mfu_model_only"] = round(res["model_only_clips_per_s"] * flops / (peak * 1e12), 4)
    return res


def part_sinkhorn(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch
    from sinkhorn import bench_sinkhorn

    from videolabel.train.config import TrainConfig

    n, k, h = (5000, 50, 2) if ctx["smoke"] else (1_000_000, 1000, 10)
    dev = torch.device("cpu" if ctx["smoke"] or not torch.cuda.is_available() else "cuda")
    res = bench_sinkhorn(n, k, h, dev, 1.0, TrainConfig.sinkhorn_tol, TrainConfig.sinkhorn_iters, 0)
    out: dict[str, Any] = {"n": n, "k": k, "heads": h, "device": str(dev), **{a: float(b) for a, b in res.items()}}
    if dev.type == "cuda":
        out["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def part_assign(ctx: dict[str, Any]) -> dict[str, Any]:
    import assign as bench_assign

    if ctx["smoke"]:
        _smoke_preset()
        argv = ["--preset", "paper", "--device", "cpu", "--videos", "8", "--batch-size", "4", "--workers", "1",
                "--heads", "2", "--clusters", "20"]
    else:
        argv = ["--preset", "paper", "--videos", "2000", "--workers", str(min(8, os.cpu_count() or 1))]
    return _json_call(bench_assign.main, [*argv, "--json"])


def _faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _avdigits(ctx: dict[str, Any], preset: str) -> dict[str, Any]:
    import torch

    from videolabel.assign import AssignOptions, assign
    from videolabel.evaluate import evaluate_paths
    from videolabel.train.config import make_config
    from videolabel.train.loop import train

    smoke = ctx["smoke"]
    cache, labels = Path(ctx["avd_cache"]), Path(ctx["avd_labels"])
    if not (cache / "config.json").is_file():
        raise FileNotFoundError(f"no AV-Digits cache at {cache}: run `make gpu-bundle` and carry .gpu_bundle")
    workers = 0 if smoke else min(8, os.cpu_count() or 1)
    over: dict[str, Any] = {"preset": preset, "num_clusters": 10, "workers": workers, "progress": "none", "seed": 0}
    note = []
    if preset == "tiny":
        over["epochs"] = 1 if smoke else 30  # the recipe's own 30 epochs (PRESET_DEFAULTS)
        if smoke:
            over.update(n_solves=2, precise_bn_clips=16, align_proposals=50, final_labels="heads")
        if not _faiss() and over.get("final_labels") != "heads":  # the recipe's final labels are k-means on the features (faiss)
            over["final_labels"] = "heads"
            note.append("faiss not importable: final_labels=heads (the recipe uses features + k-means)")
    else:
        if smoke:
            _smoke_preset()
        over.update(num_heads=2 if smoke else 10, batch_size=4 if smoke else 64, epochs=1 if smoke else 20,
                    n_solves=1 if smoke else 20, precise_bn_clips=8 if smoke else 1024)
        note.append("paper preset; stored 8x64x64 frames are resampled to its 30x112x112 input")
    if smoke:
        over["device"] = "cpu"
    cfg = make_config(None, {k: v for k, v in over.items() if k != "device"})
    run = Path(ctx["work"]) / f"avd-{preset}"
    shutil.rmtree(run, ignore_errors=True)
    dev = "cpu" if smoke else None
    t0 = time.perf_counter()
    summary = train(cache, run, cfg, gt=labels, device=dev)
    t_train = time.perf_counter() - t0
    if torch.cuda.is_available() and not smoke:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = run / "assignments.parquet"
    assign(run, out, options=AssignOptions(workers=workers), device=dev)
    t_assign = time.perf_counter() - t0
    rep = evaluate_paths([out], labels)[0]
    chosen = rep.chosen or {}
    sd = summary.to_dict() if hasattr(summary, "to_dict") else {}
    return {"preset": preset, "videos": int(sd.get("videos", 0) or 0) or None, "train_s": round(t_train, 1),
            "assign_s": round(t_assign, 1), "nmi": chosen.get("nmi"), "acc": chosen.get("acc"),
            "chosen_head": rep.chosen_head, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "num_heads": cfg.num_heads, "final_labels": cfg.final_labels, "notes": note,
            "nmi_gt_last_solve": sd.get("nmi_gt")}


def part_torchrun(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    smoke = ctx["smoke"]
    if not smoke and torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU(s): the 2-process part needs 2"}
    cache = ctx["avd_cache"] if Path(ctx["avd_cache"], "config.json").is_file() else ctx["train_cache"]
    run = Path(ctx["work"]) / "torchrun"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "videolabel", "train", str(cache), "--out", str(run), "--nproc", "2",
           "--preset", "tiny" if smoke else "paper", "--clusters", "10", "--epochs", "1", "--progress", "log",
           "--workers", "0" if smoke else "4"]
    if smoke:
        cmd += ["--device", "cpu", "--set", "n_solves=1", "--set", "precise_bn_clips=8", "--set", "final_labels=heads"]
    else:
        cmd += ["--set", "n_solves=2", "--set", "batch_size=32"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=ctx["part_timeout"] - 10)
    secs = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"torchrun exited {out.returncode}:\n{out.stderr[-4000:]}")
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return {"backend": "gloo" if smoke else "nccl", "processes": 2, "seconds": round(secs, 1),
            "checkpoint": (run / "last.pt").is_file() or any(run.glob("*.pt")), "metrics_lines": len(lines),
            "command": " ".join(cmd[1:])}


PARTS: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], int, int]] = {
    # name: (function, timeout s on a GPU, timeout s in --smoke: generous, a loaded CPU is slow, not hung)
    "env": (part_env, 60, 300),
    "cache": (part_cache, 90, 300),
    "sinkhorn": (part_sinkhorn, 60, 300),
    "train-b64": (lambda c: _train(c, 64, False), 100, 300),
    "train-b32": (lambda c: _train(c, 32, False), 80, 300),
    "assign": (part_assign, 70, 300),
    "avdigits-tiny": (lambda c: _avdigits(c, "tiny"), 100, 300),
    "avdigits-paper": (lambda c: _avdigits(c, "paper"), 100, 300),
    "train-b64-compile": (lambda c: _train(c, 64, True), 150, 300),
    "train-b32-compile": (lambda c: _train(c, 32, True), 120, 300),
    "torchrun": (part_torchrun, 90, 300),
}
SMOKE_BATCH = {"train-b64": 4, "train-b32": 2, "train-b64-compile": 2, "train-b32-compile": 2}


# --------------------------------------------------------------------------------------------- runner


def _run_part_child(name: str, ctx_path: Path, result_path: Path) -> int:
    import faulthandler

    ctx = json.loads(ctx_path.read_text())
    # a hang leaves the stacks of every thread in the part's stderr (the report's traceback) before the kill
    faulthandler.dump_traceback_later(max(1.0, float(ctx["part_timeout"]) - 3.0), exit=False)
    fn = PARTS[name][0]
    if ctx["smoke"] and name in SMOKE_BATCH:
        batch = SMOKE_BATCH[name]
        res = _train(ctx, batch, name.endswith("compile"))
    else:
        res = fn(ctx)
    result_path.write_text(json.dumps(res, default=str))
    return 0


def _tail(path: Path, n: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-n:]


def run_part(name: str, ctx: dict[str, Any], work: Path, timeout: float) -> dict[str, Any]:
    """Run one part in a child process under ``timeout``; never raises."""
    ctx = dict(ctx, part_timeout=timeout)
    ctx_path, res_path = work / f"{name}.ctx.json", work / f"{name}.result.json"
    log_out, log_err = work / f"{name}.stdout.txt", work / f"{name}.stderr.txt"
    ctx_path.write_text(json.dumps(ctx))
    res_path.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"name": name, "timeout_s": round(timeout)}
    with open(log_out, "wb") as fo, open(log_err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--run-part", name,
                                 str(ctx_path), str(res_path)], stdout=fo, stderr=fe, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, 9)  # the part and whatever it started (loader workers, torchrun)
            proc.wait()
            rc = None
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    if rc is None:
        entry.update(status="timeout", error=f"no result within {timeout:.0f} s; stderr tail:\n{_tail(log_err)}")
    elif rc != 0 or not res_path.is_file():
        entry.update(status="failed", error=_tail(log_err) or f"exit code {rc}")
    else:
        result = json.loads(res_path.read_text())
        if "skipped" in result:
            entry.update(status="skipped", error=result["skipped"])
        else:
            entry.update(status="ok", result=result)
    return entry


def _bundle_paths(bundle: Path | None, work: Path) -> tuple[Path, Path]:
    """The AV-Digits cache and labels: unpacked from ``bundle/avdigits.tar.xz`` into ``work``."""
    cache, labels = work / "avdigits" / "cache", work / "avdigits" / "labels.csv"
    if bundle is None:
        return cache, labels
    tar = bundle / "avdigits.tar.xz"
    if tar.is_file() and not (cache / "config.json").is_file():
        with tarfile.open(tar) as tf:
            tf.extractall(work / "avdigits", filter="data") if sys.version_info >= (3, 12) else tf.extractall(work / "avdigits")
    elif (bundle / "cache" / "config.json").is_file():
        return bundle / "cache", bundle / "labels.csv"
    return cache, labels


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--run-part":
        return _run_part_child(argv[1], Path(argv[2]), Path(argv[3]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("gpu_suite_out"), help="report folder (JSON, Markdown, logs)")
    ap.add_argument("--bundle", type=Path, default=None, help="what `make gpu-bundle` made (.gpu_bundle)")
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (every part, CUDA-only branches emulated)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole suite (default 450)")
    ap.add_argument("--parts", default=None, help="comma list of parts (default: all)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="videolabel-gpu-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    names = list(PARTS) if not args.parts else [p.strip() for p in args.parts.split(",")]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        ap.error(f"unknown parts: {', '.join(unknown)} (choose from {', '.join(PARTS)})")
    entries: list[dict[str, Any]] = []
    try:
        try:
            avd_cache, avd_labels = _bundle_paths(args.bundle, work)
        except (OSError, tarfile.TarError) as exc:
            avd_cache, avd_labels = work / "avdigits" / "cache", work / "avdigits" / "labels.csv"
            entries.append({"name": "bundle", "status": "failed", "seconds": 0.0,
                            "error": "".join(traceback.format_exception(exc))})
        ctx: dict[str, Any] = {"smoke": args.smoke, "work": str(work), "train_cache": str(work / "train-cache"),
                               "avd_cache": str(avd_cache), "avd_labels": str(avd_labels)}
        for name in names:
            timeout = PARTS[name][2 if args.smoke else 1]
            left = args.budget - (time.perf_counter() - t_start)
            if left < min(timeout, 30):
                entries.append({"name": name, "status": "skipped", "seconds": 0.0,
                                "error": f"suite budget: {left:.0f} s left of {args.budget:.0f}"})
                continue
            print(f"gpu_suite: {name} (up to {min(timeout, left):.0f} s)", file=sys.stderr, flush=True)
            entry = run_part(name, ctx, work, min(timeout, left))
            for suffix in ("stdout", "stderr"):
                src = work / f"{name}.{suffix}.txt"
                if src.is_file() and src.stat().st_size:
                    shutil.copy(src, logs / src.name)
            print(f"gpu_suite: {name}: {entry['status']} in {entry['seconds']} s", file=sys.stderr, flush=True)
            entries.append(entry)
            res = entry.get("result") or {}
            if name == "env":
                ctx["bf16_peak_tflops"] = res.get("bf16_peak_tflops")
            if name.startswith("train-") and res.get("train_flops_per_clip"):
                ctx.setdefault("train_flops_per_clip", res["train_flops_per_clip"])
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {"suite_version": SUITE_VERSION, "smoke": args.smoke, "budget_s": args.budget,
              "seconds": round(time.perf_counter() - t_start, 1), "goals": GOALS, "parts": entries}
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "gpu_suite.md").write_text(render_markdown(report))
    bad = [e["name"] for e in entries if e["status"] in ("failed", "timeout")]
    print(f"gpu_suite: {len(entries)} parts in {report['seconds']} s; failed or timed out: {', '.join(bad) or 'none'}; "
          f"report: {args.out / 'gpu_suite.md'}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------- report


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def render_markdown(report: dict[str, Any]) -> str:
    parts = {e["name"]: e for e in report["parts"]}
    res = {n: e.get("result") or {} for n, e in parts.items()}
    env = res.get("env", {})
    out = [f"# GPU suite report{' (smoke: toy sizes on the CPU)' if report['smoke'] else ''}", ""]
    out += [f"`python3 benchmarks/gpu_suite.py{' --smoke' if report['smoke'] else ''}`: {len(parts)} parts in "
            f"{report['seconds']} s (budget {report['budget_s']:.0f} s).", ""]
    out += ["## Environment", "", "| | |", "|---|---|"]
    for key in ("date", "gpu", "driver", "nvidia_smi", "gpu_memory_gib", "capability", "bf16_peak_tflops", "torch",
                "cuda_build", "cudnn", "nccl_version", "cpu", "cpus", "python", "faiss_importable", "ffmpeg_on_path"):
        if key in env:
            out.append(f"| {key} | {_fmt(env[key])} |")
    out += ["", "## Parts", "", "| part | status | seconds |", "|---|---|---|"]
    out += [f"| {e['name']} | {e['status']} | {e['seconds']} |" for e in report["parts"]]
    rows = [n for n in parts if n.startswith("train-") and res[n]]
    if rows:
        out += ["", "## Training, paper preset, bf16 (`benchmarks/train.py`)", "",
                "| run | batch | compile | end to end clips/s | model-only clips/s | ratio | data_wait | peak GiB | "
                "GFLOP/clip | MFU e2e | MFU model-only | label pass clips/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for n in rows:
            r = res[n]
            out.append(f"| {n} | {r.get('batch')} | {r.get('compile')} | {_fmt(r.get('e2e_clips_per_s'))} | "
                       f"{_fmt(r.get('model_only_clips_per_s'))} | {_fmt(r.get('e2e_over_model_only'), 3)} | "
                       f"{_fmt(100 * r['data_wait'] if r.get('data_wait') is not None else None)}% | "
                       f"{_fmt(r.get('peak_gpu_mem_gib'), 2)} | {_fmt(r.get('train_gflop_per_clip'))} | "
                       f"{_fmt(r.get('mfu_e2e'), 3)} | {_fmt(r.get('mfu_model_only'), 3)} | {_fmt(r.get('label_pass_clips_per_s'))} |")
    if res.get("sinkhorn"):
        r = res["sinkhorn"]
        out += ["", "## Sinkhorn (one label solve as training runs it)", "",
                "| N | K | heads | device | seconds | iterations | max error |", "|---|---|---|---|---|---|---|",
                f"| {r['n']:,} | {r['k']} | {r['heads']} | {r['device']} | {_fmt(r['seconds'], 2)} | "
                f"{_fmt(r['iterations'], 0)} | {r['max_error']:.1e} |"]
    if res.get("assign"):
        r = res["assign"]
        out += ["", "## Assign (`benchmarks/assign.py`)", "", "| preset | batch | workers | videos | clips/s |",
                "|---|---|---|---|---|", f"| {r['preset']} | {r['batch']} | {r['workers']} | {r['videos']} | {_fmt(r['clips_per_s'])} |"]
    avd = [n for n in ("avdigits-tiny", "avdigits-paper") if res.get(n)]
    if avd:
        out += ["", "## AV-Digits (carried cache, real ingest)", "",
                "| run | epochs | batch | heads | final labels | train s | assign s | NMI | Acc | notes |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for n in avd:
            r = res[n]
            nmi = None if r.get("nmi") is None else 100 * r["nmi"]
            acc = None if r.get("acc") is None else 100 * r["acc"]
            out.append(f"| {n} | {r['epochs']} | {r['batch_size']} | {r['num_heads']} | {r['final_labels']} | "
                       f"{r['train_s']} | {r['assign_s']} | {_fmt(nmi)} | {_fmt(acc)} | {'; '.join(r.get('notes', []))} |")
    if res.get("torchrun"):
        r = res["torchrun"]
        out += ["", "## 2 processes (torchrun)", "", f"{r['backend']}, {r['processes']} processes, {r['seconds']} s, "
                f"checkpoint written: {r['checkpoint']}, metrics lines: {r['metrics_lines']}: `{r['command']}`"]
    out += ["", "## Against the goals", "", "| goal | measured |", "|---|---|"]
    g = report["goals"]
    best = max((res[n] for n in rows), key=lambda r: r.get("e2e_clips_per_s") or 0, default=None)
    out.append(f"| training ≥ {g['train_clips_per_s']:.0f} clips/s per GPU, end to end | "
               f"{_fmt(best.get('e2e_clips_per_s')) if best else 'not measured'} |")
    out.append(f"| end to end ≥ {g['e2e_over_model_only']} × model-only | "
               f"{_fmt(best.get('e2e_over_model_only'), 3) if best else 'not measured'} |")
    out.append(f"| Sinkhorn N = 1M, K = 1000, 10 heads ≤ {g['sinkhorn_s']:.0f} s | "
               f"{_fmt(res['sinkhorn']['seconds'], 2) + ' s' if res.get('sinkhorn') else 'not measured'} |")
    out.append(f"| assign ≥ {g['assign_clips_per_s']:.0f} clips/s | "
               f"{_fmt(res['assign']['clips_per_s']) if res.get('assign') else 'not measured'} |")
    if report["smoke"]:
        out += ["", "Smoke sizes: the figures above say only that each branch ran, not how fast."]
    errs = [e for e in report["parts"] if e["status"] in ("failed", "timeout")]
    if errs:
        out += ["", "## Failures"]
        for e in errs:
            out += ["", f"### {e['name']} ({e['status']})", "", "```", e.get("error", "").strip()[-6000:], "```"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
