"""Label-budget simulation: how accurate propagated labels are when a human labels b videos per cluster.

Seeds are chosen by the ``select`` rule and labelled from the ground truth, then propagated
(:mod:`videolabel.propagate`); ``videolabel evaluate --simulate-budget`` is a thin shell over
:func:`simulate_budget_paths`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from videolabel.errors import VideolabelError
from videolabel.features import FeatureTable, align_features
from videolabel.propagate import id_column, propagate_labels, select_for_labelling

__all__ = ["budget_table", "parse_budgets", "simulate_budget", "simulate_budget_paths"]


def parse_budgets(text: str) -> list[int]:
    """``"1,2,5"`` -> ``[1, 2, 5]`` (positive integers)."""
    try:
        vals = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise VideolabelError(f"--simulate-budget must be comma-separated integers like 1,2,5, not {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise VideolabelError(f"--simulate-budget needs positive integers like 1,2,5, not {text!r}")
    return vals


def simulate_budget(
    assignments_df: pd.DataFrame,
    gt_labels: pd.Series,
    budgets: Sequence[int],
    features: FeatureTable | np.ndarray | pd.DataFrame | None = None,
) -> list[dict]:
    """Accuracy of propagated labels when a human labels ``b`` videos per cluster, for each budget b.

    Seeds are chosen by the ``select`` rule among videos with a ground-truth label and labelled
    from ``gt_labels`` (aligned to the rows; NaN = no ground truth). Accuracy is over all videos
    with ground truth, abstains counting as wrong; coverage is the fraction not abstained.
    """
    df = assignments_df.reset_index(drop=True)
    gt = pd.Series(np.asarray(gt_labels, dtype=object))
    if len(gt) != len(df):
        raise VideolabelError(f"ground-truth labels ({len(gt)}) are not aligned to the assignments ({len(df)})")
    has = gt.notna().to_numpy()
    if not has.any():
        raise VideolabelError("no video has a ground-truth label")
    gt_str = gt.map(lambda v: None if pd.isna(v) else str(v)).to_numpy()
    idc = id_column(df)
    ids = df[idc].astype(str).to_numpy()
    x = align_features(df, features) if features is not None else None
    rows = []
    for b in budgets:
        sel = select_for_labelling(df[has], int(b))
        pos = pd.Index(ids).get_indexer(sel[idc].astype(str))
        seeds = pd.DataFrame({idc: ids[pos], "label": gt_str[pos]})
        out = propagate_labels(df, seeds, features=x)
        pred = out["label"].to_numpy(dtype=object)
        correct = np.array([p is not None and not pd.isna(p) and p == t for p, t in zip(pred, gt_str)])
        rows.append({
            "budget": int(b),
            "seeds": int(len(seeds)),
            "accuracy": float(correct[has].mean()),
            "coverage": float((out["source"] != "abstain").to_numpy().mean()),
            "n": int(has.sum()),
        })
    return rows


def budget_table(rows: Sequence[dict], title: str | None = None):
    """A :class:`rich.table.Table`: budget -> seeds used, accuracy, coverage (percent)."""
    from rich.table import Table

    t = Table(title=title or "label budget simulation (seeds per cluster from the ground truth)",
              caption="accuracy over all videos with ground truth, abstains count as wrong")
    for h in ("budget", "seeds", "accuracy", "coverage"):
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(str(r["budget"]), str(r["seeds"]), f"{100 * r['accuracy']:.1f}", f"{100 * r['coverage']:.1f}")
    return t


def simulate_budget_paths(paths: Sequence[str | Path], gt_path: str | Path, budgets: str | Sequence[int], *,
                          key: str = "path", gt_key: str | None = None, gt_label: str = "label") -> list[list[dict]]:
    """:func:`simulate_budget` for assignment files against a ground-truth file (no features)."""
    from videolabel.assignments import load_assignments
    from videolabel.groundtruth import join_ground_truth, read_ground_truth

    bs = parse_budgets(budgets) if isinstance(budgets, str) else [int(b) for b in budgets]
    gt = read_ground_truth(gt_path, key=gt_key or key, label=gt_label)
    out = []
    for p in paths:
        a = load_assignments(p)
        if key not in a.df.columns:
            raise VideolabelError(f"assignments {a.name} have no {key} column")
        aligned, _ = join_ground_truth(a.df[key], gt, key=key, label=gt_label, gt_key=gt_key or key)
        out.append(simulate_budget(a.df, aligned.reset_index(drop=True), bs))
    return out
