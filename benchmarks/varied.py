#!/usr/bin/env python
"""A development collection unlike AV-Digits, labelled the way a user would: default ingest, tiny preset.

The AV-Digits benchmark (``avdigits.py``) has one look (a grey digit over grey noise at 40-55 % of a
64x64 frame), one silence floor, one codec and six English speakers. A recipe tuned there may rely on
any of these. This script builds a collection that shares only the task (ten spoken and written digits)
and checks the product on it, with nothing set but what a user must set:

* **Sound**: the digits spoken by espeak-ng (Debian package ``espeak-ng``) in 20 languages, each with
  its own voice variant, at three speeds and pitches per voice; so the words themselves differ between
  languages ("three", "trois", "drei", "san", ...), and no recording is FSDD's.
* **Picture**: the AV-Digits builder's ``--style varied``: per video a digit scale of 25-70 %,
  low-resolution handwriting in half of them, coloured ink over flat, noisy, gradient or textured
  backgrounds of any colour; speech from -30 to -1 dBFS over a noise floor of -80 to -35 dBFS.
* **Files**: five groups of videos with their own size (landscape, portrait, square, 72 to 320 pixels),
  frame rate (12 to 30 fps), length (1.6 to 3 s) and codec (H.264, MPEG-4 part 2, VP9 in WebM), each
  group with its own four voices.

Then, through the library as the CLI would run it: ``ingest`` with the default settings, ``train
--preset tiny --clusters 10 --epochs E`` (default 60, as the issue's acceptance check) for each seed,
``assign`` (the chosen head, and the k-means baselines on the trained and on random-init features),
``evaluate`` against the digits. Nothing here is tuned: the settings are the product's defaults.

Findings so far: ``benchmarks/RESULTS.md``, "A collection unlike AV-Digits". Note that each group has
its own voices, so the group (file look) and the voices are shared by both streams, as a source is in a
real collection: the cross-modal objective can agree on them instead of on the digit.

Other looks and sounds: ``--style plain`` (AV-Digits' grey look), ``--style lowres`` (the plain look with the
handwriting at 7-12 pixels a side: the collection the issue describes), ``--sound plain|varied`` (the level and
noise-floor spread of the varied sound with any look); ``--voices collection`` lets every group draw from all
20 voices.

Usage (2 CPU cores; about 15-20 minutes of training per seed at 60 epochs)::

    apt-get install espeak-ng        # once
    python benchmarks/varied.py --style lowres --voices collection --seeds 0 1 2 --out /tmp/varied \
        --results benchmarks/results/varied.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, finished_run, label_free_heads, load_builder, parse_settings, settings_tag  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: espeak-ng voice (language + variant) per speaker name; four per group, 20 languages in all
VOICES: tuple[tuple[str, str], ...] = (
    ("en-us", "m3"), ("fr-fr", "f2"), ("de", "m1"), ("es", "f4"),
    ("it", "m5"), ("pt-br", "f1"), ("nl", "m2"), ("pl", "f3"),
    ("sv", "m4"), ("cs", "f5"), ("hu", "m6"), ("fi", "f2"),
    ("tr", "m7"), ("ru", "f1"), ("el", "m3"), ("ro", "f4"),
    ("da", "m2"), ("cmn", "f3"), ("hi", "m1"), ("id", "f5"),
)
#: (words per minute, pitch 0-99) of the three takes of each voice
TAKES = ((130, 35), (165, 55), (200, 75))
#: per group: frame size WxH, fps, seconds, codec
GROUPS: tuple[tuple[str, float, float, str], ...] = (
    ("160x120", 25.0, 2.0, "libx264"),
    ("72x128", 30.0, 1.6, "mpeg4"),
    ("320x240", 15.0, 2.5, "libvpx-vp9"),
    ("96x96", 12.0, 2.0, "libx264"),
    ("128x72", 24.0, 3.0, "mpeg4"),
)
PER_CLASS = 10  # per group: 5 groups x 10 digits x 10 = 500 videos


def log(msg: str) -> None:
    print(f"[varied {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def speaker_name(lang: str, variant: str) -> str:
    return f"{lang}-{variant}".replace("_", "-")


def synthesise(out: Path, espeak: str) -> Path:
    """Every digit in every voice and take as ``{digit}_{speaker}_{take}.wav`` (FSDD's naming) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for lang, variant in VOICES:
        for take, (speed, pitch) in enumerate(TAKES):
            for d in range(10):
                wav = out / f"{d}_{speaker_name(lang, variant)}_{take}.wav"
                if wav.is_file():
                    continue
                part = wav.with_name(f".{wav.name}.part")
                cmd = [espeak, "-v", f"{lang}+{variant}", "-s", str(speed), "-p", str(pitch), "-w", str(part), str(d)]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                os.replace(part, wav)
    return out


def build_collection(work: Path, digits: str, data_seed: int, style: str = "varied",
                     voices_per: str = "group", sound: str | None = None) -> tuple[Path, Path]:
    """The five groups built into ``work/videos/gN/...``; returns (videos folder, labels.csv).

    ``voices_per="group"``: each group has its own four voices (a source with its own speakers);
    ``"collection"``: every group draws from all 20 voices, so the voice says nothing of the group."""
    mod = load_builder()
    videos, labels = work / "videos", work / "labels.csv"
    if labels.is_file():
        return videos, labels
    espeak = shutil.which("espeak-ng")
    if not espeak:
        raise SystemExit("varied: espeak-ng not found (Debian: apt-get install espeak-ng)")
    voices = synthesise(work / "voices", espeak)
    rows: list[dict[str, Any]] = []
    per_group = len(VOICES) // len(GROUPS)
    for g, (size, fps, seconds, codec) in enumerate(GROUPS):
        own = VOICES[g * per_group:(g + 1) * per_group] if voices_per == "group" else VOICES
        speakers = [speaker_name(*v) for v in own]
        out = work / "groups" / f"g{g}"
        log(f"building group {g}: {size} {fps:g} fps {seconds:g} s {codec}, voices {', '.join(speakers)}")
        mod.build(out, fsdd=voices, digits=digits, per_class=PER_CLASS, speakers=speakers, size=size, fps=fps,
                  seconds=seconds, codec=codec, seed=data_seed + g, style=style, sound=sound,
                  workers=max(1, min(2, os.cpu_count() or 1)), overwrite=True)
        dest = videos / f"g{g}"
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out / "videos", dest)
        with open(out / "labels.csv", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                rows.append({"path": f"g{g}/{r['path']}", "label": r["label"], "speaker": r["speaker"],
                             "group": g})
    tmp = labels.with_name(".labels.csv.part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "speaker", "group"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, labels)
    return videos, labels


def run(args: argparse.Namespace) -> dict[str, Any]:
    from videolabel.assign import AssignOptions, assign
    from videolabel.assignments import load_assignments
    from videolabel.config import IngestConfig
    from videolabel.data.loader import default_loader_workers
    from videolabel.evaluate import evaluate
    from videolabel.groundtruth import read_ground_truth
    from videolabel.ingest.driver import run_ingest
    from videolabel.train.config import make_config
    from videolabel.train.loop import train

    work = Path(args.out)
    t0 = time.perf_counter()
    mod = load_builder()
    digits = args.digits or str(mod.DEFAULT_DIGITS)
    videos, labels = build_collection(work, digits, args.data_seed, args.style, args.voices, args.sound)
    t_build = time.perf_counter() - t0
    tag = "" if args.fit == "cover" else f"-{args.fit}"  # the default ingest keeps the names it always had
    cache = work / f"cache{tag}"
    t0 = time.perf_counter()
    done = work / f"cache{tag}.ingested.json"
    if not done.is_file():
        log(f"ingesting {videos} -> {cache} (default settings{', --fit ' + args.fit if tag else ''})")
        summary = run_ingest(videos, cache, IngestConfig(fit=args.fit), workers=max(1, min(2, os.cpu_count() or 1)),
                             progress="none")
        done.write_text(json.dumps(summary.to_dict(), default=str) + "\n")
    t_ingest = time.perf_counter() - t0
    gt = read_ground_truth(labels)
    per_seed = []
    for seed in args.seeds:
        run_dir = work / "runs" / f"tiny-e{args.epochs}{tag}{settings_tag(args.settings)}-s{seed}"
        t0 = time.perf_counter()
        timing = run_dir / "benchmark-train-seconds.json"  # kept beside the run: a reused run keeps its time
        # what `videolabel train` sets: the loader workers fit this machine
        cfg = make_config({}, {"preset": "tiny", "num_clusters": 10, "epochs": args.epochs, "seed": seed,
                               "progress": "none", "workers": default_loader_workers(), **args.settings})
        if not finished_run(run_dir, cfg, "varied"):
            log(f"training {run_dir.name}")
            train(cache, run_dir, cfg, resume=(run_dir / "checkpoint-last.pt").is_file(), gt=labels)
            timing.write_text(json.dumps({"train_seconds": round(time.perf_counter() - t0, 1)}) + "\n")
        t_train = json.loads(timing.read_text())["train_seconds"] if timing.is_file() else None
        entry: dict[str, Any] = {"seed": seed, "train_seconds": t_train}
        for name, opts in (("selavi", AssignOptions(workers=0, seed=seed)),
                           ("kmeans", AssignOptions(method="kmeans", workers=0, seed=seed)),
                           ("kmeans-random-init", AssignOptions(method="kmeans", random_init=True, workers=0,
                                                                seed=seed))):
            # selavi: "-hauto3", files of `--head auto` since it picks a tiny run's head by the k-means objective
            out = work / "assign" / f"{run_dir.name}-{name}{'-hauto3' if name == 'selavi' else ''}.parquet"
            if not out.is_file():
                assign(run_dir, out, options=opts)
            a = load_assignments(out)
            rep = evaluate(a, gt, key="path")
            entry[name] = {"nmi": float(rep.chosen["nmi"]), "acc": float(rep.chosen["acc"]),
                           "ari": float(rep.chosen["ari"]), "head": rep.chosen_head, "n": rep.n_matched}
            if name == "selavi":  # the other label-free rule, and every head, from the same file
                h, h_cons = label_free_heads(a)
                entry["selavi-agreement"] = {**{m: float(rep.per_head[h][m]) for m in ("nmi", "acc", "ari")},
                                             "head": h}
                entry["selavi-consensus"] = {**{m: float(rep.per_head[h_cons][m]) for m in ("nmi", "acc", "ari")},
                                             "head": h_cons}
                entry["selavi-mean"] = {m: float(rep.mean[m]) for m in ("nmi", "acc", "ari")}
                entry["per_head_nmi"] = [float(rep.per_head[h]["nmi"]) for h in a.heads]
        log(f"seed {seed}: " + ", ".join(f"{k} NMI {entry[k]['nmi']:.3f} Acc {entry[k]['acc']:.3f}"
                                        for k in ("selavi", "selavi-consensus", "selavi-agreement", "selavi-mean",
                                                  "kmeans",
                                                  "kmeans-random-init")))
        per_seed.append(entry)
    with open(labels, newline="", encoding="utf-8") as f:
        n_videos = sum(1 for _ in csv.DictReader(f))
    return {"n_videos": n_videos, "seconds": {"build": round(t_build, 1), "ingest": round(t_ingest, 1)},
            "per_seed": per_seed}


def render(doc: dict[str, Any]) -> str:
    def cell(name: str, metric: str) -> str:
        v = np.asarray([e[name][metric] for e in doc["result"]["per_seed"]]) * 100
        return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v.mean():.1f}"

    lines = [
        "# A collection unlike AV-Digits (`benchmarks/varied.py`)",
        "",
        f"- Command: `{doc['command']}`",
        f"- Date: {doc['date']}; machine: {doc['machine']}; torch {doc['torch']}",
        f"- Collection: {doc['result']['n_videos']} videos, 10 digits; espeak-ng voices in {len(VOICES)} languages "
        f"({', '.join(speaker_name(*v) for v in VOICES)}), 3 takes each; builder `--style {doc.get('style', 'varied')}{' --sound ' + doc['sound'] if doc.get('sound') else ''}`; "
        + ("each group with its own four voices" if doc.get("voices", "group") == "group"
           else "every group drawing from all the voices") + "; groups: "
        + "; ".join(f"{s} {f:g} fps {t:g} s {c}" for s, f, t, c in GROUPS),
        "- Ingest: the default settings" + (f" but `--fit {doc['fit']}`" if doc.get("fit", "cover") != "cover" else "")
        + "; training: `--preset tiny --clusters 10 "
        f"--epochs {doc['epochs']}`" + "".join(f" `--set {k}={v}`" for k, v in doc.get("settings", {}).items())
        + (", nothing else;" if not doc.get("settings") else ";") + " labels: `assign` (the chosen head, `--head auto`)",
        "- Per seed, every head's NMI: " + "; ".join(
            f"seed {e['seed']}: " + ", ".join(f"{100 * x:.1f}" for x in e["per_head_nmi"])
            for e in doc["result"]["per_seed"] if "per_head_nmi" in e),
        f"- Wall time: build {doc['result']['seconds']['build']:.0f} s, ingest "
        f"{doc['result']['seconds']['ingest']:.0f} s (0 s: reused from an earlier run), training "
        + ", ".join("not recorded (a run trained before its time was kept)" if e.get("train_seconds") is None
                    else f"{e['train_seconds']:.0f} s" for e in doc["result"]["per_seed"]) + " per seed",
        "",
        "| labels | seeds | NMI | Acc | ARI |",
        "|---|---|---:|---:|---:|",
    ]
    seeds = ",".join(str(e["seed"]) for e in doc["result"]["per_seed"])
    for name, title in (("selavi", "SeLaVi, chosen head (`--head auto`)"),
                        ("selavi-consensus", "SeLaVi, consensus head (`--head consensus`)"),
                        ("selavi-agreement", "SeLaVi, head chosen by A/V agreement (`--head agreement`)"),
                        ("selavi-mean", "SeLaVi, mean over heads"), ("kmeans", "k-means, trained encoders"),
                        ("kmeans-random-init", "k-means, random-init encoders")):
        if any(name not in e for e in doc["result"]["per_seed"]):  # results written before the row existed
            continue
        lines.append(f"| {title} | {seeds} | {cell(name, 'nmi')} | {cell(name, 'acc')} | {cell(name, 'ari')} |")
    lines += ["", "Scores in %, mean ± std over seeds (population std), on all videos of the collection (the "
              "self-labelling setting: no labels were used to train or to choose anything).", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varied.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "work" / "varied"), help="work folder")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "varied.md"),
                    help="Markdown results (a JSON beside it)")
    ap.add_argument("--digits", default=None, help="digits sheet PNG (default: the embedded sheet)")
    ap.add_argument("--epochs", type=int, default=60, help="training epochs (default 60)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the build (default 0)")
    ap.add_argument("--voices", default="group", choices=("group", "collection"),
                    help="group: each file group has its own 4 voices (default); collection: all 20 voices in every group")
    ap.add_argument("--fit", default="cover", choices=("cover", "contain"),
                    help="ingest's --fit: cover (the default: scaled to cover the stored 4:3 frame, centre-cropped) "
                    "or contain (scaled to fit inside it, on black)")
    ap.add_argument("--style", default="varied", choices=("varied", "plain", "lowres"),
                    help="the builder's look: varied (default), plain (AV-Digits' grey look, other sound and files) or "
                    "lowres (the plain look with low-resolution handwriting, 7-12 pixels a side)")
    ap.add_argument("--sound", choices=("plain", "varied"),
                    help="the builder's sound: plain (AV-Digits' levels, -80 dBFS floor) or varied (peaks -30 to -1 "
                    "dBFS over a -80 to -35 dBFS floor); default: varied with --style varied, else plain")
    ap.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                    help="a training setting added to the preset, as `videolabel train --set` (repeatable)")
    args = ap.parse_args(argv)
    args.settings = parse_settings(args.set_, "varied")
    if args.epochs < 1:
        raise SystemExit("varied: --epochs must be >= 1")
    import torch

    t0 = time.perf_counter()
    result = run(args)
    doc = {
        "command": "python benchmarks/varied.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "epochs": args.epochs,
        "style": args.style,
        "sound": args.sound or ("varied" if args.style == "varied" else "plain"),
        "voices": args.voices,
        "fit": args.fit,
        "settings": args.settings,
        "result": result,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    md = Path(args.results)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(render(doc), encoding="utf-8")
    md.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
