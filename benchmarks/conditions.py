#!/usr/bin/env python
"""Real-collection conditions on AV-Digits: skewed class sizes, a misspecified K, sound that is not about the picture.

AV-Digits is friendly: ten exactly balanced classes, K known, every soundtrack about its picture. This
script builds variants of it that are not, trains the product on each from scratch (``--preset tiny``,
the demo's ingest settings) with several seeds, and scores the labels of **held-out speakers** (videos
of two speakers the model never saw, built the same way) against the digits:

* ``skew``: class sizes proportional to 1/rank (the largest class 10x the smallest, a Zipf law; which
  digit gets which rank is drawn once per data seed), in training and held-out sets alike; one row per
  cluster-size prior (``--priors``, default uniform, gaussian, adaptive).
* ``k``: the balanced set with K = C/2, C, 2C, 5C (``--k-list``); NMI, Acc and purity (the share of
  videos in their cluster's majority class: what matters when a person names the clusters).
* ``mismatch``: a fraction (``--fractions``, default 0.1 and 0.3) of the videos, training and held-out
  alike, get a soundtrack that is not about their picture: half of them the soundtrack of a video of
  another digit, 30 % pink noise, 20 % silence. Scored: the ``sound_flag`` of ``assign`` (a silent
  soundtrack, or ``av_mismatch`` >= 0.5) against the corrupted videos (precision, recall, average
  precision of ``av_mismatch`` with silent videos ranked first), and the NMI of the clean held-out
  videos, of all held-out videos, and of the videos the flag keeps.

Usage (2 CPU cores; each run is one training of a few minutes)::

    python benchmarks/conditions.py --conditions skew k mismatch --seeds 0 1 2 \\
        --fsdd ../shared/data/fsdd --results benchmarks/results/conditions.md

Results: ``benchmarks/RESULTS.md``, "Real-collection conditions" (the Markdown written here is its
source, with the JSON beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, finished_run, load_builder, parse_settings, settings_tag  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SPEAKERS = ("george", "jackson", "lucas", "nicolas")
HELDOUT_SPEAKERS = ("theo", "yweweler")
#: the demo's ingest settings (Makefile): 64x64 frames, 8 frames at 8 fps, 2 clips per video
INGEST = {"height": 64, "width": 64, "frames": 8, "fps": 8.0, "clips_per_video": 2}
C = 10  # digits


def log(msg: str) -> None:
    print(f"[conditions {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_pool(out: Path, fsdd: str, speakers: Sequence[str], per_class: int, reuse: int, seed: int) -> pd.DataFrame:
    """A balanced AV-Digits build of ``speakers`` (cached in ``out``); its labels with absolute paths."""
    labels = out / "labels.csv"
    if not labels.is_file():
        mod = load_builder()
        mod.build(out, fsdd=fsdd, per_class=per_class, speakers=list(speakers), size="64x64", fps=8.0,
                  seconds=2.0, seed=seed, reuse=reuse, workers=max(1, min(2, os.cpu_count() or 1)),
                  overwrite=True)
    df = pd.read_csv(labels)
    df["file"] = [str(out / "videos" / p) for p in df["path"]]
    return df


def zipf_sizes(largest: int, rng: np.random.Generator) -> dict[int, int]:
    """Per digit, a class size proportional to 1/rank (rank 1 = ``largest``, rank 10 = largest/10)."""
    ranks = rng.permutation(C) + 1
    return {d: max(1, int(round(largest / ranks[d]))) for d in range(C)}


def subset(df: pd.DataFrame, sizes: dict[int, int], rng: np.random.Generator) -> pd.DataFrame:
    parts = []
    for d, n in sizes.items():
        rows = df[df["label"] == d]
        parts.append(rows.iloc[rng.permutation(len(rows))[:n]])
    return pd.concat(parts, ignore_index=True)


def link_videos(df: pd.DataFrame, dest: Path) -> pd.DataFrame:
    """Hard links (copies across file systems) of ``df``'s files in ``dest``; labels by relative path."""
    if dest.exists():
        shutil.rmtree(dest)
    rows = []
    for r in df.itertuples():
        rel = Path(str(r.label)) / Path(str(r.file)).name
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(str(r.file), dest / rel)
        except OSError:
            shutil.copy2(str(r.file), dest / rel)
        rows.append({"path": str(rel), "label": int(r.label), "speaker": r.speaker,
                     "corrupted": getattr(r, "corrupted", "")})
    return pd.DataFrame(rows)


def corrupt(df: pd.DataFrame, fraction: float, rng: np.random.Generator, work: Path, ffmpeg: str) -> pd.DataFrame:
    """``fraction`` of ``df``'s videos remuxed with a soundtrack not about the picture (``corrupted``: the kind)."""
    df = df.copy()
    df["corrupted"] = ""
    n = int(round(fraction * len(df)))
    chosen = rng.permutation(len(df))[:n]
    kinds = ["other"] * int(round(0.5 * n)) + ["noise"] * int(round(0.3 * n))
    kinds += ["silence"] * (n - len(kinds))
    work.mkdir(parents=True, exist_ok=True)
    for i, kind in zip(chosen, kinds):
        src = df.at[i, "file"]
        out = work / f"{kind}-{Path(src).name}"
        if kind == "other":
            others = np.flatnonzero(df["label"].to_numpy() != df.at[i, "label"])
            audio_in = ["-i", df.at[int(rng.choice(others)), "file"]]
        elif kind == "noise":
            audio_in = ["-f", "lavfi", "-i", f"anoisesrc=d=2:c=pink:a={rng.uniform(0.02, 0.3):.3f}:r=16000"]
        else:
            audio_in = ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono"]
        cmd = [ffmpeg, "-v", "error", "-y", "-i", src, *audio_in, "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
               "-c:a", "aac", "-t", "2", "-shortest", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        df.at[i, "file"] = str(out)
        df.at[i, "corrupted"] = kind
    return df


def ingest(videos: Path, cache: Path) -> None:
    from videolabel.config import IngestConfig
    from videolabel.ingest.driver import run_ingest

    done = cache.with_name(cache.name + ".ingested.json")
    if not done.is_file():
        summary = run_ingest(videos, cache, IngestConfig(**INGEST), workers=max(1, min(2, os.cpu_count() or 1)),
                             progress="none")
        done.write_text(json.dumps(summary.to_dict(), default=str) + "\n")


def train_and_label(cache: Path, heldout_cache: Path, run_dir: Path, out: Path, *, k: int, epochs: int, seed: int,
                    prior: str, settings: dict[str, str] | None = None) -> tuple[pd.DataFrame, float]:
    """Train (unless done), then ``assign`` the held-out cache; (its table, training seconds)."""
    from videolabel.assign import AssignOptions, assign
    from videolabel.data.loader import default_loader_workers
    from videolabel.train.config import make_config
    from videolabel.train.loop import train

    t0 = time.perf_counter()
    cfg = make_config({}, {"preset": "tiny", "num_clusters": k, "epochs": epochs, "seed": seed, "prior": prior,
                           "progress": "none", "workers": default_loader_workers(), **(settings or {})})
    if not finished_run(run_dir, cfg, "conditions"):
        log(f"training {run_dir.name}")
        train(cache, run_dir, cfg, resume=(run_dir / "checkpoint-last.pt").is_file())
    seconds = time.perf_counter() - t0
    if not out.is_file():
        assign(run_dir, out, cache=heldout_cache, options=AssignOptions(workers=0, seed=seed))
    return pd.read_parquet(out), seconds


def scores(table: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    from videolabel.metrics import clustering_scores

    m = table.merge(labels, on="path", how="inner")
    s = clustering_scores(m["label"].to_numpy(), m["cluster"].to_numpy())
    return {"nmi": s["nmi"], "acc": s["acc"], "purity": s["weighted_purity"], "n": s["n"],
            "clusters": s["n_clusters"]}


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve of ranking by ``score`` (descending), as the mean precision at
    each positive."""
    order = np.argsort(-score, kind="stable")
    hits = positive[order].astype(float)
    if hits.sum() == 0:
        return float("nan")
    prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((prec * hits).sum() / hits.sum())


def mismatch_scores(table: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    from videolabel.cluster.select import MISMATCH_FLAG
    from videolabel.metrics import clustering_scores

    m = table.merge(labels, on="path", how="inner")
    bad = (m["corrupted"].fillna("") != "").to_numpy()
    score = m["av_mismatch"].fillna(1.0).to_numpy()  # no audio track: nothing agrees with the picture
    if "sound_flag" in m.columns:  # assign's review flag: silent, or av_mismatch >= MISMATCH_FLAG
        silent = m["silent"].fillna(False).to_numpy(bool)
        score = score + silent  # ranked first: a silent soundtrack is surely not about the picture
        flag = m["sound_flag"].fillna(True).to_numpy(bool)
    else:  # files from before the flag (av_mismatch alone)
        flag = score >= MISMATCH_FLAG
    tp = float((flag & bad).sum())
    out: dict[str, float] = {
        "precision": tp / max(1.0, float(flag.sum())), "recall": tp / max(1.0, float(bad.sum())),
        "ap": average_precision(score, bad), "base_rate": float(bad.mean()), "flagged": float(flag.mean()),
    }
    y, c = m["label"].to_numpy(), m["cluster"].to_numpy()
    out["nmi_all"] = clustering_scores(y, c)["nmi"]
    out["nmi_clean"] = clustering_scores(y[~bad], c[~bad])["nmi"]
    out["nmi_kept"] = clustering_scores(y[~flag], c[~flag])["nmi"] if (~flag).sum() > 1 else float("nan")
    for kind in ("other", "noise", "silence"):
        sel = (m["corrupted"] == kind).to_numpy()
        out[f"recall_{kind}"] = float(flag[sel].mean()) if sel.any() else float("nan")
    return out


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Pools, then the variants' video folders and caches; returns their paths and labels."""
    work = Path(args.out)
    mod = load_builder()
    fsdd = args.fsdd or str(mod.DEFAULT_FSDD)
    per_class, reuse, largest = args.per_class, args.reuse, args.skew_largest
    pool = max(per_class, largest)
    train_all = build_pool(work / "pool-train", fsdd, TRAIN_SPEAKERS, pool, reuse, args.data_seed)
    held_all = build_pool(work / "pool-heldout", fsdd, HELDOUT_SPEAKERS, pool // 2, reuse, args.data_seed + 1)
    pick = np.random.default_rng(3000 + args.data_seed)
    train_pool = subset(train_all, {d: per_class for d in range(C)}, pick)  # the balanced sets
    held_pool = subset(held_all, {d: per_class // 2 for d in range(C)}, pick)
    ffmpeg = mod._find_ffmpeg(None)
    variants: dict[str, Any] = {}

    def make(name: str, tr: pd.DataFrame, ho: pd.DataFrame) -> None:
        base = work / name
        labels = base / "labels.csv"
        if labels.is_file():
            lt, lh = pd.read_csv(base / "labels-train.csv", keep_default_na=False), pd.read_csv(labels,
                                                                                               keep_default_na=False)
        else:
            lt, lh = link_videos(tr, base / "videos"), link_videos(ho, base / "heldout-videos")
            lt.to_csv(base / "labels-train.csv", index=False)
            lh.to_csv(labels, index=False)
        log(f"{name}: {len(lt)} training videos, {len(lh)} held-out")
        ingest(base / "videos", base / "cache")
        ingest(base / "heldout-videos", base / "heldout-cache")
        variants[name] = {"base": base, "train": lt, "heldout": lh}

    conds = set(args.conditions)
    if conds & {"k", "mismatch"}:
        make("balanced", train_pool, held_pool)
    if "skew" in conds:
        rng = np.random.default_rng(1000 + args.data_seed)
        sizes = zipf_sizes(largest, rng)
        ho_sizes = {d: max(1, n // 2) for d, n in sizes.items()}
        make("skew", subset(train_all, sizes, rng), subset(held_all, ho_sizes, rng))
    if "mismatch" in conds:
        for f in args.fractions:
            rng = np.random.default_rng(2000 + int(round(100 * f)) + args.data_seed)
            name = f"mismatch{int(round(100 * f))}"
            if not (work / name / "labels.csv").is_file():
                tr = corrupt(train_pool, f, rng, work / name / "remux-train", ffmpeg)
                ho = corrupt(held_pool, f, rng, work / name / "remux-heldout", ffmpeg)
            else:
                tr = ho = train_pool  # already linked; make() reads the labels back
            make(name, tr, ho)
    return variants


def run(args: argparse.Namespace, save: Any = None) -> dict[str, Any]:
    """Every run of ``args.conditions``; ``save(result)`` after each (the tables so far)."""
    t0 = time.perf_counter()
    variants = prepare(args)
    t_prep = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    result = {"prepare_seconds": round(t_prep, 1), "rows": rows}

    def one(variant: str, k: int, prior: str, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
        v = variants[variant]
        name = f"{variant}-k{k}-{Path(prior).stem}-e{args.epochs}{settings_tag(args.settings)}-s{seed}"
        table, secs = train_and_label(v["base"] / "cache", v["base"] / "heldout-cache", v["base"] / "runs" / name,
                                      v["base"] / "assign" / f"{name}.parquet", k=k, epochs=args.epochs, seed=seed,
                                      prior=prior, settings=args.settings)
        row: dict[str, Any] = {"variant": variant, "k": k, "prior": prior, "seed": seed,
                               "train_seconds": round(secs, 1), **scores(table, v["heldout"])}
        log(f"{name}: NMI {row['nmi']:.3f} Acc {row['acc']:.3f} purity {row['purity']:.3f}")
        if args.auto_k and variant in ("balanced", "skew") and prior == "uniform":
            row.update(auto_k(v, name, seed))
        return table, row

    def auto_k(v: dict[str, Any], name: str, seed: int) -> dict[str, Any]:
        """``assign --method kmeans --k auto`` and ``--k 10`` on the held-out videos with this run."""
        from videolabel.assign import AssignOptions, assign
        from videolabel.assignments import load_assignments

        out: dict[str, Any] = {}
        for tag, k in (("auto", "auto"), ("km10", C)):
            path = v["base"] / "assign" / f"{name}-kmeans-{tag}.parquet"
            if not path.is_file():
                assign(v["base"] / "runs" / name, path, cache=v["base"] / "heldout-cache",
                       options=AssignOptions(method="kmeans", k=k, workers=0, seed=seed))
            sc = scores(pd.read_parquet(path), v["heldout"])
            out.update({f"{tag}_nmi": sc["nmi"], f"{tag}_acc": sc["acc"], f"{tag}_purity": sc["purity"]})
            if tag == "auto":
                out["auto_k"] = int(load_assignments(path).meta["num_clusters"])
        log(f"{name}: k auto {out['auto_k']} NMI {out['auto_nmi']:.3f} (k-means at K = {C}: {out['km10_nmi']:.3f})")
        return out

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        if save is not None:
            save(result)

    for seed in args.seeds if "mismatch" in args.conditions else ():
        for f in [0.0, *args.fractions]:
            variant = "balanced" if f == 0 else f"mismatch{int(round(100 * f))}"
            table, row = one(variant, C, "uniform", seed)
            row.update(fraction=f, **mismatch_scores(table, variants[variant]["heldout"]))
            add({"condition": "mismatch", **row})
    for seed in args.seeds if "skew" in args.conditions else ():
        for prior in args.priors:
            add({"condition": "skew", **one("skew", C, prior, seed)[1]})
    for seed in args.seeds if "k" in args.conditions else ():
        for k in args.k_list:
            add({"condition": "k", **one("balanced", k, "uniform", seed)[1]})
    return result


def _cell(vals: Sequence[float]) -> str:
    v = np.asarray(vals, dtype=float) * 100
    return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def render(doc: dict[str, Any]) -> str:
    rows = pd.DataFrame(doc["result"]["rows"])
    lines = [
        "# Real-collection conditions on AV-Digits (`benchmarks/conditions.py`)",
        "",
        f"- Command: `{doc['command']}`",
        f"- Date: {doc['date']}; machine: {doc['machine']}; torch {doc['torch']}; wall time {doc['seconds']:.0f} s "
        f"(of which building and ingesting {doc['result']['prepare_seconds']:.0f} s)",
        f"- Training: speakers {', '.join(TRAIN_SPEAKERS)}, `--preset tiny --epochs {doc['epochs']}` and the demo's "
        f"ingest settings; scored on held-out speakers {', '.join(HELDOUT_SPEAKERS)} (built the same way), chosen "
        "head. Scores in %, mean ± std (population) over the seeds.",
        "",
    ]
    if rows.empty:
        return "\n".join(lines)
    for cond, title, keys in (("skew", "Skewed class sizes (1/rank, largest 10x smallest), K = 10", ["prior"]),
                              ("k", "K misspecified (balanced set, C = 10, uniform prior)", ["k"]),
                              ("mismatch", "Sound not about the picture (K = 10, uniform prior)", ["fraction"])):
        sub = rows[rows["condition"] == cond]
        if sub.empty:
            continue
        lines += [f"## {title}", ""]
        if cond == "mismatch":
            lines += ["| corrupted | seeds | NMI clean | NMI all | NMI of the unflagged | flagged | precision | "
                      "recall (other / noise / silence) | average precision |", "|---|---|---:|---:|---:|---:|---:|"
                      "---:|---:|"]
        else:
            lines += [f"| {'K' if cond == 'k' else keys[0]} | seeds | NMI | Acc | purity | clusters used | train s |",
                      "|---|---|---:|---:|---:|---:|---:|"]
        for key, g in sub.groupby(keys[0], sort=False):
            seeds = ",".join(str(s) for s in g["seed"])
            if cond == "mismatch":
                per = " / ".join(_cell(g[f"recall_{k}"]) if g[f"recall_{k}"].notna().all() else "-"
                                 for k in ("other", "noise", "silence"))
                lines.append(f"| {100 * float(key):.0f} % | {seeds} | {_cell(g['nmi_clean'])} | {_cell(g['nmi_all'])} "
                             f"| {_cell(g['nmi_kept'])} | {_cell(g['flagged'])} | "
                             + (f"{_cell(g['precision'])} | {_cell(g['recall'])} ({per}) | {_cell(g['ap'])} |"
                                if float(key) > 0 else "- | - | - |"))
            else:
                lines.append(f"| {key} | {seeds} | {_cell(g['nmi'])} | {_cell(g['acc'])} | {_cell(g['purity'])} | "
                             f"{g['clusters'].mean():.1f} | {g['train_seconds'].mean():.0f} |")
        lines.append("")
    if "auto_k" in rows.columns and rows["auto_k"].notna().any():
        sub = rows[rows["auto_k"].notna()]
        lines += ["## K chosen without labels (`assign --method kmeans --k auto`, held-out videos, C = 10)", "",
                  "| set | trained with K | seeds | chosen K | NMI at the chosen K | k-means NMI at K = 10 | "
                  "chosen head NMI (trained K) | purity at the chosen K |", "|---|---|---|---|---:|---:|---:|---:|"]
        for (variant, k), g in sub.groupby(["variant", "k"], sort=False):
            ks = ", ".join(str(int(x)) for x in g["auto_k"])
            lines.append(f"| {variant} | {k} | {','.join(str(x) for x in g['seed'])} | {ks} | {_cell(g['auto_nmi'])} | "
                         f"{_cell(g['km10_nmi'])} | {_cell(g['nmi'])} | {_cell(g['auto_purity'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="conditions.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "work" / "conditions"), help="work folder")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "conditions.md"),
                    help="Markdown results (the JSON goes beside it)")
    ap.add_argument("--conditions", nargs="+", default=["skew", "k", "mismatch"], choices=("skew", "k", "mismatch"))
    ap.add_argument("--fsdd", default=None, help="FSDD recordings folder (default: the embedded subset)")
    ap.add_argument("--per-class", type=int, default=40, help="training videos per digit of the balanced pool")
    ap.add_argument("--skew-largest", type=int, default=100, help="skew: training videos of the largest class")
    ap.add_argument("--reuse", type=int, default=2, help="videos per recording (the builder's --reuse)")
    ap.add_argument("--epochs", type=int, default=16, help="training epochs (default 16)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--priors", nargs="+", default=["uniform", "gaussian", "adaptive"])
    ap.add_argument("--k-list", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--no-auto-k", dest="auto_k", action="store_false",
                    help="skip `assign --method kmeans --k auto` (and --k 10) on the balanced and skewed runs")
    ap.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                    help="a training setting added to the preset, as `videolabel train --set` (repeatable)")
    args = ap.parse_args(argv)
    args.settings = parse_settings(args.set_, "conditions")
    t0 = time.perf_counter()
    import torch

    res = Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/conditions.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def save(result: dict[str, Any]) -> str:
        doc = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": cpu_model(),
               "torch": torch.__version__, "epochs": args.epochs, "seconds": time.perf_counter() - t0,
               "result": result}
        res.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
        text = render(doc)
        res.write_text(text + "\n")
        return text

    print(save(run(args, save)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
