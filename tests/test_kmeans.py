"""k-means baseline (faiss): separable blobs, errors, determinism, soft confidence."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("faiss")

from videolabel.errors import VideolabelError  # noqa: E402
from videolabel.kmeans import KMeansResult, assign_confidence, kmeans, pca_whiten, squared_distances  # noqa: E402


def blobs(n_per: int = 40, k: int = 5, d: int = 16, spread: float = 10.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    y = np.repeat(np.arange(k), n_per)
    x = (centres[y] + rng.normal(size=(k * n_per, d))).astype(np.float32)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def test_separable_blobs_are_clustered_perfectly():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    for seed in range(5):
        x, y = blobs(seed=seed)
        r = kmeans(x, 5, seed=seed)
        assert isinstance(r, KMeansResult)
        assert r.labels.dtype == np.int64 and r.labels.shape == (200,)
        assert r.distances.dtype == np.float32 and r.distances.shape == (200,)
        assert r.centroids.shape == (5, 16)
        assert adjusted_rand_score(y, r.labels) == 1.0
        assert normalized_mutual_info_score(y, r.labels) == pytest.approx(1.0)
        # distances are squared L2 to the own centroid; inertia is their sum
        own = ((x - r.centroids[r.labels]) ** 2).sum(1)
        np.testing.assert_allclose(r.distances, own, rtol=1e-4, atol=1e-3)
        assert r.inertia == pytest.approx(float(own.sum()), rel=1e-4)


def test_metrics_module_agrees_when_present():
    metrics = pytest.importorskip("videolabel.metrics")
    x, y = blobs(seed=3)
    r = kmeans(x, 5, seed=0)
    assert metrics.nmi(y, r.labels) == pytest.approx(1.0)


def test_random_init_runs():
    x, _ = blobs(seed=1)
    r = kmeans(x, 5, seed=0, init="random", nredo=2, niter=10)
    assert r.labels.min() >= 0 and r.labels.max() < 5


def test_deterministic_with_seed():
    x, _ = blobs(n_per=30, k=8, spread=1.0, seed=2)  # overlapping: the seed matters
    a = kmeans(x, 8, seed=7)
    b = kmeans(x, 8, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia


def test_k_larger_than_n_is_a_clear_error():
    x, _ = blobs(n_per=2, k=2)
    with pytest.raises(VideolabelError, match="k=5 .*at least 5 points, got 4"):
        kmeans(x, 5)
    with pytest.raises(VideolabelError, match="k >= 1"):
        kmeans(x, 0)


def test_bad_input_errors():
    with pytest.raises(VideolabelError, match="2-D"):
        kmeans(np.zeros(10, dtype=np.float32), 2)
    bad = np.ones((10, 3), dtype=np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(VideolabelError, match="NaN"):
        kmeans(bad, 2)
    with pytest.raises(VideolabelError, match="init"):
        kmeans(np.ones((10, 3), dtype=np.float32), 2, init="magic")


def test_gpu_true_without_gpu_is_an_error_or_runs():
    import faiss

    x, _ = blobs(seed=4)
    if faiss.get_num_gpus() == 0:
        with pytest.raises(VideolabelError, match="GPU"):
            kmeans(x, 5, gpu=True)
    assert kmeans(x, 5, gpu=False).labels.shape == (200,)


def test_missing_faiss_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    x, _ = blobs(seed=0)
    with pytest.raises(VideolabelError, match=r"install videolabel\[cpu\] or videolabel\[gpu\]"):
        kmeans(x, 5)


def test_spherical_normalises():
    x, y = blobs(seed=5)
    x = x * np.random.default_rng(0).uniform(0.5, 5.0, size=(len(x), 1)).astype(np.float32)  # radial noise
    r = kmeans(x, 5, seed=0, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(r.centroids, axis=1), 1.0, rtol=1e-4)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, r.labels) == 1.0


def test_assign_confidence():
    x, _ = blobs(seed=6)
    r = kmeans(x, 5, seed=0)
    prob, margin = assign_confidence(x, r.centroids)
    assert prob.shape == margin.shape == (200,)
    assert prob.dtype == np.float32 and margin.dtype == np.float32
    assert np.all(prob > 0.99) and np.all(margin > 0.98)  # well separated: confident
    d2 = squared_distances(x, r.centroids)
    np.testing.assert_array_equal(d2.argmin(1), r.labels)
    # a point halfway between two centroids is split ~50/50 with ~0 margin
    mid = ((r.centroids[0] + r.centroids[1]) / 2)[None, :]
    p, m = assign_confidence(mid, r.centroids, temperature=1.0)
    assert p[0] == pytest.approx(0.5, abs=1e-3) and m[0] == pytest.approx(0.0, abs=1e-3)
    # k == 1
    p1, m1 = assign_confidence(x, r.centroids[:1])
    np.testing.assert_allclose(p1, 1.0)
    np.testing.assert_allclose(m1, 1.0)
    with pytest.raises(VideolabelError, match="temperature"):
        assign_confidence(x, r.centroids, temperature=0)
    with pytest.raises(VideolabelError, match="dimensions"):
        assign_confidence(x, r.centroids[:, :3])


def test_pca_whiten_matches_scikit_learn_up_to_sign():
    sk = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 5.0  # correlated, off-centre
    ours = pca_whiten(x, 5)
    ref = sk.PCA(5, whiten=True, svd_solver="full").fit_transform(x)
    assert ours.shape == (300, 5) and ours.dtype == np.float32
    for j in range(5):
        s = np.sign(ours[:, j] @ ref[:, j])
        np.testing.assert_allclose(ours[:, j], s * ref[:, j], rtol=1e-3, atol=1e-3)
    cov = np.cov(ours.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(cov, np.eye(5), atol=1e-4)


def test_pca_whiten_caps_dims_and_rejects_bad_input():
    x = np.random.default_rng(1).normal(size=(6, 20))
    assert pca_whiten(x, 32).shape == (6, 5)  # at most N - 1 components
    with pytest.raises(VideolabelError):
        pca_whiten(x[:1], 4)
    with pytest.raises(VideolabelError):
        pca_whiten(x, 0)


def test_whitening_recovers_clusters_hidden_under_a_dominant_direction():
    """Post-ReLU-like features: a huge shared component with small cluster offsets in other
    directions. L2 + k-means splits on the shared component's magnitude; whitening finds the clusters."""
    rng = np.random.default_rng(2)
    n, k, d = 600, 4, 16
    y = np.repeat(np.arange(k), n // k)
    centers = rng.normal(size=(k, d)) * 0.5
    centers[:, 0] = 0.0
    scale = rng.uniform(5, 50, size=(n, 1))  # a nuisance magnitude along dimension 0
    x = centers[y] + 0.1 * rng.normal(size=(n, d))
    x[:, :1] += scale
    from videolabel.metrics import nmi

    white = kmeans(pca_whiten(x, 8), k, seed=0).labels
    assert nmi(y, white) > 0.9
