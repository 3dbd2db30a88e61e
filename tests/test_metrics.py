"""Clustering metrics (appendix A.4): equal to scikit-learn where it has them, hand values otherwise."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from videolabel.metrics import (
    ami,
    ari,
    clustering_scores,
    contingency_matrix,
    hungarian_accuracy,
    inter_nmi,
    mean_entropy,
    mean_max_purity,
    nmi,
    weighted_purity,
)


def _noisy(rng: np.random.Generator, n: int, c: int, k: int, p_keep: float) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, c, n)
    pred = np.where(rng.random(n) < p_keep, (y * 7) % k, rng.integers(0, k, n))
    return y, pred


@pytest.mark.parametrize(("n", "c", "k", "p_keep"),
                         [(40, 3, 5, 0.5), (500, 10, 10, 0.7), (3000, 25, 40, 0.3), (200, 2, 9, 0.0),
                          (20_000, 30, 50, 0.6), (100, 5, 1, 0.0), (100, 1, 4, 0.0)])
def test_equal_to_sklearn_on_random_labellings(n: int, c: int, k: int, p_keep: float) -> None:
    rng = np.random.default_rng(n + c + k)
    y, pred = _noisy(rng, n, c, k, p_keep)
    assert nmi(y, pred) == pytest.approx(skm.normalized_mutual_info_score(y, pred, average_method="arithmetic"),
                                         abs=1e-12)
    assert ari(y, pred) == pytest.approx(skm.adjusted_rand_score(y, pred), abs=1e-12)
    assert ami(y, pred) == pytest.approx(skm.adjusted_mutual_info_score(y, pred), abs=1e-10)


def test_string_and_mixed_labels_equal_sklearn() -> None:
    rng = np.random.default_rng(1)
    y, pred = _noisy(rng, 1000, 6, 9, 0.5)
    y_str = np.array([f"class-{v}" for v in y])
    pred_str = [f"k{v}" for v in pred]
    assert nmi(y_str, pred_str) == pytest.approx(skm.normalized_mutual_info_score(y, pred), abs=1e-12)
    assert ami(y_str, pred_str) == pytest.approx(skm.adjusted_mutual_info_score(y, pred), abs=1e-10)
    assert ari(y_str, pred_str) == pytest.approx(skm.adjusted_rand_score(y, pred), abs=1e-12)
    # mixed types: 1 and "1" are different labels
    mixed = [1, "1", 1, "1", 2.5, 2.5]
    table, classes, _ = contingency_matrix(mixed, [0, 1, 0, 1, 2, 2])
    assert table.shape == (3, 3) and len(classes) == 3
    assert nmi(mixed, [0, 1, 0, 1, 2, 2]) == pytest.approx(1.0)
    # tensors and pandas inputs
    assert nmi(torch.tensor(y), pd.Series(pred)) == pytest.approx(nmi(y, pred))


def test_perfect_and_swapped() -> None:
    y = [0, 0, 1, 1, 2, 2]
    for pred in ([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 9, 9], ["b", "b", "a", "a", "c", "c"]):
        s = clustering_scores(y, pred)
        for key in ("nmi", "ari", "ami", "acc", "mean_max_purity", "weighted_purity"):
            assert s[key] == pytest.approx(1.0), key
        assert s["mean_entropy"] == 0.0
        assert (s["n"], s["n_clusters"], s["n_classes"]) == (6, 3, 3)


def test_all_in_one_cluster() -> None:
    y, pred = [0, 0, 1, 1], [7, 7, 7, 7]
    s = clustering_scores(y, pred)
    assert s["nmi"] == 0.0 and s["ari"] == 0.0 and s["ami"] == 0.0
    assert s["acc"] == 0.5 and s["mean_max_purity"] == 0.5 and s["weighted_purity"] == 0.5
    assert s["mean_entropy"] == pytest.approx(math.log(2))  # natural log (nats)
    assert nmi([3, 3, 3], [1, 1, 1]) == 1.0 and ami([3, 3, 3], [1, 1, 1]) == 1.0 and ari([3, 3, 3], [1, 1, 1]) == 1.0


def test_three_classes_five_clusters_by_hand() -> None:
    """Classes c0, c1, c2 (4 samples each) in clusters A..E:
    A = {c0, c0, c0, c1}, B = {c0}, C = {c1, c1, c1}, D = {c2, c2}, E = {c2, c2}."""
    y = ["c0"] * 3 + ["c1"] + ["c0"] + ["c1"] * 3 + ["c2"] * 4
    pred = ["A"] * 4 + ["B"] + ["C"] * 3 + ["D"] * 2 + ["E"] * 2
    table, classes, clusters = contingency_matrix(y, pred)
    assert classes.tolist() == ["c0", "c1", "c2"] and clusters.tolist() == ["A", "B", "C", "D", "E"]
    assert table.tolist() == [[3, 1, 0, 0, 0], [1, 0, 3, 0, 0], [0, 0, 0, 2, 2]]
    # Hungarian: c0-A (3), c1-C (3), c2-D or E (2): 8 of 12; B and the other c2 cluster are errors.
    assert hungarian_accuracy(y, pred) == pytest.approx(8 / 12)
    assert weighted_purity(y, pred) == pytest.approx(11 / 12)  # 3 + 1 + 3 + 2 + 2
    assert mean_max_purity(y, pred) == pytest.approx((3 / 4 + 1 + 1 + 1 + 1) / 5)
    h_a = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert mean_entropy(y, pred) == pytest.approx(h_a / 5)
    assert nmi(y, pred) == pytest.approx(skm.normalized_mutual_info_score(y, pred), abs=1e-12)
    # fewer clusters than classes: the unmatched class is all error
    assert hungarian_accuracy([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1]) == pytest.approx(4 / 6)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        nmi([0, 1, 2], [0, 1])
    with pytest.raises(ValueError):
        nmi([], [])
    with pytest.raises(ValueError):
        nmi([0, None, 1], [0, 1, 1])
    with pytest.raises(ValueError):
        nmi(np.array([0.0, np.nan]), [0, 1])


def test_inter_nmi() -> None:
    rng = np.random.default_rng(3)
    y, a = _noisy(rng, 2000, 8, 8, 0.8)
    b = (a + 1) % 8  # same partition as a
    c = rng.integers(0, 8, 2000)
    m = inter_nmi([a, b, c])
    assert m.shape == (3, 3)
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 1.0)
    assert m[0, 1] == pytest.approx(1.0)
    assert m[0, 2] == pytest.approx(nmi(a, c)) and m[0, 2] < 0.05


def test_one_million_samples_in_seconds() -> None:
    rng = np.random.default_rng(4)
    y, pred = _noisy(rng, 1_000_000, 300, 1000, 0.5)
    start = time.perf_counter()
    s = clustering_scores(y, pred)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    assert s["n"] == 1_000_000 and s["n_clusters"] == 1000 and s["n_classes"] == 300
    assert 0.0 < s["ami"] < s["nmi"] < 1.0
