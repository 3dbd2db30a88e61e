#!/usr/bin/env python
"""AV-Digits analogues of the SeLaVi paper's tables, with a train / held-out split by speaker.

AV-Digits (``examples/avdigits/build.py``) pairs a moving handwritten digit with the same digit
spoken (FSDD), so both streams carry the label. This script builds two sets whose speakers do not
overlap (``train``: every speaker but the held-out ones; ``heldout``: by default the last two
speakers in sorted order, ``theo`` and ``yweweler`` for the embedded FSDD subset), ingests them with
one ingest config (64x64 frames, 8-frame clips at 8 fps, 2 clips per video, as ``make demo``),
trains SeLaVi runs on ``train`` only, labels both sets with the trained runs and scores them against
the digit labels (NMI, ARI, Hungarian accuracy, mean entropy ⟨H⟩ in nats and mean max purity
⟨p_max⟩, paper appendix A.4; percentages like the paper). Everything goes through the library
(``run_ingest``, ``train``, ``assign``, ``evaluate``), exactly as the CLI would.

Reproduced (analogues; AV-Digits is tiny next to VGG-Sound, so compare rows, not absolute values):

* Table 5: k-means on a randomly initialised encoder, k-means on the trained encoders' pooled
  features, SeLaVi head 0 and SeLaVi's mean over heads (all from the full run).
* Table 2: the full run labelled from audio only, frames only, and both (the head ``assign`` chooses).
* Table 3: SeLa on frames only; SeLaVi without modality alignment; with the paper's choices that the
  tiny recipe leaves out, one at a time (the Gaussian cluster-size prior, decorrelated heads, the
  heads as self-labelled instead of refitted on the final features); without modality balancing (the
  paper's plain eq. 6; balancing is ours); feature concatenation with one head (both encoders'
  features concatenated, one clustering head, ``modalities=concat``); the full recipe.
* Table A.2: the number of clusters K = 10, 8, 20, 40 (head 0).
* Fig. 2: the full run labelling frames degraded by nearest down/up-sampling by 1, 4, 8, 16
  (SeLaVi head 0 on both modalities, and the two k-means baselines); a table and a PNG.
* Time to quality: held-out NMI of runs of the full recipe trained for 3, 6, 12 and ``--epochs``
  epochs (first seed), against their training wall time; a table and a PNG.

By default Tables 5 and 2 and the time-to-quality curve are run (``--tables 5,2,tq``): they need one
full run per seed and three short runs; Table 3, Table A.2 and Fig. 2 train or label many more runs
(``--tables all``). The "full" run is the settings of ``--config`` (default
``examples/avdigits/tiny.yaml``: the tiny preset's recipe); every other row changes one setting of it. Settings are applied in this order, the
last winning: the config file, the ``--toy`` sizes, the script's defaults (``--epochs``, batch size
32, no loader workers, no progress bar), ``--set KEY=VALUE`` (every row), the row's own setting
(e.g. ``prior=uniform``), the seed. Runs that resolve to the same settings are trained once (the
full run serves Tables 5, 2, 3, A.2 at K = 10 and Fig. 2).

Every stage is resumable: the work folder (``--out``) is laid out by a hash of the settings that
produce each thing (``data/<split>-<hash>``, ``cache/<split>-<hash>``, ``runs/<row>-s<seed>-<hash>``),
a run with ``model-final.pt`` is reused, an interrupted run is resumed from ``checkpoint-last.pt``,
and an assignment Parquet file that exists is reused; so re-running the same command after an
interruption continues, and changing e.g. ``--epochs`` trains new runs beside the old ones.

CPU (2 cores, ``OMP_NUM_THREADS=1``), from the repository root::

    # toy size (seconds to minutes; numbers are noise): what the test runs
    python benchmarks/avdigits.py --toy --out /tmp/avd-toy --results /tmp/avd-toy.md
    # the default size on a full FSDD (path to your copy): 1,000 training and 500 held-out videos,
    # each training recording used once; what benchmarks/RESULTS.md reports
    python benchmarks/avdigits.py --fsdd ../shared/data/fsdd --seeds 0 1 2
    # the same size on the embedded subset: 1,000 training videos from 200 recordings (each used in 5
    # videos with other digit images), 100 held-out videos
    python benchmarks/avdigits.py --seeds 0 1 2

The embedded FSDD subset has 6 speakers with 5 takes of each digit, so 20 recordings per digit for
the 4 training speakers and 10 for the 2 held-out ones (``--heldout-per-class`` is capped by what is
available; the training split reuses recordings, ``--reuse auto``, to reach ``--per-class``). On a GPU the same command runs on CUDA (``--device``); the model size for a GPU study is
a ``--set`` / ``--config`` choice (``preset=paper`` expects 112x112 crops of larger frames and is not
a sensible choice for these 64x64 videos).

Output: ``--results`` (Markdown: header with the command, machine, versions, sizes and wall times;
the five tables; notes), ``avdigits.json`` beside it (every number, per seed and aggregated) and
``avdigits_fig2.png`` (NMI against the degradation factor, drawn with Pillow).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, label_free_heads, load_builder, parse_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "avdigits" / "tiny.yaml"
DEFAULT_OUT = ROOT / "benchmarks" / "work" / "avdigits"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "avdigits.md"

SPLITS = ("train", "heldout")
SPLIT_TITLE = {"train": "train", "heldout": "held-out"}
TABLES = ("5", "2", "3", "a2", "f2", "tq")
#: the tables run unless --tables says otherwise: each other table trains or labels many more runs
DEFAULT_TABLES = ("5", "2", "tq")
TABLE_TITLES = {
    "5": "Table 5 analogue: k-means baselines vs SeLaVi",
    "2": "Table 2 analogue: modalities used for labelling",
    "3": "Table 3 analogue: ablations of SeLaVi",
    "a2": "Table A.2 analogue: number of clusters K",
    "f2": "Fig. 2 analogue: labelling degraded frames",
    "tq": "Time to quality: held-out labels against training time",
}
TABLE_SHORT = {"5": "Table 5", "2": "Table 2", "3": "Table 3", "a2": "Table A.2", "f2": "Fig. 2", "tq": "Time to quality"}
#: The metrics in the tables: (key in the library's scores, column title, percent?)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("nmi", "NMI", True),
    ("ari", "ARI", True),
    ("acc", "Acc", True),
    ("mean_entropy", "⟨H⟩", False),
    ("mean_max_purity", "⟨p_max⟩", True),
)
DEGRADES = (1, 4, 8, 16)
#: the time-to-quality table's shorter runs (epochs; the full run at --epochs is the last point)
TQ_EPOCHS = (3, 6, 12)
K_LIST = (10, 8, 20, 40)

# the AV-Digits build and ingest geometry (the Makefile's `demo` target)
SIZE = (64, 64)
BUILD_FPS = 8.0
SECONDS = 2.0
INGEST = dict(frames=8, fps=8.0, height=64, width=64, clips_per_video=2)

#: --toy: settings small enough for a CPU test of the whole pipeline
TOY_PER_CLASS = 2
TOY_EPOCHS = 2
TOY_TQ_EPOCHS = (1,)
TOY_TRAIN: dict[str, Any] = {"n_solves": 2, "align_proposals": 200, "align_restarts": 1, "precise_bn_clips": 64}


# --- small helpers -----------------------------------------------------------------------------


def short_hash(obj: Any, n: int = 10) -> str:
    """A stable short hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:n]


def log(msg: str) -> None:
    print(f"[avdigits {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


# --- data: build and ingest --------------------------------------------------------------------


@dataclass
class Split:
    name: str
    speakers: list[str]
    data_dir: Path  # the AV-Digits build (videos/, labels.csv, build.json)
    cache_dir: Path
    n_videos: int = 0
    labels_per_class: dict[str, int] = field(default_factory=dict)

    @property
    def videos(self) -> Path:
        return self.data_dir / "videos"

    @property
    def labels(self) -> Path:
        return self.data_dir / "labels.csv"


def choose_speakers(available: list[str], train: str | None, heldout: str | None) -> tuple[list[str], list[str]]:
    """The two disjoint speaker lists (held-out default: the last two in sorted order)."""
    avail = sorted(available)

    def parse(spec: str) -> list[str]:
        names = [s.strip() for s in spec.split(",") if s.strip()]
        unknown = [s for s in names if s not in avail]
        if unknown:
            raise SystemExit(f"avdigits: unknown speaker(s) {', '.join(unknown)}; the FSDD folder has {', '.join(avail)}")
        return sorted(set(names))

    if heldout:
        held = parse(heldout)
    else:
        if len(avail) < 3:
            raise SystemExit(f"avdigits: need at least 3 speakers for a speaker split, have {', '.join(avail)}")
        held = avail[-2:]
    tr = parse(train) if train else [s for s in avail if s not in held]
    both = set(tr) & set(held)
    if both:
        raise SystemExit(f"avdigits: speaker(s) {', '.join(sorted(both))} in both splits")
    if not tr or not held:
        raise SystemExit("avdigits: each split needs at least one speaker")
    return tr, held


def reuse_needed(recordings: Sequence[Any], speakers: Sequence[str], per_class: int) -> int:
    """How many videos each recording must appear in (with other digit images) so that every digit
    reaches ``per_class`` videos from ``speakers``' recordings: 1 when there are enough recordings."""
    counts = [sum(1 for r in recordings if r.speaker in speakers and r.digit == d) for d in range(10)]
    fewest = min(counts)
    return max(1, math.ceil(per_class / fewest)) if fewest else 1


def prepare_split(name: str, speakers: list[str], args: argparse.Namespace, work: Path, *, per_class: int,
                  reuse: int = 1) -> Split:
    """Build (unless built) and ingest (unless ingested) one split."""
    from videolabel.config import IngestConfig
    from videolabel.ingest.driver import run_ingest

    mod = load_builder()
    build_args = {
        "fsdd": str(Path(args.fsdd).resolve()), "digits": str(Path(args.digits).resolve()),
        "per_class": per_class, "speakers": speakers, "size": list(SIZE), "fps": BUILD_FPS,
        "seconds": SECONDS, "seed": args.data_seed,
    }
    if reuse > 1:  # (not in the hash when 1: the sets built before --reuse existed stay valid)
        build_args["reuse"] = reuse
    data_dir = work / "data" / f"{name}-{short_hash(build_args)}"
    if not (data_dir / "build.json").is_file() or not (data_dir / "labels.csv").is_file():
        log(f"building {name} ({', '.join(speakers)}) -> {data_dir}")
        mod.build(data_dir, fsdd=args.fsdd, digits=args.digits, per_class=per_class,
                  speakers=",".join(speakers), size=SIZE, fps=BUILD_FPS, seconds=SECONDS, seed=args.data_seed,
                  workers=max(1, min(2, os.cpu_count() or 1)), overwrite=True, reuse=reuse)
    icfg = IngestConfig(**INGEST)
    cache_dir = work / "cache" / f"{name}-{short_hash([build_args, icfg.identity()])}"
    done = cache_dir.with_name(cache_dir.name + ".ingested.json")
    if not done.is_file():
        log(f"ingesting {name} -> {cache_dir}")
        summary = run_ingest(data_dir / "videos", cache_dir, icfg, workers=max(1, min(2, os.cpu_count() or 1)),
                             progress="none")
        if summary.failed_total:
            raise SystemExit(f"avdigits: {summary.failed_total} video(s) of {name} failed to ingest: {summary.failures[:3]}")
        done.write_text(json.dumps(summary.to_dict(), indent=2, default=str) + "\n")
    with open(data_dir / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    per: dict[str, int] = {}
    for r in rows:
        per[r["label"]] = per.get(r["label"], 0) + 1
    used = sorted({r["speaker"] for r in rows})
    return Split(name, used, data_dir, cache_dir, len(rows), dict(sorted(per.items())))


# --- training ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One training configuration (a row's run), before the seed."""

    key: str  # short name used in folder names
    overrides: tuple[tuple[str, Any], ...]  # the row's own settings (win over --set)


def full_overrides() -> dict[str, Any]:
    """The full run's own settings: none, i.e. the recipe of ``--config`` (the tiny preset's defaults)."""
    return {}


RUNS: dict[str, RunSpec] = {
    "full": RunSpec("full", tuple(full_overrides().items())),
    "video-only": RunSpec("video-only", tuple({**full_overrides(), "modalities": "video"}.items())),
    "no-align": RunSpec("no-align", tuple({**full_overrides(), "align": False}.items())),
    "gaussian-prior": RunSpec("gaussian-prior", tuple({**full_overrides(), "prior": "gaussian"}.items())),
    "decorrelate": RunSpec("decorrelate", tuple({**full_overrides(), "decorrelate": True}.items())),
    # the paper's labels: the heads as trained by self-labelling, no refit on the final features
    "heads-labels": RunSpec("heads-labels", tuple({**full_overrides(), "final_labels": "heads"}.items())),
    "no-balance": RunSpec("no-balance", tuple({**full_overrides(), "balance_modalities": False}.items())),
    # Table 3(b): one head on the concatenated features (nothing to align or balance)
    "concat": RunSpec("concat", tuple({**full_overrides(), "modalities": "concat", "num_heads": 1}.items())),
}


def k_run(k: int) -> RunSpec:
    return RunSpec(f"k{k}", tuple({**full_overrides(), "num_clusters": k}.items()))


class Bench:
    """The state of one benchmark invocation: splits, settings, and what was trained / assigned."""

    def __init__(self, args: argparse.Namespace, train: Split, heldout: Split) -> None:
        from videolabel.train.config import read_config_file

        self.args = args
        self.splits = {"train": train, "heldout": heldout}
        self.work = Path(args.out)
        self.file_values = read_config_file(args.config)
        self.sets = parse_settings(args.set, "avdigits")
        self.runs_trained: list[str] = []
        self.runs_reused: list[str] = []
        self.assign_done: list[str] = []
        self.assign_reused: list[str] = []
        self.run_info: dict[str, dict[str, Any]] = {}

    def config(self, spec: RunSpec, seed: int):
        from videolabel.train.config import make_config

        flags: dict[str, Any] = {}
        if self.args.toy:
            flags.update(TOY_TRAIN)
        flags.update({"epochs": self.args.epochs, "batch_size": 32, "workers": 0, "progress": "none"})
        flags.update(self.sets)
        flags.update(dict(spec.overrides))
        flags["seed"] = seed
        return make_config(self.file_values, flags)

    def run_dir(self, spec: RunSpec, seed: int) -> Path:
        from videolabel.train.config import RUNTIME_FIELDS

        cfg = self.config(spec, seed)
        key = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
        h = short_hash([key, self.splits["train"].cache_dir.name])
        return self.work / "runs" / f"{spec.key}-s{seed}-{h}"

    def ensure_run(self, spec: RunSpec, seed: int) -> Path:
        """Train (or resume, or reuse) the run of ``spec`` at ``seed``; return its folder."""
        from videolabel.train.checkpoint import FINAL, LAST
        from videolabel.train.loop import train

        cfg = self.config(spec, seed)
        out = self.run_dir(spec, seed)
        name = out.name
        if (out / FINAL).is_file():
            if name not in self.runs_reused and name not in self.runs_trained:
                self.runs_reused.append(name)
        else:
            resume = (out / LAST).is_file()
            log(f"{'resuming' if resume else 'training'} {name}")
            t0 = time.perf_counter()
            summary = train(self.splits["train"].cache_dir, out, cfg, resume=resume,
                            gt=self.splits["train"].labels, device=self.args.device)
            if summary.preempted or not (out / FINAL).is_file():
                log(f"{name} stopped at a signal; run the same command again to continue")
                raise SystemExit(130)
            self.runs_trained.append(name)
            seconds = round(time.perf_counter() - t0, 2)
            if not resume:  # a resumed run's time is not the whole run's: run_seconds() reads its log
                write_atomic(out / TRAIN_SECONDS, json.dumps({"train_seconds": seconds}) + "\n")
            self.run_info[name] = {"train_seconds": seconds, "nmi_gt_head0": summary.nmi_gt}
        info = self.run_info.setdefault(name, {})
        info.setdefault("settings", {k: v for k, v in dict(spec.overrides).items()})
        info.setdefault("seed", seed)
        if "nmi_gt_head0" not in info or info["nmi_gt_head0"] is None:
            info["nmi_gt_head0"] = last_monitor_nmi(out / "metrics.jsonl")
        return out

    def assignment(self, spec: RunSpec, seed: int, split: str, *, method: str = "selavi", modality: str = "both",
                   degrade: int = 1, random_init: bool = False) -> Path:
        """The assignment Parquet file of one run, split and labelling (made unless it exists)."""
        from videolabel.assign import AssignOptions

        run = self.ensure_run(spec, seed)
        label = f"{method}{'-rand' if random_init else ''}-{modality}-d{degrade}"
        # "hauto3": SeLaVi files of the `--head auto` default since it resolves to the lowest k-means objective
        # on runs whose heads hold k-means restarts (older files, with head 0, the A/V agreement head or the
        # consensus head in `cluster`, are not reused); k-means files have no head to choose and keep their name
        out = self.work / "assign" / run.name / f"{split}-{label}-hauto{'3' if method == 'selavi' else ''}.parquet"
        opts = AssignOptions(method=method, modality=modality, degrade=degrade, random_init=random_init, workers=0,
                             seed=seed, name=label)
        return self._assign(run, out, split, opts, f"{run.name} ({label})")

    def choice_assignment(self, spec: RunSpec, seeds: Sequence[int], split: str) -> Path:
        """One assignment from the runs of ``spec`` at every seed: `assign` keeps the run (and head) whose
        frames-only and audio-only clusters agree most (made unless it exists)."""
        from videolabel.assign import AssignOptions

        runs = [self.ensure_run(spec, s) for s in seeds]
        out = (self.work / "assign" / f"choice-{short_hash([r.name for r in runs])}"
               / f"{split}-selavi-both-d1-hauto3.parquet")
        return self._assign(runs, out, split, AssignOptions(workers=0, name="selavi-choice"),
                            f"the most agreeing of {len(runs)} runs of {spec.key}")

    def _assign(self, runs: Path | list[Path], out: Path, split: str, opts: Any, what: str) -> Path:
        """``out`` if it exists, else `assign` of ``runs`` on ``split`` written there."""
        from videolabel.assign import assign

        if out.is_file():
            self.assign_reused.append(str(out))
            return out
        log(f"assigning {split} with {what}")
        cache = None if split == "train" else self.splits[split].cache_dir
        assign(runs, out, cache=cache, options=opts, device=self.args.device)
        self.assign_done.append(str(out))
        return out

    def score(self, path: Path, split: str) -> dict[str, Any]:
        """Head-0 (chosen) scores, mean and std over heads, of one assignment file against its split."""
        from videolabel.assignments import load_assignments
        from videolabel.evaluate import evaluate
        from videolabel.groundtruth import read_ground_truth

        a = load_assignments(path)
        gt = read_ground_truth(self.splits[split].labels)
        rep = evaluate(a, gt, key="path")
        if rep.n_unmatched_assignments or rep.n_unmatched_gt:
            raise SystemExit(f"avdigits: {path} and {self.splits[split].labels} do not match one to one "
                             f"({rep.n_unmatched_assignments} assignments and {rep.n_unmatched_gt} labels unmatched)")
        keep = [m for m, _, _ in METRICS] + ["n_clusters"]
        h_agree, h_cons = label_free_heads(a)  # what --head agreement and --head consensus would choose
        return {
            "file": str(path),
            "n_videos": rep.n_matched,
            "head": rep.chosen_head,
            "chosen": {m: float(rep.chosen[m]) for m in keep},
            "head0": {m: float(rep.per_head[0][m]) for m in keep},
            "agreement_head": h_agree,
            "agreement": {m: float(rep.per_head[h_agree][m]) for m in keep},
            "consensus_head": h_cons,
            "consensus": {m: float(rep.per_head[h_cons][m]) for m in keep},
            "mean_over_heads": {m: float(rep.mean[m]) for m in keep},
            "std_over_heads": {m: float(rep.std[m]) for m in keep},
            "inter_head_nmi": rep.inter_head_nmi,
        }


TRAIN_SECONDS = "bench-train-seconds.json"


def run_seconds(run: Path) -> float | None:
    """Wall seconds that training ``run`` took: what this script timed around ``train()`` when it trained
    the run in one go, else the span of its ``metrics.jsonl`` (first to last record)."""
    try:
        return float(json.loads((run / TRAIN_SECONDS).read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    times = []
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                times.append(float(json.loads(line)["time"]))
            except (ValueError, KeyError, TypeError):
                continue
    return (max(times) - min(times)) if len(times) > 1 else None


def last_monitor_nmi(metrics: Path) -> float | None:
    """The last head-0 training-label NMI logged in a run's metrics.jsonl (monitoring only)."""
    if not metrics.is_file():
        return None
    value = None
    for line in metrics.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("nmi_gt_head0") is not None:
            value = float(rec["nmi_gt_head0"])
    return value


# --- rows and tables ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One table row: which run, how it is labelled, and which scores (head 0 or mean over heads)."""

    name: str
    run: RunSpec
    settings: str  # shown in the table
    method: str = "selavi"
    modality: str = "both"
    degrade: int = 1
    random_init: bool = False
    # "head0", "chosen" (the file's label-free head: --head auto), "agreement" (the head --head agreement
    # would choose), "consensus" (--head consensus) or "mean" over heads
    scores: str = "head0"
    choose_run: bool = False  # one assignment from all seeds' runs: `assign RUN_s0 RUN_s1 ...` picks one
    first_seed_only: bool = False  # the row is run at the first seed only (the time-to-quality runs)


def epochs_run(epochs: int) -> RunSpec:
    return RunSpec(f"e{epochs}", tuple({**full_overrides(), "epochs": epochs}.items()))


def table_rows(table: str, k_list: Sequence[int], epochs: int = 30, tq_epochs: Sequence[int] = TQ_EPOCHS) -> list[Row]:
    full = RUNS["full"]
    if table == "5":
        return [
            Row("k-means, random-init encoders", full, "kmeans, random_init, both, K=run K",
                method="kmeans", random_init=True),
            Row("k-means, trained encoders", full, "kmeans on pooled features, both, K=run K", method="kmeans"),
            Row("SeLaVi, head 0", full, "selavi, both"),
            Row("SeLaVi, mean over heads", full, "selavi, both, mean of per-head scores", scores="mean"),
            Row("SeLaVi, head chosen by `assign` (lowest k-means objective)", full,
                "selavi, both, --head auto (the default; label-free)", scores="chosen"),
            Row("SeLaVi, consensus head", full, "selavi, both, --head consensus (label-free)", scores="consensus"),
            Row("SeLaVi, head chosen by A/V agreement", full, "selavi, both, --head agreement (label-free)",
                scores="agreement"),
            Row("SeLaVi, seed and head chosen by `assign`", full,
                "selavi, both, `assign` given every seed's run, --head auto (label-free); one value",
                scores="chosen", choose_run=True),
        ]
    if table == "2":
        return [
            Row("audio", full, "modality=audio, --head auto", modality="audio", scores="chosen"),
            Row("visual", full, "modality=visual, --head auto", modality="visual", scores="chosen"),
            Row("both", full, "modality=both, --head auto", modality="both", scores="chosen"),
        ]
    if table == "3":
        return [
            Row("SeLa, visual only", RUNS["video-only"], "train modalities=video; assign modality=visual",
                modality="visual"),
            Row("Feature concatenation, one head", RUNS["concat"], "train modalities=concat, num_heads=1"),
            Row("SeLaVi w/o alignment", RUNS["no-align"], "align=false"),
            Row("SeLaVi with the Gaussian prior (paper)", RUNS["gaussian-prior"], "prior=gaussian"),
            Row("SeLaVi with decorrelated heads (paper)", RUNS["decorrelate"], "decorrelate=true"),
            Row("SeLaVi w/o modality balancing (paper's eq. 6)", RUNS["no-balance"], "balance_modalities=false"),
            Row("SeLaVi, heads as self-labelled (paper)", RUNS["heads-labels"], "final_labels=heads"),
            Row("SeLaVi (full)", full, "the tiny recipe: align, prior=uniform, balance_modalities, "
                "final_labels=features"),
        ]
    if table == "a2":
        return [Row(f"K = {k}", full if k == 10 else k_run(k), f"num_clusters={k}") for k in k_list]
    if table == "f2":
        rows = []
        for label, method, rand in (("SeLaVi, head 0", "selavi", False), ("k-means, trained", "kmeans", False),
                                    ("k-means, random-init", "kmeans", True)):
            for d in DEGRADES:
                rows.append(Row(f"{label}, degrade {d}", full, f"degrade={d}", method=method, degrade=d,
                                random_init=rand))
        return rows
    if table == "tq":
        rows = [Row(f"{e} epochs", epochs_run(e), f"epochs={e}", scores="chosen", first_seed_only=True)
                for e in tq_epochs]
        return rows + [Row(f"{epochs} epochs (the full run)", full, f"epochs={epochs}", scores="chosen",
                           first_seed_only=True)]
    raise ValueError(table)


def row_settings(bench: Bench, row: Row) -> dict[str, Any]:
    cfg = bench.config(row.run, 0).to_dict()
    d = dict(row.run.overrides)
    d.update({"num_clusters": cfg["num_clusters"], "method": row.method, "modality": row.modality,
              "degrade": row.degrade})
    if row.random_init:
        d["random_init"] = True
    if row.scores != "head0":
        d["scores"] = {"mean": "mean over heads", "chosen": "head chosen by assign --head auto",
                       "agreement": "head chosen by A/V agreement", "consensus": "consensus head"}[row.scores]
    if row.choose_run:
        d["choose_run"] = True
    return d


def aggregate(values: list[float]) -> dict[str, float | None]:
    """Mean and population std (ddof=0) over seeds."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()) if len(arr) > 1 else 0.0}


def run_table(bench: Bench, table: str) -> dict[str, Any]:
    k_list = bench.args.k_list
    rows_out = []
    tq = [e for e in (TOY_TQ_EPOCHS if bench.args.toy else TQ_EPOCHS) if e < bench.args.epochs]
    for row in table_rows(table, k_list, bench.args.epochs, tq):
        per_seed = []
        key = {"head0": "head0", "chosen": "chosen", "agreement": "agreement", "consensus": "consensus",
               "mean": "mean_over_heads"}[row.scores]
        seed_list = bench.args.seeds[:1] if row.first_seed_only else bench.args.seeds
        for seeds in ([tuple(seed_list)] if row.choose_run else [(s,) for s in seed_list]):
            entry: dict[str, Any] = {"seed": seeds[0] if len(seeds) == 1 else list(seeds),
                                     "run": "+".join(bench.run_dir(row.run, s).name for s in seeds)}
            for split in SPLITS:
                if row.choose_run:
                    path = bench.choice_assignment(row.run, seeds, split)
                else:
                    path = bench.assignment(row.run, seeds[0], split, method=row.method, modality=row.modality,
                                            degrade=row.degrade, random_init=row.random_init)
                sc = bench.score(path, split)
                sc["scores"] = sc[key]
                entry[split] = sc
            entry["train_seconds"] = sum(run_seconds(bench.ensure_run(row.run, s)) or math.nan for s in seeds)
            per_seed.append(entry)
        agg = {
            split: {m: aggregate([e[split]["scores"][m] for e in per_seed]) for m in [k for k, _, _ in METRICS]}
            for split in SPLITS
        }
        rows_out.append({
            "name": row.name,
            "settings": row_settings(bench, row),
            "settings_text": row.settings,
            "seeds": list(seed_list),
            "train_seconds": aggregate([e["train_seconds"] for e in per_seed]),
            "degrade": row.degrade,
            "method": row.method + ("-random-init" if row.random_init else ""),
            **agg,
            "per_seed": per_seed,
        })
    return {"title": TABLE_TITLES[table], "rows": rows_out, "timed": table == "tq"}


# --- output: Markdown, JSON, PNG ---------------------------------------------------------------


def fmt_cell(stat: dict[str, float | None], percent: bool, n_seeds: int) -> str:
    mean, std = stat["mean"], stat["std"]
    if mean is None or not math.isfinite(mean):
        return "n/a"
    scale, digits = (100.0, 1) if percent else (1.0, 2)
    text = f"{mean * scale:.{digits}f}"
    if n_seeds > 1 and std is not None:
        text += f" ± {std * scale:.{digits}f}"
    return text


def markdown_table(result: dict[str, Any]) -> list[str]:
    timed = bool(result.get("timed"))
    heads = ["row", "settings", "seeds"] + (["training s"] if timed else [])
    for split in SPLITS:
        heads += [f"{SPLIT_TITLE[split]} {title}" for _, title, _ in METRICS]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * 3 + "---:|" * (2 * len(METRICS) + timed)]
    for r in result["rows"]:
        cells = [r["name"], r["settings_text"], ",".join(str(s) for s in r["seeds"])]
        if timed:
            t = r["train_seconds"]["mean"]
            cells.append(f"{t:.0f}" if t is not None and math.isfinite(t) else "n/a")
        for split in SPLITS:
            cells += [fmt_cell(r[split][m], pct, len(r["per_seed"])) for m, _, pct in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_fig2(result: dict[str, Any], path: Path) -> None:
    """NMI (%) against the degradation factor, one line per method; a panel per split. Pillow only."""
    from PIL import Image, ImageDraw

    colours = {"selavi": (31, 119, 180), "kmeans": (255, 127, 14), "kmeans-random-init": (44, 160, 44)}
    names = {"selavi": "SeLaVi (head 0)", "kmeans": "k-means, trained encoders",
             "kmeans-random-init": "k-means, random-init encoders"}
    series: dict[str, dict[str, list[tuple[int, float, float]]]] = {s: {} for s in SPLITS}
    for r in result["rows"]:
        for split in SPLITS:
            st = r[split]["nmi"]
            series[split].setdefault(r["method"], []).append((r["degrade"], 100 * st["mean"], 100 * (st["std"] or 0)))
    W, H = 1100, 520
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f_title, f_axis, f_tick = _font(20), _font(16), _font(14)
    d.text((W // 2, 14), "AV-Digits: NMI vs frame degradation (Fig. 2 analogue)", fill="black", font=f_title,
           anchor="mt")
    panel_w, top, bottom = 430, 70, H - 140
    xs_log = [math.log2(x) for x in DEGRADES]
    for i, split in enumerate(SPLITS):
        x0 = 90 + i * (panel_w + 110)
        x1 = x0 + panel_w
        d.rectangle([x0, top, x1, bottom], outline="black", width=1)
        d.text(((x0 + x1) // 2, top - 8), SPLIT_TITLE[split], fill="black", font=f_axis, anchor="mb")

        def X(v: int, x0: int = x0) -> float:
            t = (math.log2(v) - xs_log[0]) / (xs_log[-1] - xs_log[0])
            return x0 + 25 + t * (panel_w - 50)

        def Y(v: float) -> float:
            return bottom - (max(0.0, min(100.0, v)) / 100.0) * (bottom - top)

        for yv in range(0, 101, 20):
            y = Y(yv)
            d.line([x0, y, x1, y], fill=(225, 225, 225))
            d.line([x0 - 5, y, x0, y], fill="black")
            d.text((x0 - 8, y), str(yv), fill="black", font=f_tick, anchor="rm")
        for xv in DEGRADES:
            x = X(xv)
            d.line([x, bottom, x, bottom + 5], fill="black")
            d.text((x, bottom + 8), str(xv), fill="black", font=f_tick, anchor="mt")
        d.text(((x0 + x1) // 2, bottom + 30), "degradation factor (log scale)", fill="black", font=f_axis, anchor="mt")
        ylab = Image.new("RGB", (200, 24), "white")
        ImageDraw.Draw(ylab).text((100, 12), "NMI (%)", fill="black", font=f_axis, anchor="mm")
        ylab = ylab.rotate(90, expand=True)
        img.paste(ylab, (x0 - 70, (top + bottom) // 2 - 100))
        for method, pts in series[split].items():
            pts = sorted(pts)
            c = colours.get(method, (0, 0, 0))
            xy = [(X(p[0]), Y(p[1])) for p in pts]
            if len(xy) > 1:
                d.line(xy, fill=c, width=3)
            for (px, py), (_, m, s) in zip(xy, pts):
                if s > 0:
                    d.line([px, Y(m - s), px, Y(m + s)], fill=c, width=1)
                    d.line([px - 4, Y(m - s), px + 4, Y(m - s)], fill=c)
                    d.line([px - 4, Y(m + s), px + 4, Y(m + s)], fill=c)
                d.ellipse([px - 4, py - 4, px + 4, py + 4], fill=c)
    n_seeds = max((len(r["seeds"]) for r in result["rows"]), default=1)
    if n_seeds > 1:
        d.text((W - 20, H - 20), f"error bars: ± std over {n_seeds} seeds", fill=(90, 90, 90), font=f_tick,
               anchor="rb")
    # legend
    lx, ly = 90, H - 60
    for method in ("selavi", "kmeans", "kmeans-random-init"):
        c = colours[method]
        d.line([lx, ly, lx + 30, ly], fill=c, width=3)
        d.ellipse([lx + 11, ly - 4, lx + 19, ly + 4], fill=c)
        d.text((lx + 38, ly), names[method], fill="black", font=f_tick, anchor="lm")
        lx += 320
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def draw_tq(result: dict[str, Any], path: Path) -> None:
    """Held-out and train NMI (%) of the chosen head against training minutes, one point per run. Pillow."""
    from PIL import Image, ImageDraw

    pts = {split: sorted((r["train_seconds"]["mean"] / 60.0, 100 * r[split]["nmi"]["mean"]) for r in result["rows"]
                         if r["train_seconds"]["mean"] is not None and math.isfinite(r["train_seconds"]["mean"]))
           for split in SPLITS}
    W, H = 760, 520
    x0, x1, top, bottom = 90, W - 40, 60, H - 120
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f_title, f_axis, f_tick = _font(20), _font(16), _font(14)
    d.text((W // 2, 14), "AV-Digits: NMI against training time (chosen head)", fill="black", font=f_title,
           anchor="mt")
    t_max = max([t for split in SPLITS for t, _ in pts[split]] + [1.0])
    step = next(s for s in (1, 2, 5, 10, 20, 30, 60) if t_max / s <= 8)
    t_top = step * math.ceil(t_max / step)

    def X(v: float) -> float:
        return x0 + (v / t_top) * (x1 - x0)

    def Y(v: float) -> float:
        return bottom - (max(0.0, min(100.0, v)) / 100.0) * (bottom - top)

    d.rectangle([x0, top, x1, bottom], outline="black", width=1)
    for yv in range(0, 101, 20):
        d.line([x0, Y(yv), x1, Y(yv)], fill=(225, 225, 225))
        d.text((x0 - 8, Y(yv)), str(yv), fill="black", font=f_tick, anchor="rm")
    for i in range(0, int(t_top // step) + 1):
        x = X(i * step)
        d.line([x, bottom, x, bottom + 5], fill="black")
        d.text((x, bottom + 8), str(i * step), fill="black", font=f_tick, anchor="mt")
    d.text(((x0 + x1) // 2, bottom + 30), "training wall time (minutes)", fill="black", font=f_axis, anchor="mt")
    ylab = Image.new("RGB", (200, 24), "white")
    ImageDraw.Draw(ylab).text((100, 12), "NMI (%)", fill="black", font=f_axis, anchor="mm")
    img.paste(ylab.rotate(90, expand=True), (x0 - 70, (top + bottom) // 2 - 100))
    colours = {"heldout": (31, 119, 180), "train": (255, 127, 14)}
    lx = x0
    for split in ("heldout", "train"):
        c = colours[split]
        xy = [(X(t), Y(v)) for t, v in pts[split]]
        if len(xy) > 1:
            d.line(xy, fill=c, width=3)
        for px, py in xy:
            d.ellipse([px - 4, py - 4, px + 4, py + 4], fill=c)
        d.line([lx, H - 50, lx + 30, H - 50], fill=c, width=3)
        d.text((lx + 38, H - 50), f"{SPLIT_TITLE[split]} videos", fill="black", font=f_tick, anchor="lm")
        lx += 260
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def finite(x: Any) -> Any:
    """``x`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def render_markdown(doc: dict[str, Any]) -> str:
    m, s = doc["machine"], doc["sizes"]
    t = doc["seconds"]
    lines = [
        "# AV-Digits: SeLaVi table analogues (`benchmarks/avdigits.py`)",
        "",
        f"- Command: `{doc['command']}`",
        f"- Date: {doc['date']}",
        f"- Machine: {m['cpu']} ({m['processor']}), {m['cores']} CPU cores, OMP_NUM_THREADS={m['omp_num_threads']}, "
        f"GPU: {m['gpu'] or 'none'}; {m['platform']}",
        f"- Versions: Python {m['python']}, torch {m['torch']}, videolabel {doc['videolabel']}",
        f"- Data: AV-Digits {SIZE[0]}x{SIZE[1]}, {SECONDS:g} s at {BUILD_FPS:g} fps; ingest {INGEST['frames']} frames at "
        f"{INGEST['fps']:g} fps, {INGEST['clips_per_video']} clips per video; FSDD `{doc['inputs']['fsdd']}`, digits "
        f"`{doc['inputs']['digits']}`; build seed {doc['inputs']['data_seed']}",
    ]
    for split in SPLITS:
        sp = s[split]
        lines.append(f"- {SPLIT_TITLE[split]}: {sp['n_videos']} videos ({sp['per_class_text']} per digit), "
                     f"{len(sp['speakers'])} speakers: {', '.join(sp['speakers'])}")
    lines += [
        f"- Training: `{doc['settings']['config']}` + {json.dumps(doc['settings']['base_overrides'])}, "
        f"seeds {', '.join(map(str, doc['settings']['seeds']))}{' (--toy)' if doc['settings']['toy'] else ''}",
        f"- Runs trained now: {len(doc['runs_trained'])}, reused: {len(doc['runs_reused'])}; "
        f"assignments made now: {doc['assignments_made']}, reused: {doc['assignments_reused']}",
        "- Wall time: data " + f"{t['data']:.1f} s, "
        + ", ".join(f"{TABLE_SHORT[k]} {v:.1f} s" for k, v in t["tables"].items()) + f"; total {t['total']:.1f} s "
        "(a run or assignment shared by several tables is counted in the first table that needs it)",
        "",
        "Scores: NMI, ARI, Acc (Hungarian), ⟨p_max⟩ in %, ⟨H⟩ in nats (lower is purer); head 0 unless a row says "
        "otherwise. With several seeds: mean ± std over seeds (population std).",
        "",
    ]
    for key, res in doc["tables"].items():
        lines += [f"## {res['title']}", ""] + markdown_table(res) + [""]
        if key == "f2" and doc.get("figure"):
            lines += [f"![NMI vs degradation]({Path(doc['figure']).name})", ""]
        if key == "tq" and doc.get("tq_figure"):
            lines += [f"![NMI vs training time]({Path(doc['tq_figure']).name})", ""]
    lines += ["## Notes", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    return "\n".join(lines)


def notes(args: argparse.Namespace, k_list: Sequence[int]) -> list[str]:
    out = [
        "Split by speaker: the runs are trained on the train split only; the held-out split (other speakers, "
        "other digit images drawn from the same sheet) is labelled by the trained heads. Train scores are on "
        "the training videos themselves (the paper's setting: self-labelling a dataset).",
        "The k-means baselines fit k-means (k = the run's K) on each split's own pooled features "
        "(`videolabel assign --method kmeans` has no way to apply centroids fitted on another cache), so the "
        "held-out k-means rows are transductive while the SeLaVi heads transfer from train.",
        "Table 5 'head chosen by `assign`' reports, per seed, the head that `assign --head auto` (the default) "
        "puts in `cluster`; on the tiny recipe's runs, whose heads hold k-means restarts of the final features, "
        "that is the head whose clusters have the lowest k-means objective in the run's final space, rebuilt on "
        "the videos being labelled (no labels). 'Consensus head' is the head `--head consensus` picks from the "
        "same file: the head whose clusters agree most with the other heads' (mean NMI to them). 'Head chosen by "
        "A/V agreement' is the head `--head agreement` picks from the same file: the "
        "head whose frames-only and audio-only clusters agree most. 'Seed and head chosen' gives `assign` every "
        "seed's run at once; it keeps the run whose chosen head's frames and sound agree most: one value, no std.",
        "Table 3: 'feature concatenation, one head' trains one clustering head on the concatenated features "
        "of both encoders (`modalities=concat`; no alignment, no per-modality heads). The full run is the "
        "tiny recipe (uniform prior, no decorrelation, final labels refitted on the trained features); the rows "
        "marked '(paper)' put back one choice of the paper each.",
        "Time to quality: runs of the full recipe at fewer epochs (first seed only; the cosine schedule is "
        "stretched to each run's length), each labelled as the product would; x is the wall time of training "
        "(label passes and the final refit included, assignment not).",
        "Table 5 'mean over heads' averages each metric over the run's heads (head std is in the JSON).",
        "Training-label NMI against the labels (`metrics.jsonl`, `nmi_gt_head0`) is monitoring only and is "
        "recorded per run in the JSON.",
    ]
    if args.toy:
        out.append(f"--toy: {args.per_class} video(s) per digit per split, {args.epochs} epoch(s), "
                   f"{json.dumps(TOY_TRAIN)}: a smoke test of the pipeline; the numbers mean nothing.")
    if tuple(k_list) != K_LIST:
        out.append(f"Table A.2 uses K = {', '.join(map(str, k_list))} instead of {', '.join(map(str, K_LIST))}.")
    return out


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="avdigits.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="work folder (default benchmarks/work/avdigits)")
    ap.add_argument("--results", default=str(DEFAULT_RESULTS), help="Markdown results file; the JSON and PNG go "
                    "beside it (default benchmarks/results/avdigits.md)")
    ap.add_argument("--fsdd", default=None, help="FSDD recordings folder (default: the embedded subset)")
    ap.add_argument("--digits", default=None, help="digits sheet PNG (default: the embedded sheet)")
    ap.add_argument("--train-speakers", default=None, help="comma list (default: all but the held-out ones)")
    ap.add_argument("--heldout-speakers", default=None,
                    help="comma list (default: the last two speakers in sorted order)")
    ap.add_argument("--per-class", type=int, default=None,
                    help="training videos per digit (default 100, i.e. 1,000 training videos; --toy 2)")
    ap.add_argument("--heldout-per-class", type=int, default=None,
                    help="held-out videos per digit, capped by the held-out recordings (default 50; --toy 2)")
    ap.add_argument("--reuse", default="auto",
                    help="training videos per recording, each with another digit image: N, or auto (default: "
                    "as many as --per-class needs from the training speakers' recordings; 1 on the full FSDD)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 30; --toy 2)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the AV-Digits builds (default 0)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="training settings file (default tiny.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="training setting for every row (repeatable); a row's own setting wins")
    ap.add_argument("--tables", default=",".join(DEFAULT_TABLES),
                    help="which tables: 5,2,3,a2,f2,tq, or all (default 5,2,tq: the others train or label "
                    "many more runs); the results files hold only these")
    ap.add_argument("--k-list", default=None, help="Table A.2's K values (default 10,8,20,40)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--toy", action="store_true", help="tiny sizes: a smoke test of the whole pipeline")
    args = ap.parse_args(argv)
    mod = load_builder()
    args.fsdd = args.fsdd or str(mod.DEFAULT_FSDD)
    args.digits = args.digits or str(mod.DEFAULT_DIGITS)
    if args.per_class is None:
        args.per_class = TOY_PER_CLASS if args.toy else 100
    if args.heldout_per_class is None:
        args.heldout_per_class = TOY_PER_CLASS if args.toy else 50
    if args.per_class < 1 or args.heldout_per_class < 1:
        raise SystemExit("avdigits: --per-class and --heldout-per-class must be >= 1")
    if args.reuse != "auto" and not (args.reuse.isdigit() and int(args.reuse) >= 1):
        raise SystemExit(f"avdigits: --reuse takes a positive whole number or auto, got {args.reuse!r}")
    if args.epochs is None:
        args.epochs = TOY_EPOCHS if args.toy else 30
    tables = [t.strip().lower() for t in args.tables.split(",") if t.strip()]
    if tables == ["all"]:
        tables = list(TABLES)
    bad = [t for t in tables if t not in TABLES]
    if bad or not tables:
        raise SystemExit(f"avdigits: --tables takes a comma list of {','.join(TABLES)}, got {args.tables!r}")
    args.tables = [t for t in TABLES if t in tables]
    args.k_list = [int(k) for k in args.k_list.split(",")] if args.k_list else list(K_LIST)
    if any(k < 2 for k in args.k_list):
        raise SystemExit("avdigits: every K must be >= 2")
    args.seeds = list(dict.fromkeys(args.seeds))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    t_start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import videolabel

    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    mod = load_builder()
    try:
        available = sorted({r.speaker for r in mod.find_recordings(args.fsdd)})
    except mod.BuildError as exc:
        raise SystemExit(f"avdigits: {exc}") from None
    train_spk, held_spk = choose_speakers(available, args.train_speakers, args.heldout_speakers)

    t0 = time.perf_counter()
    splits = {}
    recordings = mod.find_recordings(args.fsdd)
    reuse = reuse_needed(recordings, train_spk, args.per_class) if args.reuse == "auto" else int(args.reuse)
    plan = (("train", train_spk, args.per_class, reuse), ("heldout", held_spk, args.heldout_per_class, 1))
    for name, spk, per_class, split_reuse in plan:
        try:
            splits[name] = prepare_split(name, spk, args, work, per_class=per_class, reuse=split_reuse)
        except mod.BuildError as exc:
            raise SystemExit(f"avdigits: {exc}") from None
    t_data = time.perf_counter() - t0
    bench = Bench(args, splits["train"], splits["heldout"])
    bench.config(RUNS["full"], 0)  # fail early on a bad --set / --config

    results: dict[str, Any] = {}
    times: dict[str, float] = {}
    for table in args.tables:
        t0 = time.perf_counter()
        results[table] = run_table(bench, table)
        times[table] = round(time.perf_counter() - t0, 2)
        results[table]["seconds"] = times[table]
        print(f"\n## {results[table]['title']}\n")
        print("\n".join(markdown_table(results[table])), flush=True)

    results_md = Path(args.results)
    json_path = results_md.with_name(results_md.stem + ".json") if results_md.suffix == ".md" else \
        results_md.with_name(results_md.name + ".json")
    fig_path = results_md.with_name(results_md.stem + "_fig2.png")
    tq_path = results_md.with_name(results_md.stem + "_tq.png")
    if "f2" in results:
        draw_fig2(results["f2"], fig_path)
    if "tq" in results:
        draw_tq(results["tq"], tq_path)
    base = {}
    if args.toy:
        base.update(TOY_TRAIN)
    base.update({"epochs": args.epochs, "batch_size": 32, "workers": 0, **bench.sets})
    doc: dict[str, Any] = {
        "command": "python benchmarks/avdigits.py " + " ".join(shlex.quote(a) for a in argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine(),
        "videolabel": getattr(videolabel, "__version__", "?"),
        "inputs": {"fsdd": args.fsdd, "digits": args.digits, "data_seed": args.data_seed},
        "sizes": {
            name: {
                "n_videos": sp.n_videos, "speakers": sp.speakers, "per_class": sp.labels_per_class,
                "per_class_text": "-".join(sorted({str(v) for v in sp.labels_per_class.values()}, key=int)),
                "data": str(sp.data_dir), "cache": str(sp.cache_dir), "labels": str(sp.labels),
            }
            for name, sp in splits.items()
        },
        "settings": {"config": str(args.config), "base_overrides": base, "seeds": args.seeds, "toy": args.toy,
                     "train_reuse": reuse,
                     "k_list": args.k_list, "degrades": list(DEGRADES), "ingest": INGEST,
                     "row_overrides": {k: dict(v.overrides) for k, v in RUNS.items()}},
        "runs": bench.run_info,
        "runs_trained": bench.runs_trained,
        "runs_reused": bench.runs_reused,
        "assignments_made": len(bench.assign_done),
        "assignments_reused": len(set(bench.assign_reused)),
        "tables": results,
        "figure": str(fig_path) if "f2" in results else None,
        "tq_figure": str(tq_path) if "tq" in results else None,
        "notes": notes(args, args.k_list),
        "scale": "0-1 fractions in the JSON (mean_entropy in nats); percent in the Markdown",
    }
    doc["seconds"] = {"data": round(t_data, 2), "tables": times,
                      "total": round(time.perf_counter() - t_start, 2)}
    write_atomic(json_path, json.dumps(finite(doc), indent=2, allow_nan=False, default=str) + "\n")
    write_atomic(results_md, render_markdown(doc))
    print(f"\nwrote {results_md}\nwrote {json_path}" + (f"\nwrote {fig_path}" if "f2" in results else "")
          + (f"\nwrote {tq_path}" if "tq" in results else ""))
    print(f"total {doc['seconds']['total']:.1f} s (data {t_data:.1f} s; "
          + ", ".join(f"{TABLE_SHORT[k]} {v:.1f} s" for k, v in times.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
