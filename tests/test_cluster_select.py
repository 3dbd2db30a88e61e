"""Label-free head choice (audio-visual NMI per head against a brute-force NMI, masking, ties, errors) and the
per-video modality mismatch score against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from videolabel.cluster.select import (
    MISMATCH_FLAG,
    audio_visual_nmi,
    choose_head,
    consensus_head,
    consensus_scores,
    kmeans_objective,
    modality_mismatch,
    objective_head,
)


def brute_nmi(a: list[int], b: list[int]) -> float:
    """NMI = MI / mean(H(a), H(b)) by counting pairs (eq. 8)."""
    n = len(a)
    pa = {x: a.count(x) / n for x in set(a)}
    pb = {y: b.count(y) / n for y in set(b)}
    pab: dict[tuple[int, int], float] = {}
    for x, y in zip(a, b):
        pab[(x, y)] = pab.get((x, y), 0.0) + 1 / n
    mi = sum(p * math.log(p / (pa[x] * pb[y])) for (x, y), p in pab.items())
    ha = -sum(p * math.log(p) for p in pa.values())
    hb = -sum(p * math.log(p) for p in pb.values())
    return 1.0 if ha + hb == 0 else mi / (0.5 * (ha + hb))


def test_matches_brute_force_per_head_and_skips_videos_without_audio():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 4, size=(3, 40))
    a = v.copy()
    a[1] = rng.integers(0, 4, size=40)  # head 1: the towers disagree
    a[2, :10] = (a[2, :10] + 1) % 4  # head 2: a quarter of the videos disagree
    has = np.ones(40, dtype=bool)
    has[-5:] = False
    a[:, -5:] = 99  # whatever a video without audio holds is ignored
    got = audio_visual_nmi(v, a, has)
    want = [brute_nmi(v[h][:35].tolist(), a[h][:35].tolist()) for h in range(3)]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] == pytest.approx(1.0) and got[1] < got[2] < got[0]
    assert choose_head(got) == 0
    assert choose_head(got[1:]) == 1  # of heads 1 and 2, the agreeing one


def test_permuted_cluster_ids_agree_fully():
    """The score ignores cluster names: a head whose audio ids are a permutation of the video ids agrees."""
    v = np.array([[0, 0, 1, 1, 2, 2]])
    a = np.array([[2, 2, 0, 0, 1, 1]])
    assert audio_visual_nmi(v, a) == pytest.approx([1.0])


def test_too_few_videos_with_audio_and_ties():
    v = np.zeros((2, 4), dtype=int)
    assert audio_visual_nmi(v, v, [True, False, False, False]) == [0.0, 0.0]
    assert choose_head([0.3, 0.5, 0.5]) == 1


def test_errors():
    with pytest.raises(ValueError, match=r"\[H, N\]"):
        audio_visual_nmi(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="has_audio"):
        audio_visual_nmi(np.zeros((2, 3)), np.zeros((2, 3)), [True])
    with pytest.raises(ValueError, match="one score"):
        choose_head([])
    with pytest.raises(ValueError, match="finite"):
        choose_head([0.1, float("nan")])


def test_modality_mismatch_is_the_squared_hellinger_distance_brute_force():
    g = torch.Generator().manual_seed(0)
    lv, la = torch.randn(4, 7, 5, generator=g) * 3, torch.randn(4, 7, 5, generator=g) * 3
    got = modality_mismatch(lv, la)
    assert got.shape == (4, 7)
    pv, pa = torch.softmax(lv.double(), -1), torch.softmax(la.double(), -1)
    for i in range(4):
        for j in range(7):
            bc = sum(math.sqrt(pv[i, j, k] * pa[i, j, k]) for k in range(5))
            assert got[i, j].item() == pytest.approx(1 - bc, abs=1e-6)
    # logits and log-probabilities give the same score; symmetric
    assert torch.allclose(modality_mismatch(torch.log_softmax(lv, -1), la), got, atol=1e-6)
    assert torch.allclose(modality_mismatch(la, lv), got, atol=1e-6)


def test_modality_mismatch_bounds_identical_and_disjoint():
    same = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    assert modality_mismatch(same, same).item() == pytest.approx(0.0, abs=1e-6)
    a = torch.tensor([[30.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 30.0]])
    assert modality_mismatch(a, b).item() == pytest.approx(1.0, abs=1e-6)
    assert modality_mismatch(a, b).item() >= MISMATCH_FLAG > modality_mismatch(same, same).item()
    with pytest.raises(ValueError):
        modality_mismatch(torch.zeros(2, 3), torch.zeros(2, 4))


def _brute_nmi(a: np.ndarray, b: np.ndarray) -> float:
    """NMI with the arithmetic-mean normalisation, from the joint counts (no library code)."""
    n = len(a)
    pab = {}
    for x, y in zip(a.tolist(), b.tolist()):
        pab[(x, y)] = pab.get((x, y), 0) + 1
    pa = {x: (a == x).sum() / n for x in set(a.tolist())}
    pb = {y: (b == y).sum() / n for y in set(b.tolist())}
    mi = sum(c / n * math.log((c / n) / (pa[x] * pb[y])) for (x, y), c in pab.items())
    ha = -sum(p * math.log(p) for p in pa.values())
    hb = -sum(p * math.log(p) for p in pb.values())
    return mi / (0.5 * (ha + hb)) if ha + hb > 0 else 1.0


def test_consensus_head_is_the_medoid_partition_brute_force():
    rng = np.random.default_rng(0)
    truth = np.arange(120) % 4
    heads = []
    for noise in (0.1, 0.2, 0.15, 0.8):  # three noisy copies of one partition and an outlier
        h = truth.copy()
        flip = rng.random(120) < noise
        h[flip] = rng.integers(0, 4, flip.sum())
        heads.append(rng.permutation(4)[h])  # the cluster ids themselves do not matter
    c = np.stack(heads)
    mean = [np.mean([_brute_nmi(c[i], c[j]) for j in range(4) if j != i]) for i in range(4)]
    assert consensus_scores(c) == pytest.approx(mean, abs=1e-9)
    assert consensus_head(c) == int(np.argmax(mean)) == 0
    assert consensus_scores(c[:1]) == [1.0]
    assert consensus_head(c[[3, 1, 2]]) != 0  # the outlier is never the consensus
    assert consensus_head(c[:1]) == 0
    assert consensus_head(np.stack([c[1], c[1]])) == 0  # ties: the lowest index
    with pytest.raises(ValueError):
        consensus_head(np.zeros(5))


def test_kmeans_objective_against_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5))
    c = rng.integers(0, 4, size=(3, 40))
    c[2] = 7  # one cluster holding every point
    want = []
    for part in c:
        tot = 0.0
        for k in set(part.tolist()):
            pts = [x[i] for i in range(40) if part[i] == k]
            mu = sum(pts) / len(pts)
            tot += sum(float(((p - mu) ** 2).sum()) for p in pts)
        want.append(tot)
    assert kmeans_objective(x, c) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError):
        kmeans_objective(x, c[:, :30])
    with pytest.raises(ValueError):
        kmeans_objective(x, np.zeros((0, 40)))


def test_objective_head_keeps_the_better_restart_even_against_the_majority():
    """Four well-separated blobs (classes 0-3). Three restarts merged blobs 0 and 1 and split blob 2 in two;
    one found the four blobs. The consensus (medoid) is one of the three; the lowest objective is the one."""
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])
    y = np.repeat(np.arange(4), 25)
    x = centres[y] + 0.5 * rng.standard_normal((100, 2))
    good = y.copy()
    bad = np.where(y == 1, 0, y)
    bad = np.where((y == 2) & (x[:, 0] > 0), 1, bad)  # blob 2 cut in two by the sign of x
    clusters = np.stack([bad, bad.copy(), good, bad.copy()])
    assert consensus_head(clusters) != 2
    assert objective_head(x, clusters) == 2
    assert objective_head(x, np.stack([good, good])) == 0  # ties: the lowest index
