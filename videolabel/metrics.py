"""Clustering metrics against ground truth (paper section 4 "Evaluation" and appendix A.4, eq. 8-11).

Everything is computed from one C x K contingency matrix (C ground-truth classes, K non-empty clusters),
built with ``pandas.factorize`` + ``np.bincount``: labels may be of any hashable type (ints, strings,
mixed), and N = 1M samples take well under a second (the expected mutual information of AMI dominates).

Conventions (chosen to match scikit-learn, which the tests check against):
- NMI (eq. 8) = MI / (0.5 H(U) + 0.5 H(V)), sklearn's ``average_method="arithmetic"``; 1.0 when both
  labellings have a single label, 0.0 when MI = 0 otherwise.
- ARI (eq. 9) = sklearn's ``adjusted_rand_score`` (1.0 for identical partitions).
- AMI = sklearn's ``adjusted_mutual_info_score`` (arithmetic normaliser); 1.0 when both have one label,
  0.0 when exactly one of them has a single label.
- Logarithms are natural (nats). The paper does not name the base, but its figures imply nats: with
  Kinetics-400 (K = C = 400), NMI 24.9% gives H(U|V) = (1 - 0.249) ln 400 = 4.5 against the published
  <H> = 4.4, whereas bits would give 6.5. (Its "chance" value -log 1/K assumes K = C; chance is log C.)
- <H> (eq. 10) and <p_max> (eq. 11) average over the K non-empty clusters (an empty cluster has no
  ground-truth distribution); ``weighted_purity`` is the sample-weighted (many-to-one) accuracy.
- ``acc`` is the Hungarian (one-to-one) accuracy; with K != C the unmatched clusters/classes are errors.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln, xlogy

__all__ = [
    "contingency_matrix",
    "nmi",
    "ari",
    "ami",
    "hungarian_accuracy",
    "mean_entropy",
    "mean_max_purity",
    "weighted_purity",
    "clustering_scores",
    "inter_nmi",
]

_EPS = float(np.finfo(np.float64).eps)
_MAX_CELLS = 1 << 28  # dense contingency limit (2 GiB of int64)


# ------------------------------------------------------------------------------------------ labels


def _as_1d(y: Any) -> np.ndarray:
    """Labels as a 1-D numpy array without merging distinct values of different types (1 vs "1")."""
    if hasattr(y, "detach") and hasattr(y, "cpu"):  # torch tensor
        y = y.detach().cpu().numpy()
    elif isinstance(y, (pd.Series, pd.Index)):
        y = y.to_numpy()
    if isinstance(y, np.ndarray):
        arr = y
    else:
        seq = list(y)
        arr = np.asarray(seq) if seq else np.asarray(seq, dtype=np.int64)
        if arr.ndim != 1 or (arr.dtype.kind in "USO" and not all(isinstance(v, str) for v in seq)):
            arr = np.fromiter(seq, dtype=object, count=len(seq))
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    return arr


def _factorize(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes 0..M-1 (int64) and the M distinct labels (sorted when they are comparable)."""
    arr = _as_1d(y)
    try:
        codes, uniques = pd.factorize(arr, sort=True)
    except TypeError:  # mixed, non-comparable types: first-appearance order
        codes, uniques = pd.factorize(arr, sort=False)
    if codes.size and codes.min() < 0:
        raise ValueError("labels contain missing values (None/NaN)")
    return codes.astype(np.int64, copy=False), np.asarray(uniques)


def _table_from_codes(t: np.ndarray, p: np.ndarray, c: int, k: int) -> np.ndarray:
    if c * k > _MAX_CELLS:
        raise ValueError(f"{c} classes x {k} clusters is too large for a dense contingency matrix")
    return np.bincount(t * k + p, minlength=c * k).astype(np.int64, copy=False).reshape(c, k)


def contingency_matrix(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The contingency matrix ``n[c, k]`` = number of samples of class c in cluster k.

    Args:
        y_true: N ground-truth labels (any hashable values; numpy, list, pandas, torch).
        y_pred: N cluster labels.

    Returns:
        ``(table, classes, clusters)``: int64 [C, K], and the class / cluster values of its rows and
        columns (sorted when comparable, else in order of first appearance). Only labels that occur are
        included, so every row and column sum is positive.
    """
    t, classes = _factorize(y_true)
    p, clusters = _factorize(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} != {p.shape[0]}")
    if t.size == 0:
        raise ValueError("no samples")
    return _table_from_codes(t, p, len(classes), len(clusters)), classes, clusters


def _table(y_true: Any, y_pred: Any) -> np.ndarray:
    return contingency_matrix(y_true, y_pred)[0]


# ------------------------------------------------------------------------------ from the contingency


def _entropy(counts: np.ndarray) -> float:
    """Entropy in nats of the distribution ``counts / counts.sum()``."""
    n = float(counts.sum())
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def _mutual_info(table: np.ndarray) -> float:
    """MI in nats of the joint distribution ``table / n`` (appendix A.4)."""
    n = float(table.sum())
    rows, cols = np.nonzero(table)
    v = table[rows, cols].astype(np.float64)
    a = table.sum(1).astype(np.float64)[rows]
    b = table.sum(0).astype(np.float64)[cols]
    mi = (v / n) * (np.log(v) + math.log(n) - np.log(a) - np.log(b))
    return float(max(mi.sum(), 0.0))


def _nmi_table(table: np.ndarray) -> float:
    c, k = table.shape
    if c == k == 1:
        return 1.0
    mi = _mutual_info(table)
    if mi <= 0.0:
        return 0.0
    normalizer = 0.5 * _entropy(table.sum(1)) + 0.5 * _entropy(table.sum(0))
    return float(mi / max(normalizer, _EPS))


def _ari_table(table: np.ndarray) -> float:
    n = int(table.sum())
    sum_sq = int((table.astype(np.int64) ** 2).sum())
    sq_classes = int((table.sum(1).astype(np.int64) ** 2).sum())
    sq_clusters = int((table.sum(0).astype(np.int64) ** 2).sum())
    tp = sum_sq - n  # ordered pairs together in both
    fp = sq_clusters - sum_sq  # together in the clustering only
    fn = sq_classes - sum_sq  # together in the ground truth only
    tn = n * n - fp - fn - sum_sq
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _expected_mutual_info(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """E[MI] under the hypergeometric model of random labellings with sizes a (classes), b (clusters).

    ``sum_{i,j} sum_{m} (m/n) log(n m / (a_i b_j)) Hyp(m; n, a_i, b_j)`` (Vinh et al., 2010), vectorised
    with a table of log-factorials. For each (i, j) the sum over m is restricted to
    ``mean +- t`` with ``t = 40/3 + sqrt((40/3)^2 + 80 sd^2)`` (sd^2: the binomial variance, which bounds
    the hypergeometric one); by Bernstein's inequality, ``P(|m - mean| >= t) <= 2 exp(-t^2 / (2 sd^2 +
    2t/3)) = 2 e^-40``, so the omitted terms are far below float64 resolution of the result.
    """
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    if n <= 20_000_000:
        table = gammaln(np.arange(n + 1, dtype=np.float64) + 1.0)

        def log_fact(m: np.ndarray) -> np.ndarray:
            return table[m]
    else:

        def log_fact(m: np.ndarray) -> np.ndarray:
            return gammaln(np.asarray(m, dtype=np.float64) + 1.0)

    ai = np.repeat(a, b.size)
    bj = np.tile(b, a.size)
    mean = ai * (bj / n)
    sd = np.sqrt(mean * (1.0 - bj / n))
    width = 40.0 / 3.0 + np.sqrt((40.0 / 3.0) ** 2 + 80.0 * sd * sd) + 1.0
    lo = np.maximum(np.maximum(1, ai + bj - n), np.floor(mean - width).astype(np.int64))
    hi = np.minimum(np.minimum(ai, bj), np.ceil(mean + width).astype(np.int64))
    length = np.maximum(hi - lo + 1, 0)
    keep = length > 0
    ai, bj, lo, length = ai[keep], bj[keep], lo[keep], length[keep]
    const = log_fact(ai) + log_fact(bj) + log_fact(n - ai) + log_fact(n - bj) - log_fact(np.asarray(n, dtype=np.int64))
    log_ab = np.log(ai.astype(np.float64)) + np.log(bj.astype(np.float64))
    log_n = math.log(n)

    emi = 0.0
    ends = np.cumsum(length)
    chunk = 1 << 18
    start_pair = 0
    while start_pair < ai.size:
        base = ends[start_pair - 1] if start_pair > 0 else 0
        stop_pair = int(np.searchsorted(ends, base + chunk, side="right"))
        stop_pair = max(stop_pair, start_pair + 1)
        sl = slice(start_pair, stop_pair)
        lens = length[sl]
        idx = np.repeat(np.arange(lens.size), lens)
        offsets = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        m = lo[sl][idx] + offsets
        am, bm = ai[sl][idx], bj[sl][idx]
        log_pmf = const[sl][idx] - log_fact(m) - log_fact(am - m) - log_fact(bm - m) - log_fact(n - am - bm + m)
        terms = (m / n) * (log_n + np.log(m) - log_ab[sl][idx]) * np.exp(log_pmf)
        emi += float(terms.sum())
        start_pair = stop_pair
    return emi


def _ami_table(table: np.ndarray) -> float:
    c, k = table.shape
    if c == k == 1:
        return 1.0
    if c == 1 or k == 1:
        return 0.0
    n = int(table.sum())
    mi = _mutual_info(table)
    emi = _expected_mutual_info(table.sum(1), table.sum(0), n)
    normalizer = 0.5 * _entropy(table.sum(1)) + 0.5 * _entropy(table.sum(0))
    denominator = normalizer - emi
    denominator = min(denominator, -_EPS) if denominator < 0 else max(denominator, _EPS)
    numerator = mi - emi
    numerator = min(numerator, -_EPS) if numerator < 0 else max(numerator, _EPS)
    return float(numerator / denominator)


def _acc_table(table: np.ndarray) -> float:
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def _mean_entropy_table(table: np.ndarray) -> float:
    sizes = table.sum(0).astype(np.float64)
    p = table / sizes[None, :]
    return float((-xlogy(p, p).sum(0)).mean())


def _mean_max_purity_table(table: np.ndarray) -> float:
    return float((table.max(0) / table.sum(0)).mean())


def _weighted_purity_table(table: np.ndarray) -> float:
    return float(table.max(0).sum() / table.sum())


# ------------------------------------------------------------------------------------- public API


def nmi(y_true: Any, y_pred: Any) -> float:
    """Normalised mutual information, eq. 8: MI(U, V) / (0.5 H(U) + 0.5 H(V)), in [0, 1]."""
    return _nmi_table(_table(y_true, y_pred))


def ari(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index, eq. 9: (RI - E[RI]) / (max RI - E[RI]), in [-1, 1] (0 at chance)."""
    return _ari_table(_table(y_true, y_pred))


def ami(y_true: Any, y_pred: Any) -> float:
    """Adjusted mutual information (MI - E[MI]) / (0.5 H(U) + 0.5 H(V) - E[MI]), as sklearn's default."""
    return _ami_table(_table(y_true, y_pred))


def hungarian_accuracy(y_true: Any, y_pred: Any) -> float:
    """Accuracy after the best one-to-one matching of clusters to classes (Kuhn-Munkres).

    Works for K != C: with more clusters than classes, the samples of unmatched clusters are errors;
    with fewer, the samples of unmatched classes are.
    """
    return _acc_table(_table(y_true, y_pred))


def mean_entropy(y_true: Any, y_pred: Any) -> float:
    """<H>, eq. 10: mean over non-empty clusters of the entropy (nats) of the ground truth inside it."""
    return _mean_entropy_table(_table(y_true, y_pred))


def mean_max_purity(y_true: Any, y_pred: Any) -> float:
    """<p_max>, eq. 11: mean over non-empty clusters of the fraction of its most frequent class."""
    return _mean_max_purity_table(_table(y_true, y_pred))


def weighted_purity(y_true: Any, y_pred: Any) -> float:
    """Purity / many-to-one accuracy: each cluster predicts its majority class; fraction correct."""
    return _weighted_purity_table(_table(y_true, y_pred))


def clustering_scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """All metrics from one contingency matrix.

    Returns:
        ``{"nmi", "ari", "ami", "acc", "mean_entropy", "mean_max_purity", "weighted_purity"}`` (floats;
        fractions in [0, 1], not percent; entropy in nats) and ``"n"``, ``"n_clusters"`` (non-empty),
        ``"n_classes"`` (ints).
    """
    table = _table(y_true, y_pred)
    return {
        "nmi": _nmi_table(table),
        "ari": _ari_table(table),
        "ami": _ami_table(table),
        "acc": _acc_table(table),
        "mean_entropy": _mean_entropy_table(table),
        "mean_max_purity": _mean_max_purity_table(table),
        "weighted_purity": _weighted_purity_table(table),
        "n": int(table.sum()),
        "n_clusters": int(table.shape[1]),
        "n_classes": int(table.shape[0]),
    }


def inter_nmi(labelings: Sequence[Any]) -> np.ndarray:
    """Pairwise NMI between H labellings of the same N samples (e.g. the heads): float64 [H, H].

    Symmetric, with ones on the diagonal; a measure of how decorrelated the heads are.
    """
    coded = [_factorize(y) for y in labelings]
    h = len(coded)
    if h and any(codes.shape != coded[0][0].shape for codes, _ in coded):
        raise ValueError("all labellings must have the same length")
    out = np.eye(h, dtype=np.float64)
    for i in range(h):
        for j in range(i + 1, h):
            (ti, ui), (tj, uj) = coded[i], coded[j]
            value = _nmi_table(_table_from_codes(ti, tj, len(ui), len(uj)))
            out[i, j] = out[j, i] = value
    return out
