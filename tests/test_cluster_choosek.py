"""The label-free choice of K: adjusted mutual information against brute force, cross-validated probes,
the cross-modal score on two synthetic modalities with a shared class and private nuisances, choose_k."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from videolabel.cluster.choosek import adjusted_mutual_info_nats, choose_k, cross_modal_information, probe_predictions


def brute_mi(a: list[int], b: list[int]) -> float:
    n = len(a)
    mi = 0.0
    for x in set(a):
        for y in set(b):
            nxy = sum(1 for u, v in zip(a, b) if u == x and v == y)
            if nxy:
                mi += nxy / n * math.log(n * nxy / (a.count(x) * b.count(y)))
    return mi


def test_adjusted_mutual_info_is_mi_minus_its_mean_over_every_permutation():
    a = [0, 0, 1, 1, 1, 2, 2]
    b = [1, 1, 0, 0, 2, 2, 2]
    expected = float(np.mean([brute_mi(a, [b[i] for i in p]) for p in itertools.permutations(range(len(b)))]))
    assert adjusted_mutual_info_nats(a, b) == pytest.approx(brute_mi(a, b) - expected, abs=1e-9)
    assert adjusted_mutual_info_nats([0] * 5, [0, 1, 0, 1, 0]) == pytest.approx(0.0, abs=1e-12)


def test_probe_predictions_are_cross_validated():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    noise = torch.randint(0, 4, (600,), generator=g)  # labels unrelated to x: a memorising probe would fit them
    assert (probe_predictions(x, noise, 4, seed=1) == noise).float().mean() < 0.35  # chance 0.25
    signal = (x[:, 0] > x[:, 1]).long() + 2 * (x[:, 2] > 0).long()  # linearly separable classes
    assert (probe_predictions(x, signal, 4, seed=1) == signal).float().mean() > 0.8


def _two_modalities(seed: int = 0):
    """8 classes seen by both modalities; the frames also show 2 styles, the sound 3 speakers (independent)."""
    g = torch.Generator().manual_seed(seed)
    n, c, d = 960, 8, 24
    y = torch.arange(n) % c
    style = torch.randint(0, 2, (n,), generator=g)
    speaker = torch.randint(0, 3, (n,), generator=g)
    cls_v, cls_a = torch.randn(c, d, generator=g) * 2, torch.randn(c, d, generator=g) * 2
    sty, spk = torch.randn(2, d, generator=g) * 2, torch.randn(3, d, generator=g) * 2
    video = cls_v[y] + sty[style] + torch.randn(n, d, generator=g)
    audio = cls_a[y] + spk[speaker] + torch.randn(n, d, generator=g)
    return video, audio, y, style, speaker


def test_the_shared_classes_score_above_coarser_and_finer_partitions():
    video, audio, y, style, speaker = _two_modalities()
    parts = {4: y // 2, 8: y, 16: y * 2 + style, 24: y * 3 + speaker}
    scores = {k: cross_modal_information(video, audio, lab, k, seed=0) for k, lab in parts.items()}
    assert scores[8] > scores[4] + 0.3  # merged pairs: less shared information (log 4 < log 8)
    # split by what only the frames (16) or only the sound (24) sees: no more shared information than the
    # classes (measured 1.96 and 1.78 nats against 2.05)
    assert max(scores[16], scores[24]) < scores[8] + 0.02
    assert choose_k(scores) == 8


def test_cross_modal_information_subsamples_and_checks_shapes():
    video, audio, y, _, _ = _two_modalities()
    small = cross_modal_information(video, audio, y, 8, seed=0, max_videos=400)
    assert 0.5 < small <= math.log(8)
    with pytest.raises(ValueError):
        cross_modal_information(video[:10], audio, y, 8)


def test_choose_k_takes_the_smallest_within_tolerance():
    assert choose_k({5: 0.7, 10: 1.0, 20: 0.98, 40: 0.6}) == 10
    assert choose_k({5: 0.97, 10: 1.0, 20: 0.98}) == 5
    assert choose_k({5: 0.97, 10: 1.0, 20: 0.98}, tol=0.0) == 10
    assert choose_k({3: -0.2, 4: -0.1}) == 4  # negative scores: within 5 % of |best| below it
    for bad in ({}, {3: float("nan")}):
        with pytest.raises(ValueError):
            choose_k(bad)
    with pytest.raises(ValueError):
        choose_k({3: 1.0}, tol=1.0)
