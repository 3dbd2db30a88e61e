"""The streams' weights in the final labels (videolabel.cluster.weights): the formula, the held-out prediction
against a brute-force reference, and the weights on streams made to share a class or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videolabel.cluster.weights import SHARE_POWER, heldout_predictability, measure_stream_weights, stream_weights
from videolabel.kmeans import pooled_features
from videolabel.metrics import nmi


def test_the_weights_follow_the_formula():
    """w_s = 1 - (1 - q_s / q_max)(1 - q_max)^3: equal when the streams share all they cluster on, close to
    q_s / q_max when they share nothing; the stream the other sees more keeps 1; symmetric in the two streams."""
    assert SHARE_POWER == 3
    for qv, qa in [(0.9, 0.6), (0.1, 0.05), (0.02, 0.3), (0.5, 0.5), (1.0, 0.2), (0.3, 0.0)]:
        wv, wa = stream_weights(qv, qa)
        q = max(qv, qa)
        assert wv == pytest.approx(1 - (1 - qv / q) * (1 - q) ** 3)
        assert wa == pytest.approx(1 - (1 - qa / q) * (1 - q) ** 3)
        assert max(wv, wa) == 1.0 and 0.0 <= min(wv, wa) <= 1.0
        assert stream_weights(qa, qv) == (wa, wv)
    assert stream_weights(1.0, 0.0) == (1.0, 1.0)  # the streams share everything one of them clusters on
    assert stream_weights(0.2, 0.1) == pytest.approx((1.0, 0.744))  # 1 - 0.5 * 0.8^3
    assert stream_weights(0.43, 0.13) == pytest.approx((1.0, 0.8708), abs=1e-4)  # a short run of AV-Digits
    assert stream_weights(0.0, 0.0) == (1.0, 1.0) and stream_weights(-0.01, -0.02) == (1.0, 1.0)
    # the less the streams share, the more the weaker one is turned down, at the same ratio
    assert stream_weights(0.8, 0.4)[1] > stream_weights(0.2, 0.1)[1] > stream_weights(0.02, 0.01)[1] > 0.5


def _reference(x: np.ndarray, labels: np.ndarray, k: int, splits: int, seed: int) -> float:
    """The same measurement with loops: per split, each held-out point gets the label of the nearest class mean
    of the other half (classes absent from that half are not candidates)."""
    rng = np.random.default_rng(seed)
    n, out = len(x), []
    for _ in range(splits):
        order = rng.permutation(n)
        halves = [order[: n // 2], order[n // 2 :]]
        pred = np.zeros(n, np.int64)
        for fit, held in ((halves[0], halves[1]), (halves[1], halves[0])):
            means = {c: x[[i for i in fit if labels[i] == c]].mean(0) for c in range(k) if (labels[fit] == c).any()}
            for i in held:
                pred[i] = min(means, key=lambda c: float(((x[i] - means[c]) ** 2).sum()))
        out.append(nmi(labels, pred))
    return float(np.mean(out))


def test_heldout_prediction_matches_brute_force():
    rng = np.random.default_rng(3)
    n, k = 120, 4
    labels = rng.integers(0, k, n)
    labels[labels == 3] = 2  # a cluster nobody is in: never predicted
    x = rng.standard_normal((n, 5)) + 1.5 * np.eye(5)[labels]
    for seed in (0, 7):
        assert heldout_predictability(x, labels, k, splits=3, seed=seed) == pytest.approx(
            _reference(x, labels, k, 3, seed), abs=1e-12)
    far = 50 * np.eye(5)[labels] + rng.standard_normal((n, 5))
    assert heldout_predictability(far, labels, k) == pytest.approx(1.0)  # clusters the other side sees whole
    blind = rng.standard_normal((n, 5))  # features that know nothing of the clusters
    assert heldout_predictability(blind, labels, k) < 0.1
    assert heldout_predictability(x[:3], labels[:3], k) == 0.0


def _streams(n: int, seed: int, audio_private: float, video_private: float, shared_strength: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Two streams of n videos that both see 5 classes (the sound as strongly as ``shared_strength`` of the
    frames), each with clusters of its own (5 recording conditions) as strong as ``*_private``; as the joint
    space's blocks (whitened, L2-normalised)."""
    rng = np.random.default_rng(seed)
    cls, own_v, own_a = rng.integers(0, 5, n), rng.integers(0, 5, n), rng.integers(0, 5, n)
    shared_v, shared_a = rng.standard_normal((5, 16)) * 2, rng.standard_normal((5, 16)) * 2
    priv_v, priv_a = rng.standard_normal((5, 16)), rng.standard_normal((5, 16))
    fv = shared_v[cls] + video_private * priv_v[own_v] + rng.standard_normal((n, 16))
    fa = shared_strength * shared_a[cls] + audio_private * priv_a[own_a] + rng.standard_normal((n, 16))
    has = torch.ones(n, dtype=torch.bool)
    tv, ta = torch.from_numpy(fv.astype(np.float32)), torch.from_numpy(fa.astype(np.float32))
    return (pooled_features(tv, ta, has, "visual", pca=16), pooled_features(tv, ta, has, "audio", pca=16))


def test_the_stream_with_clusters_of_its_own_counts_less():
    """Sound whose strongest clusters are its own (a room, a level) is turned down; frames likewise when the
    frames are the stream with clusters of their own; two streams that cluster on the same classes stay equal."""
    xv, xa = _streams(600, 0, audio_private=6.0, video_private=0.0, shared_strength=0.2)
    w = measure_stream_weights(xv, xa, 5, seed=0)  # measured: 1.0 and 0.46 (q 0.17 and 0.009)
    assert w.video == 1.0 and w.audio < 0.7 and w.q_video > 5 * w.q_audio and w.videos == 600
    xv, xa = _streams(600, 1, audio_private=0.0, video_private=6.0, shared_strength=0.2)  # the roles swapped
    w = measure_stream_weights(xv, xa, 5, seed=0)  # measured: 0.32 and 1.0 (q 0.010 and 0.082)
    assert w.audio == 1.0 and w.video < 0.7 and w.q_audio > 5 * w.q_video
    xv, xa = _streams(600, 2, audio_private=0.0, video_private=0.0, shared_strength=0.5)
    w = measure_stream_weights(xv, xa, 5, seed=0)  # measured: 0.999 and 1.0 (q 0.92 and 0.93)
    assert min(w.video, w.audio) > 0.97 and min(w.q_video, w.q_audio) > 0.7
    assert measure_stream_weights(xv, xa, 5, seed=0) == w  # deterministic
    few = measure_stream_weights(xv[:19], xa[:19], 5)  # fewer than 4 K videos: equal
    assert (few.video, few.audio, few.videos) == (1.0, 1.0, 19)
    xv, xa = _streams(600, 2, audio_private=0.0, video_private=0.0, shared_strength=1.0)
    sub = measure_stream_weights(xv, xa, 5, seed=0, max_points=300)  # a large collection: evenly spaced videos
    assert sub.videos == 300 and min(sub.video, sub.audio) > 0.99


def test_pooled_features_weigh_each_block():
    g = torch.Generator().manual_seed(0)
    fv, fa = torch.randn(50, 40, generator=g), torch.randn(50, 24, generator=g)
    has = torch.ones(50, dtype=torch.bool)
    has[3] = False
    x = pooled_features(fv, fa, has, "both", pca=16)
    assert pooled_features(fv, fa, has, "both", pca=16, weights=(1.0, 1.0)).tobytes() == x.tobytes()
    y = pooled_features(fv, fa, has, "both", pca=16, weights=(1.0, 0.5))
    np.testing.assert_array_equal(y[:, :16], x[:, :16])
    np.testing.assert_allclose(y[:, 16:], 0.5 * x[:, 16:], rtol=1e-6)
