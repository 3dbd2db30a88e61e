"""Evaluation of assignments against ground truth: joining, per-head scores, tables.

Scoring and rendering only; the assignment file itself (columns, metadata, reading, writing) is
:mod:`videolabel.assignments`. The library API (the ``videolabel evaluate`` command is a thin shell over it)::

    from videolabel.assignments import load_assignments
    from videolabel.evaluate import evaluate, render_table
    from videolabel.groundtruth import read_ground_truth

    a = load_assignments("assignments.parquet")          # wide or long layout, metadata
    gt = read_ground_truth("labels.csv")                  # path,label
    report = evaluate(a, gt, key="path")                  # EvalReport
    report.chosen["nmi"], report.mean["nmi"], report.std["nmi"], report.inter_head_nmi
    rich.print(render_table([report]))

Scores come from :mod:`videolabel.metrics` (paper appendix A.4) and are kept as 0-1 floats in
:class:`EvalReport` and its JSON; the tables print them in percent like the paper (NMI 56.7),
except the mean entropy ⟨H⟩ (nats).

Which head is reported: the *chosen* head is label-free, the file's ``head`` metadata (what
``assign`` picked) or head 0, as the paper reports. The mean ± std over heads shows the spread.
The *oracle* head (best NMI against the ground truth) peeks at the labels and is only computed
when asked for. The inter-head NMI (mean off-diagonal NMI between the heads' labellings, paper
§4.1) says how different the heads are; it uses no ground truth and all assignment rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from videolabel.assignments import KEYS, Assignments, load_assignments
from videolabel.errors import VideolabelError
from videolabel.groundtruth import join_ground_truth, read_ground_truth

__all__ = [  # the files are read by videolabel.assignments (load_assignments); this module scores and renders
    "EvalReport",
    "evaluate",
    "evaluate_paths",
    "render_table",
    "summary_lines",
    "METRIC_KEYS",
]

#: The float metrics averaged over heads (``n_clusters`` too: the clusters a head actually uses).
METRIC_KEYS = ("nmi", "ari", "ami", "acc", "mean_entropy", "mean_max_purity", "weighted_purity", "n_clusters")


# --- evaluation ----------------------------------------------------------------------------


@dataclass
class EvalReport:
    """Scores of one assignment file against ground truth (0-1 floats; see :meth:`to_dict`)."""

    name: str
    file: str | None
    meta: dict
    key: str
    gt_key: str
    gt_label: str
    n_rows: int
    n_gt: int
    n_matched: int
    n_unmatched_assignments: int
    n_unmatched_gt: int
    unmatched_assignment_examples: list[str]
    unmatched_gt_examples: list[str]
    heads: list[int]
    chosen_head: int | None  # None: the ``cluster`` column matches no head column
    chosen_from_meta: bool
    chosen: dict
    per_head: dict[int, dict]
    mean: dict
    std: dict
    inter_head_nmi: float | None
    oracle_head: int | None = None
    oracle: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-able dict (non-finite floats become ``null``)."""
        d = {
            "name": self.name,
            "file": self.file,
            "meta": self.meta,
            "key": self.key,
            "gt_key": self.gt_key,
            "gt_label": self.gt_label,
            "scale": "0-1",
            "n_rows": self.n_rows,
            "n_gt": self.n_gt,
            "n_matched": self.n_matched,
            "n_unmatched_assignments": self.n_unmatched_assignments,
            "n_unmatched_gt": self.n_unmatched_gt,
            "unmatched_assignment_examples": self.unmatched_assignment_examples,
            "unmatched_gt_examples": self.unmatched_gt_examples,
            "heads": self.heads,
            "chosen_head": self.chosen_head,
            "chosen_from_meta": self.chosen_from_meta,
            "chosen": self.chosen,
            "mean": self.mean,
            "std": self.std,
            "per_head": [{"head": h, **s} for h, s in sorted(self.per_head.items())],
            "inter_head_nmi": self.inter_head_nmi,
        }
        if self.oracle is not None:
            d["oracle"] = {"head": self.oracle_head, **self.oracle}
        return _jsonable(d)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, Path):
        return str(x)
    return str(x)


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from videolabel.metrics import clustering_scores

    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in clustering_scores(y_true, y_pred).items()}


def evaluate(
    assignments: Assignments,
    gt: pd.DataFrame,
    *,
    key: str = "path",
    gt_key: str | None = None,
    gt_label: str = "label",
    oracle: bool = False,
    max_examples: int = 5,
) -> EvalReport:
    """Join ``assignments`` to ``gt`` on ``key`` (assignments) = ``gt_key`` (gt, default ``key``) and score.

    Rows of either side without a match are counted (and up to ``max_examples`` listed) but
    not scored; it is an error when nothing matches. Scores are per head, for the chosen head,
    mean ± std (population) over heads, and the oracle head (best NMI) only when ``oracle``.
    """
    a = assignments
    if key not in KEYS:
        raise VideolabelError(f"--key must be path or video_id, got {key!r}")
    gk = gt_key or key
    if key not in a.df.columns:
        other = [k for k in KEYS if k != key and k in a.df.columns]
        hint = f" (use --key {other[0]})" if other else ""
        raise VideolabelError(f"assignments {a.name} have no {key} column{hint}")
    missing = [c for c in (gk, gt_label) if c not in gt.columns]
    if missing:
        raise VideolabelError(
            f"ground truth lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, gt.columns))})"
        )
    if len(gt) == 0:
        raise VideolabelError("ground truth has no rows")
    dup = gt[gk].astype(str).duplicated()
    if dup.any():
        raise VideolabelError(f"ground truth has {int(dup.sum())} duplicate {gk}(s), e.g. {gt[gk][dup].iloc[0]}")
    df = a.df
    aligned, unmatched_gt = join_ground_truth(df[key], gt, key=key, label=gt_label, gt_key=gk)
    matched = aligned.notna().to_numpy()
    n_matched = int(matched.sum())
    if n_matched == 0:
        raise VideolabelError(
            f"no row of assignments {a.name} matches the ground truth: compared the assignments' {key} "
            f"(e.g. {str(df[key].iloc[0])!r}) with the ground truth's {gk} (e.g. {str(gt[gk].iloc[0])!r}); "
            f"check --key / --gt-key"
        )
    y_true = aligned[matched].to_numpy()
    per_head = {h: _scores(y_true, df[f"cluster_h{h}"].to_numpy()[matched]) for h in a.heads}
    chosen_head: int | None = a.chosen_head
    if chosen_head in per_head and np.array_equal(
        df["cluster"].to_numpy(), df[f"cluster_h{chosen_head}"].to_numpy()
    ):
        chosen = per_head[chosen_head]
    else:
        chosen_head = next(
            (h for h in a.heads if np.array_equal(df["cluster"].to_numpy(), df[f"cluster_h{h}"].to_numpy())), None
        )
        chosen = (per_head[chosen_head] if chosen_head is not None
                  else _scores(y_true, df["cluster"].to_numpy()[matched]))
    mean, std = {}, {}
    for m in METRIC_KEYS:
        vals = np.array([float(s.get(m, np.nan)) for s in per_head.values()], dtype=np.float64)
        mean[m] = float(np.mean(vals))
        std[m] = float(np.std(vals))
    inter = None
    if len(a.heads) >= 2:
        from videolabel.metrics import inter_nmi

        mat = np.asarray(inter_nmi([df[f"cluster_h{h}"].to_numpy() for h in a.heads]), dtype=np.float64)
        off = ~np.eye(mat.shape[0], dtype=bool)
        inter = float(mat[off].mean())
    oracle_head = oracle_scores = None
    if oracle:
        oracle_head = max(a.heads, key=lambda h: (per_head[h]["nmi"], -h))
        oracle_scores = per_head[oracle_head]
    n_ex = max(int(max_examples), 0)
    unmatched_rows = df[key][~matched]
    return EvalReport(
        name=a.name,
        file=str(a.path) if a.path is not None else None,
        meta=a.meta,
        key=key,
        gt_key=gk,
        gt_label=gt_label,
        n_rows=len(df),
        n_gt=len(gt),
        n_matched=n_matched,
        n_unmatched_assignments=int((~matched).sum()),
        n_unmatched_gt=len(unmatched_gt),
        unmatched_assignment_examples=[str(v) for v in unmatched_rows.iloc[:n_ex]],
        unmatched_gt_examples=[str(v) for v in unmatched_gt.iloc[:n_ex]],
        heads=list(a.heads),
        chosen_head=chosen_head,
        chosen_from_meta=a.chosen_is_meta,
        chosen=chosen,
        per_head=per_head,
        mean=mean,
        std=std,
        inter_head_nmi=inter,
        oracle_head=oracle_head,
        oracle=oracle_scores,
    )


def evaluate_paths(
    paths: Sequence[str | Path],
    gt_path: str | Path,
    *,
    key: str = "path",
    gt_key: str | None = None,
    gt_label: str = "label",
    oracle: bool = False,
    max_examples: int = 5,
) -> list[EvalReport]:
    """Read the ground truth once and evaluate every assignment file; names are made unique."""
    if key not in KEYS:
        raise VideolabelError(f"--key must be path or video_id, got {key!r}")
    loaded = [load_assignments(p) for p in paths]
    gt = read_ground_truth(gt_path, key=gt_key or key, label=gt_label)
    _unique_names(loaded)
    return [
        evaluate(a, gt, key=key, gt_key=gt_key, gt_label=gt_label, oracle=oracle, max_examples=max_examples)
        for a in loaded
    ]


def _unique_names(items: Sequence[Assignments]) -> None:
    counts: dict[str, int] = {}
    for a in items:
        counts[a.name] = counts.get(a.name, 0) + 1
    for a in items:
        if counts[a.name] > 1 and a.path is not None and a.path.stem != a.name:
            a.name = f"{a.name} ({a.path.stem})"
    seen: dict[str, int] = {}
    for a in items:  # still equal (same stems in different folders): number them
        if a.name in seen:
            seen[a.name] += 1
            a.name = f"{a.name} #{seen[a.name]}"
        else:
            seen[a.name] = 1


# --- printing ------------------------------------------------------------------------------

_PERCENT = {"nmi", "ari", "ami", "acc", "mean_max_purity", "weighted_purity"}
_COLUMNS = [  # (metric key, header)
    ("nmi", "NMI"), ("ari", "ARI"), ("acc", "Acc"), ("mean_entropy", "⟨H⟩"), ("mean_max_purity", "⟨p_max⟩"),
    ("ami", "AMI"), ("weighted_purity", "w.purity"),
]
CAPTION = "scores in % like the paper, ⟨H⟩ in nats; ± = std over heads"


def _fmt(metric: str, value: Any) -> str:
    if value is None:
        return "-"
    v = float(value)
    if not math.isfinite(v):
        return "-"
    return f"{100 * v:.1f}" if metric in _PERCENT else f"{v:.2f}"


def _fmt_pm(metric: str, mean: Any, std: Any) -> str:
    m = _fmt(metric, mean)
    if m == "-":
        return m
    s = _fmt(metric, std)
    return f"{m} ± {s}"


def _chosen_label(r: EvalReport) -> str:
    if r.chosen_head is None:
        return "chosen: cluster column"
    how = "from file" if r.chosen_from_meta else "default"
    return f"chosen: head {r.chosen_head} ({how})"


def render_table(reports: Sequence[EvalReport] | EvalReport, *, title: str | None = None):
    """A :class:`rich.table.Table`: one file in detail, or a comparison of several (paper-style)."""
    from rich.table import Table

    if isinstance(reports, EvalReport):
        reports = [reports]
    reports = list(reports)
    if not reports:
        raise VideolabelError("nothing to tabulate")
    if len(reports) == 1:
        r = reports[0]
        t = Table(title=title or f"{r.name}: {r.n_matched} videos, {len(r.heads)} head(s)", caption=CAPTION)
        t.add_column("head", no_wrap=True)
        for _, header in _COLUMNS:
            t.add_column(header, justify="right", no_wrap=True)
        t.add_column("K", justify="right")
        t.add_column("n", justify="right")
        t.add_row(_chosen_label(r), *[_fmt(m, r.chosen.get(m)) for m, _ in _COLUMNS],
                  str(r.chosen.get("n_clusters", "-")), str(r.chosen.get("n", "-")), style="bold")
        if len(r.heads) > 1:
            t.add_row(f"mean ± std over {len(r.heads)} heads",
                      *[_fmt_pm(m, r.mean.get(m), r.std.get(m)) for m, _ in _COLUMNS],
                      f"{r.mean['n_clusters']:.1f}", str(r.n_matched), end_section=True)
        for h in r.heads:
            s = r.per_head[h]
            t.add_row(f"head {h}", *[_fmt(m, s.get(m)) for m, _ in _COLUMNS],
                      str(s.get("n_clusters", "-")), str(s.get("n", "-")))
        if r.oracle is not None:
            t.add_row(f"oracle: head {r.oracle_head} (best NMI, peeks at labels)",
                      *[_fmt(m, r.oracle.get(m)) for m, _ in _COLUMNS],
                      str(r.oracle.get("n_clusters", "-")), str(r.oracle.get("n", "-")), style="dim")
        return t
    t = Table(title=title or f"comparison of {len(reports)} assignment files (chosen head)", caption=CAPTION)
    t.add_column("method", no_wrap=True)
    t.add_column("K", justify="right")
    t.add_column("heads", justify="right")
    for _, header in _COLUMNS[:5]:
        t.add_column(header, justify="right", no_wrap=True)
    t.add_column("NMI mean±std", justify="right", no_wrap=True)
    t.add_column("Acc mean±std", justify="right", no_wrap=True)
    any_oracle = any(r.oracle is not None for r in reports)
    if any_oracle:
        t.add_column("NMI oracle", justify="right")
    t.add_column("n", justify="right")
    for r in reports:
        k = r.meta.get("num_clusters", r.chosen.get("n_clusters", "-"))
        row = [r.name, str(k), str(len(r.heads)), *[_fmt(m, r.chosen.get(m)) for m, _ in _COLUMNS[:5]],
               _fmt_pm("nmi", r.mean["nmi"], r.std["nmi"]) if len(r.heads) > 1 else "-",
               _fmt_pm("acc", r.mean["acc"], r.std["acc"]) if len(r.heads) > 1 else "-"]
        if any_oracle:
            row.append(_fmt("nmi", r.oracle["nmi"]) if r.oracle is not None else "-")
        row.append(str(r.n_matched))
        t.add_row(*row)
    return t


def summary_lines(reports: Iterable[EvalReport], *, show_unmatched: int = 5) -> list[str]:
    """Plain lines: matched counts (and examples of unmatched keys), inter-head NMI, per file."""
    reports = list(reports)
    lines: list[str] = []
    for r in reports:
        prefix = f"{r.name}: " if len(reports) > 1 else ""
        lines.append(
            f"{prefix}matched {r.n_matched} of {r.n_rows} assignment rows; "
            f"{r.n_unmatched_gt} ground-truth rows unmatched"
        )
        if show_unmatched > 0 and r.n_unmatched_assignments:
            ex = ", ".join(r.unmatched_assignment_examples[:show_unmatched])
            lines.append(f"  {r.n_unmatched_assignments} assignment row(s) without ground truth ({r.key}), e.g. {ex}")
        if show_unmatched > 0 and r.n_unmatched_gt:
            ex = ", ".join(r.unmatched_gt_examples[:show_unmatched])
            lines.append(f"  {r.n_unmatched_gt} ground-truth row(s) without assignment ({r.gt_key}), e.g. {ex}")
        if r.inter_head_nmi is not None:
            lines.append(f"  inter-head NMI {100 * r.inter_head_nmi:.1f} "
                         f"(mean NMI between the {len(r.heads)} heads; 100 = identical heads)")
    return lines
