"""Benchmark: a trained run's end of training done again with other settings of its final labels, side by side.

A ``tiny`` run ends with k-means on its final features, distilled into the heads (``final_labels: features``,
:meth:`videolabel.train.loop.Trainer.finish`). Settings that act only in that last step (``stream_weights``,
``final_space``, ``distill_epochs``) do not change the training before it, so they can be compared on runs
already trained: for each run and each setting, the state the run's training ended with (``checkpoint-last.pt``,
saved before ``finish``) is restored into a new run folder trained with the setting, and ``finish`` runs there as
it does at the end of a fresh run (BatchNorm statistics, final k-means labels, distillation from the solves'
heads). So every arm's model and labels are **exactly those of a fresh run** with that setting: the arm with the
run's own settings reproduces the run's ``labels.parquet`` and ``model-final.pt`` bit for bit, which the table
shows. Each arm is then labelled by ``assign`` with its defaults on the run's cache and, if given, on a held-out
cache.

Usage:
    python benchmarks/final_labels.py --run RUN --labels LABELS.csv [--run RUN --labels ...] \\
        [--heldout-cache CACHE --heldout-labels LABELS.csv] --set stream_weights=equal --set stream_weights=auto \\
        --out WORK [--results RESULTS.md]

Scores: NMI and accuracy of ``assign``'s chosen head (``--head auto``), the mean NMI over the heads, and the mean NMI
of the run's final k-means labels, in %.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, parse_settings  # noqa: E402

from videolabel.assign import AssignOptions, assign  # noqa: E402
from videolabel.errors import VideolabelError  # noqa: E402
from videolabel.inference import run_cache  # noqa: E402
from videolabel.metrics import hungarian_accuracy, nmi  # noqa: E402
from videolabel.train.checkpoint import FINAL, LAST, RESUME_KEYS, load_checkpoint  # noqa: E402
from videolabel.train.config import as_saved, diff_configs, make_config  # noqa: E402
from videolabel.train.loop import Trainer  # noqa: E402

#: the table's word for :func:`finish_again`'s check (``None``: an arm with other settings than the run's)
REPRODUCED = {True: "yes", False: "**no**", None: "-"}

#: settings that act only in :meth:`Trainer.finish`: an arm may change these and nothing else
FINISH_SETTINGS = frozenset({"stream_weights", "final_space", "distill_epochs"})


def finish_again(run_dir: Path, out: Path, settings: dict[str, str]) -> dict[str, Any]:
    """``run_dir``'s end of training done again under ``settings`` in the new run folder ``out``, exactly as a fresh
    run with them ends; the ``distill`` row it logs, and whether it reproduced the run's own labels and model."""
    if unknown := sorted(set(settings) - FINISH_SETTINGS):
        raise VideolabelError(f"{', '.join(unknown)} act(s) before the end of training: only "
                              f"{', '.join(sorted(FINISH_SETTINGS))} can be compared on a trained run")
    state = load_checkpoint(run_dir / LAST, need=RESUME_KEYS)
    if int(state["step"]) != int(state["total_steps"]):
        raise VideolabelError(f"{run_dir / LAST}: step {state['step']} of {state['total_steps']}: the run's training "
                              "has not ended")
    cache = run_cache(run_dir)
    if cache is None:
        raise VideolabelError(f"{run_dir}: no run.json naming its cache")
    # a setting added since the run was trained: the default of then, as --resume reads it
    cfg = make_config(as_saved(state["train_config"]), {**settings, "progress": "none", "workers": "0"})
    trainer = Trainer(cache, out, cfg, device="cpu")
    try:
        trainer.restore(state)
        trainer.finish()
    finally:
        trainer.close()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    row = next(r for r in reversed(rows) if r.get("event") == "distill")
    if not diff_configs(state["train_config"], cfg):  # the run's own settings: it must come out the same
        row["reproduced"] = same_result(run_dir, out)
    return row


def same_result(a: Path, b: Path) -> bool:
    """Whether two run folders hold the same final labels and the same final model weights, bit for bit."""
    la, lb = pd.read_parquet(a / "labels.parquet"), pd.read_parquet(b / "labels.parquet")
    if not la.equals(lb):
        return False
    wa, wb = load_checkpoint(a / FINAL)["model"], load_checkpoint(b / FINAL)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def scores(assigned: Path, labels: Path) -> dict[str, float]:
    """NMI and accuracy of the chosen head and the mean NMI over the heads, against ``labels`` (``path``,
    ``label``), in %."""
    t = pd.read_parquet(assigned)
    gt = pd.read_csv(labels).set_index("path")["label"]
    y = t["path"].map(gt)
    ok = y.notna().to_numpy()
    truth = y[ok].astype(int).to_numpy()
    heads = [c for c in t.columns if c.startswith("cluster_h")]
    return {"nmi": 100 * nmi(truth, t["cluster"][ok]), "acc": 100 * hungarian_accuracy(truth, t["cluster"][ok]),
            "heads_nmi": 100 * float(np.mean([nmi(truth, t[c][ok]) for c in heads])), "videos": int(ok.sum())}


def label_scores(run_labels: Path, labels: Path) -> float:
    """The mean NMI (%) over the heads of the run's final k-means labels (``labels.parquet``: what the heads were
    distilled to; exactly a fresh run's, unlike the distilled heads)."""
    t = pd.read_parquet(run_labels)
    y = t["path"].map(pd.read_csv(labels).set_index("path")["label"])
    ok = y.notna().to_numpy()
    heads = [c for c in t.columns if c.startswith("label_h")]
    return 100 * float(np.mean([nmi(y[ok].astype(int).to_numpy(), t[c][ok]) for c in heads]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", type=Path, required=True, help="a trained run folder (repeatable)")
    ap.add_argument("--labels", action="append", type=Path, required=True,
                    help="ground truth of each --run's cache (path,label), in the same order")
    ap.add_argument("--heldout-cache", action="append", type=Path, default=[],
                    help="a held-out cache for each --run (all or none)")
    ap.add_argument("--heldout-labels", action="append", type=Path, default=[])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one arm per --set (e.g. stream_weights=equal); a comma joins several settings in one arm")
    ap.add_argument("--out", type=Path, required=True, help="work folder for the new run folders")
    ap.add_argument("--results", type=Path, default=None, help="Markdown results file (default: print only)")
    args = ap.parse_args()
    if len(args.labels) != len(args.run) or len(args.heldout_cache) not in (0, len(args.run)) \
            or len(args.heldout_labels) != len(args.heldout_cache):
        sys.exit("final_labels: give one --labels per --run, and a --heldout-cache and --heldout-labels for every "
                 "--run or for none")
    arms = [parse_settings(item.split(","), "final_labels") for item in args.set] or [{}]
    rows, t_start = [], time.time()
    for i, run_dir in enumerate(args.run):
        for arm in arms:
            name = f"{run_dir.name}-" + ("-".join(f"{k}={v}" for k, v in arm.items()) or "as-trained")
            out = args.out / name
            t0 = time.perf_counter()
            distill = finish_again(run_dir, out, arm)
            row: dict[str, Any] = {"run": str(run_dir), "arm": arm, "seconds": round(time.perf_counter() - t0, 1),
                                   "stream_weights": distill.get("stream_weights"),
                                   "stream_seen": distill.get("stream_seen"),
                                   "reproduced": distill.get("reproduced")}
            assign(out, out / "assign.parquet", options=AssignOptions(workers=0))
            row["train"] = scores(out / "assign.parquet", args.labels[i])
            row["train"]["kmeans_nmi"] = label_scores(out / "labels.parquet", args.labels[i])
            if args.heldout_cache:
                assign(out, out / "assign-heldout.parquet", cache=args.heldout_cache[i],
                       options=AssignOptions(workers=0))
                row["heldout"] = scores(out / "assign-heldout.parquet", args.heldout_labels[i])
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        "# Final labels made again on trained runs (`benchmarks/final_labels.py`)",
        "",
        f"- Command: `python {' '.join(sys.argv)}`",
        f"- Date: {_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %z}; machine: {cpu_model()} "
        f"({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"{time.time() - t_start:.0f} s in all",
        "- Scores in %: `assign`'s chosen head (`--head auto`) NMI / accuracy, and the mean NMI over the heads; on "
        "the run's own videos (the self-labelling setting) and, where given, on a held-out cache",
        "",
        "- Reproduced: for the arm with the run's own settings, whether its labels and final model are the run's, bit "
        "for bit",
        "",
        "| run | arm | reproduced | weights (frames, sound) | seen (q_v, q_a) | own videos: chosen NMI / Acc "
        "| heads NMI | k-means labels NMI | held-out: chosen NMI / Acc | heads NMI |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        held = r.get("heldout")
        setting = ", ".join(f"{k}={v}" for k, v in r["arm"].items()) or "as trained"
        lines.append(
            f"| {Path(r['run']).name} | {setting} | {REPRODUCED[r['reproduced']]} | {r['stream_weights'] or '-'} "
            f"| {r['stream_seen'] or '-'} "
            f"| {r['train']['nmi']:.1f} / {r['train']['acc']:.1f} | {r['train']['heads_nmi']:.1f} "
            f"| {r['train']['kmeans_nmi']:.1f} | "
            + (f"{held['nmi']:.1f} / {held['acc']:.1f} | {held['heads_nmi']:.1f} |" if held else "- | - |"))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(text)
        args.results.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
