"""From a few human labels to a label for every video: pick what to label, propagate.

The library API (``videolabel select`` and ``propagate`` are thin shells; the features come from
:mod:`videolabel.features`, the budget simulation of ``evaluate --simulate-budget`` is
:mod:`videolabel.budget`)::

    from videolabel.budget import simulate_budget
    from videolabel.features import load_features
    from videolabel.propagate import select_for_labelling, propagate_labels

    sel = select_for_labelling(a.df, per_cluster=2, uncertain=10)   # videos a human should label
    out = propagate_labels(a.df, seeds, features=load_features("f.parquet"), min_confidence=0.3)
    rows = simulate_budget(a.df, gt_labels, [1, 2, 5])               # accuracy per seeds-per-cluster

Selection (deterministic): per cluster the ``per_cluster`` videos with the highest ``confidence``
(ties: higher ``margin``, then smaller ``video_id``/``path``), reason ``representative``; then the
``uncertain`` not yet selected videos with the lowest ``margin`` overall (ties: lower confidence,
then smaller id), reason ``uncertain``.

Propagation, per video (``source`` column):

- ``seed``: a labelled video keeps its own label, confidence 1.
- ``cluster``: the video's cluster has seeds and one label holds a *strict* majority of them
  (more than half). Label = that label; confidence = (fraction of the cluster's seeds with that
  label) x the video's assignment ``confidence`` (1 when the file has none). Seeds that disagree
  with the majority keep their own label.
- ``neighbour``: the cluster has no seeds, or no strict majority (e.g. a 1-1 tie): with features,
  each such video takes the majority label of its k = min(5, #seeds) nearest seed videos by cosine
  similarity of the L2-normalised concatenated video+audio features (vote ties: higher summed
  similarity, then the smaller label). Confidence = (votes for the winner / k) x the mean of
  (1 + cos) / 2 over the neighbours that voted for the winner.
- without features, a cluster with seeds but no strict majority takes its *plurality* label (ties:
  the label whose seeds have the higher summed assignment confidence, then the smaller label),
  source ``cluster``, confidence = plurality share x the video's confidence; so one more seed per
  cluster never leaves a cluster unlabelled that had a label before.
- ``abstain``: label null, with a ``reason``: a cluster without seeds and no features for the
  fallback, or a confidence below ``min_confidence`` (the computed confidence is kept in the
  ``confidence`` column).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from videolabel.errors import VideolabelError, first_line
from videolabel.features import FeatureTable, align_features
from videolabel.fsutil import csv_text, csv_untext, write_parquet_atomic, write_user_file
from videolabel.groundtruth import norm_path

__all__ = [
    "select_for_labelling",
    "write_selection",
    "read_seeds",
    "propagate_labels",
    "write_labels",
]

SELECT_COLUMNS = ["path", "video_id", "cluster", "confidence", "reason", "label"]
SOURCES = ("seed", "cluster", "neighbour", "abstain")


#: similarities held at once by the neighbour fallback (rows x seeds), about 64 MB of float32
_SIM_BLOCK = 1 << 24


def id_column(df: pd.DataFrame) -> str:
    if "video_id" in df.columns:
        return "video_id"
    if "path" in df.columns:
        return "path"
    raise VideolabelError("assignments lack an id column: need video_id or path "
                          f"(has: {', '.join(map(str, df.columns))})")


# --- select --------------------------------------------------------------------------------------


def select_for_labelling(df: pd.DataFrame, per_cluster: int, uncertain: int = 0) -> pd.DataFrame:
    """The videos a human should label (columns path, video_id, cluster, confidence, reason, label)."""
    if per_cluster < 0 or uncertain < 0:
        raise VideolabelError("--per-cluster and --uncertain must be >= 0")
    if "cluster" not in df.columns:
        raise VideolabelError("assignments lack a cluster column")
    idc = id_column(df)
    work = pd.DataFrame({
        "path": df["path"].astype(str).to_numpy() if "path" in df.columns else "",
        "video_id": df["video_id"].astype(str).to_numpy() if "video_id" in df.columns else "",
        "cluster": df["cluster"].to_numpy(),
        "confidence": df["confidence"].astype(np.float64).to_numpy() if "confidence" in df.columns else 1.0,
        "margin": df["margin"].astype(np.float64).to_numpy() if "margin" in df.columns else np.nan,
    })
    if "margin" not in df.columns:
        work["margin"] = work["confidence"]
    work["_id"] = work[idc]
    ranked = work.sort_values(["cluster", "confidence", "margin", "_id"], ascending=[True, False, False, True],
                              kind="mergesort", na_position="last")
    rep = ranked.groupby("cluster", sort=True).head(per_cluster).copy()
    rep["reason"] = "representative"
    parts = [rep]
    if uncertain:
        rest = work.drop(index=rep.index)
        unc = rest.sort_values(["margin", "confidence", "_id"], ascending=[True, True, True],
                               kind="mergesort", na_position="first").head(uncertain).copy()
        unc["reason"] = "uncertain"
        parts.append(unc)
    out = pd.concat(parts, ignore_index=True)
    out["label"] = ""
    return out[SELECT_COLUMNS].reset_index(drop=True)


def write_selection(sel: pd.DataFrame, out: str | Path) -> Path:
    """Write a selection as CSV (the ``label`` column is left empty for the annotator)."""
    safe = sel.copy()
    for col in ("path", "video_id", "reason", "label"):  # text a spreadsheet must not run (csv_text)
        if col in safe.columns:
            safe[col] = safe[col].map(csv_text)
    return write_user_file(lambda p: safe.to_csv(p, index=False), out)


# --- seeds and features --------------------------------------------------------------------------


def read_seeds(path: str | Path) -> pd.DataFrame:
    """Read a seeds CSV (``path,label`` or ``video_id,label``; a filled-in ``select`` CSV works too).

    Rows with an empty label are dropped. Returns the id column(s) and ``label`` (strings).
    """
    p = Path(path)
    if not p.is_file():
        raise VideolabelError(f"seeds file not found: {p}")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a user-facing error
        raise VideolabelError(f"cannot read seeds {p}: {first_line(exc)}") from None
    if "label" not in df.columns or not ({"path", "video_id"} & set(df.columns)):
        raise VideolabelError(f"seeds file {p} needs columns path,label or video_id,label "
                              f"(has: {', '.join(df.columns)})")
    for col in ("path", "video_id", "label"):  # cells escaped by `select` (csv_text)
        if col in df.columns:
            df[col] = df[col].map(csv_untext)
    df = df[df["label"].str.strip() != ""].copy()
    df["label"] = df["label"].str.strip()
    if df.empty:
        raise VideolabelError(f"seeds file {p} has no labelled rows")
    return df.reset_index(drop=True)


# --- propagate -----------------------------------------------------------------------------------


def _match_seeds(df: pd.DataFrame, seeds: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row positions in ``df`` of the seeds and their labels (errors for unknown or contradicting seeds)."""
    if "label" not in seeds.columns:
        raise VideolabelError("seeds need a label column")
    seeds = seeds[seeds["label"].notna() & (seeds["label"].astype(str).str.strip() != "")]
    if seeds.empty:
        raise VideolabelError("no labelled seeds")
    key = next((c for c in ("video_id", "path") if c in seeds.columns and c in df.columns), None)
    if key is None:
        raise VideolabelError(f"seeds need a path or video_id column matching the assignments "
                              f"(seeds have: {', '.join(map(str, seeds.columns))})")
    norm = norm_path if key == "path" else str
    index = pd.Index(df[key].map(norm))
    skeys = seeds[key].map(norm)
    pos = index.get_indexer(skeys)
    bad = pos < 0
    if bad.any():
        ex = ", ".join(skeys[bad].iloc[:5])
        raise VideolabelError(f"{int(bad.sum())} of {len(seeds)} seed(s) match no video of the assignments "
                              f"by {key}, e.g. {ex}")
    labels = seeds["label"].astype(str).str.strip().to_numpy()
    first: dict[int, str] = {}
    for p, lab in zip(pos.tolist(), labels.tolist()):
        if first.setdefault(p, lab) != lab:
            raise VideolabelError(f"seed {df[key].iloc[p]} has two different labels: {first[p]!r} and {lab!r}")
    return np.array(list(first.keys()), dtype=np.int64), np.array(list(first.values()), dtype=object)


def propagate_labels(
    assignments_df: pd.DataFrame,
    seeds_df: pd.DataFrame,
    features: FeatureTable | np.ndarray | pd.DataFrame | None = None,
    min_confidence: float = 0.0,
) -> pd.DataFrame:
    """A label for every video from a few seeds (see the module docstring for the exact rules).

    Returns one row per assignment row, in order: video_id, path, cluster, label, source,
    confidence, reason (null unless abstain).
    """
    df = assignments_df.reset_index(drop=True)
    if "cluster" not in df.columns:
        raise VideolabelError("assignments lack a cluster column")
    n = len(df)
    seed_pos, seed_lab = _match_seeds(df, seeds_df)
    clusters = df["cluster"].to_numpy()
    conf_in = df["confidence"].astype(np.float64).to_numpy() if "confidence" in df.columns else np.ones(n)
    label = np.full(n, None, dtype=object)
    source = np.full(n, "abstain", dtype=object)
    conf = np.zeros(n, dtype=np.float64)
    reason = np.full(n, None, dtype=object)

    # cluster majorities
    seed_frame = pd.DataFrame({"cluster": clusters[seed_pos], "label": seed_lab, "conf": conf_in[seed_pos]})
    majority: dict[Any, tuple[str, float]] = {}
    conflicted: set = set()
    for c, g in seed_frame.groupby("cluster", sort=False):
        counts = g["label"].value_counts()
        top = counts.max()
        winners = sorted(counts.index[counts == top].tolist())
        if top * 2 > len(g):
            majority[c] = (winners[0], top / len(g))
        elif features is None:  # plurality; ties to the more confident seeds, then the smaller label
            weight = g.groupby("label")["conf"].sum()
            best = min(winners, key=lambda lab: (-float(weight[lab]), lab))
            majority[c] = (best, top / len(g))
        else:
            conflicted.add(c)
    cl = pd.Series(clusters)
    hit = cl.isin(list(majority)).to_numpy()
    label[hit] = cl[hit].map({c: m[0] for c, m in majority.items()}).to_numpy(dtype=object)
    source[hit] = "cluster"
    conf[hit] = cl[hit].map({c: m[1] for c, m in majority.items()}).to_numpy(dtype=np.float64) * conf_in[hit]
    label[seed_pos], source[seed_pos], conf[seed_pos] = seed_lab, "seed", 1.0

    need = np.flatnonzero(source == "abstain")
    if need.size:
        if features is None:
            for i in need:
                reason[i] = "cluster has no seeds; no features for the neighbour fallback"
        else:
            x = align_features(df, features, normalise=True)
            k = min(5, len(seed_pos))
            xs = x[seed_pos].T
            # [rows, S] similarities a block of rows at a time: memory stays bounded at millions of videos
            block = max(1, _SIM_BLOCK // max(1, len(seed_pos)))
            for lo in range(0, need.size, block):
                rows = need[lo : lo + block]
                sims = x[rows] @ xs  # cosine similarities
                nn = np.argsort(-sims, axis=1, kind="stable")[:, :k]
                top = np.take_along_axis(sims, nn, axis=1)
                for row, i in enumerate(rows):
                    votes: dict[str, list[float]] = {}
                    for j, sim in zip(nn[row], top[row]):
                        votes.setdefault(seed_lab[j], []).append(float(sim))
                    best = min(votes, key=lambda lab: (-len(votes[lab]), -sum(votes[lab]), lab))
                    mapped = np.clip((1.0 + np.asarray(votes[best])) / 2.0, 0.0, 1.0)
                    label[i], source[i] = best, "neighbour"
                    conf[i] = len(votes[best]) / k * float(mapped.mean())
    low = (source != "abstain") & (source != "seed") & (conf < min_confidence)
    for i in np.flatnonzero(low):
        reason[i] = f"confidence {conf[i]:.3f} < min-confidence {min_confidence:g} ({source[i]})"
        label[i], source[i] = None, "abstain"
    out = pd.DataFrame({
        "video_id": df["video_id"].astype(str).to_numpy() if "video_id" in df.columns else None,
        "path": df["path"].astype(str).to_numpy() if "path" in df.columns else None,
        "cluster": clusters,
        "label": pd.array(label, dtype="string"),
        "source": source.astype(str),
        "confidence": conf,
        "reason": pd.array(reason, dtype="string"),
    })
    return out


def write_labels(labels: pd.DataFrame, out: str | Path) -> Path:
    """Write propagated labels as Parquet (atomic replace)."""
    return write_user_file(lambda p: write_parquet_atomic(labels, p), out)
