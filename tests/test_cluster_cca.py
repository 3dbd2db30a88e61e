"""Canonical correlation analysis of the two towers' features (videolabel.cluster.cca)."""

from __future__ import annotations

import numpy as np
import pytest

from videolabel.cluster.cca import fit_cca, shared_features
from videolabel.errors import VideolabelError
from videolabel.kmeans import kmeans, l2_normalise, pca_whiten
from videolabel.metrics import nmi


def _paired(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3))  # shared latent
    qv = np.linalg.qr(rng.standard_normal((6, 3)))[0].T * 2  # [3, 6], orthogonal rows of norm 2
    qa = np.linalg.qr(rng.standard_normal((5, 3)))[0].T * 2
    xv = np.concatenate([z @ qv, rng.standard_normal((n, 4)) * 3], 1)
    xa = np.concatenate([z @ qa, rng.standard_normal((n, 3)) * 2], 1)
    xv += 0.5 * rng.standard_normal(xv.shape)
    xa += 0.5 * rng.standard_normal(xa.shape)
    return xv, xa


def test_canonical_correlations_match_the_textbook_eigenproblem():
    """rho^2 are the eigenvalues of S_vv^-1 S_va S_aa^-1 S_av (Hotelling 1936), computed directly."""
    xv, xa = _paired()
    maps = fit_cca(xv, xa, pca=64)  # no truncation: 10 and 8 dims
    xc, ac = xv - xv.mean(0), xa - xa.mean(0)
    n = len(xv)
    svv, saa, sva = xc.T @ xc / (n - 1), ac.T @ ac / (n - 1), xc.T @ ac / (n - 1)
    m = np.linalg.solve(svv, sva) @ np.linalg.solve(saa, sva.T)
    ref = np.sort(np.sqrt(np.clip(np.linalg.eigvals(m).real, 0, None)))[::-1][:8]
    np.testing.assert_allclose(maps.corr, ref, atol=1e-6)
    assert maps.corr[2] > 0.8 and maps.corr[3] < 0.3  # three shared directions, the rest private


def test_variates_are_paired_uncorrelated_and_unit_variance():
    xv, xa = _paired()
    maps = fit_cca(xv, xa, pca=64)
    pv, pa = maps.project(xv, "video"), maps.project(xa, "audio")
    r = pv.shape[1]
    c = np.corrcoef(np.concatenate([pv, pa], 1).T)
    np.testing.assert_allclose(c[:r, :r], np.eye(r), atol=1e-5)  # the whitening's eps: 1e-6 of a variance
    np.testing.assert_allclose(c[r:, r:], np.eye(r), atol=1e-5)
    np.testing.assert_allclose(c[:r, r:], np.diag(maps.corr), atol=1e-5)
    np.testing.assert_allclose(pv.std(0, ddof=1), 1.0, atol=1e-5)


def test_no_pair_of_directions_correlates_more_than_the_first():
    """Brute force: random direction pairs, and local perturbations of the first pair, never beat rho_1."""
    xv, xa = _paired(seed=1)
    maps = fit_cca(xv, xa, pca=64)
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(2000):
        a, b = rng.standard_normal(xv.shape[1]), rng.standard_normal(xa.shape[1])
        best = max(best, abs(np.corrcoef(xv @ a, xa @ b)[0, 1]))
    assert best <= maps.corr[0] + 1e-9
    # the first pair's directions in the raw spaces, recovered by least squares, then perturbed
    pv, pa = maps.project(xv, "video", 1)[:, 0], maps.project(xa, "audio", 1)[:, 0]
    a0 = np.linalg.lstsq(xv - xv.mean(0), pv, rcond=None)[0]
    b0 = np.linalg.lstsq(xa - xa.mean(0), pa, rcond=None)[0]
    assert np.corrcoef(xv @ a0, xa @ b0)[0, 1] == pytest.approx(maps.corr[0], abs=1e-6)
    for _ in range(200):
        a = a0 + 0.05 * np.linalg.norm(a0) * rng.standard_normal(a0.shape)
        b = b0 + 0.05 * np.linalg.norm(b0) * rng.standard_normal(b0.shape)
        assert np.corrcoef(xv @ a, xa @ b)[0, 1] <= maps.corr[0] + 1e-9


def _nuisance_set(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four classes that both streams see through unit noise (equidistant centres 2.0 apart per axis, in
    4 dims), and a crisp private nuisance per stream (4 file groups in the frames, 4 voices in the sound:
    centres of scale 4 with noise 0.3, in 4 other dims), mixed by a random rotation of the 8 dims."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)

    def view(nuisance: np.ndarray) -> np.ndarray:
        cls = 2.0 * np.eye(4)[y] + rng.standard_normal((n, 4))
        own = 4 * rng.standard_normal((4, 4))[nuisance] + 0.3 * rng.standard_normal((n, 4))
        return np.concatenate([cls, own], 1) @ np.linalg.qr(rng.standard_normal((8, 8)))[0]

    return view(rng.integers(0, 4, n)), view(rng.integers(0, 4, n)), y


def test_shared_features_find_the_classes_both_streams_see():
    """k-means on the joint whitened features often splits on one stream's crisp nuisance; on the shared
    features it finds the classes, seed after seed."""
    pytest.importorskip("faiss")
    shared_nmi, joint_nmi = [], []
    for seed in range(5):
        xv, xa, y = _nuisance_set(seed)
        ok = np.ones(len(y), dtype=bool)
        joint = np.concatenate([l2_normalise(pca_whiten(xv, 32)), l2_normalise(pca_whiten(xa, 32))], 1)
        fv, fa, corr = shared_features(xv, xa, ok, dims=3, pca=32)
        assert fv.shape == (len(y), 3) and fa.shape == (len(y), 3)
        assert corr[2] > 0.3 > corr[3] + 0.1  # three shared pairs (four classes), then noise
        shared_nmi.append(nmi(y, kmeans(np.concatenate([fv, fa], 1), 4, seed=0).labels))
        joint_nmi.append(nmi(y, kmeans(joint, 4, seed=0).labels))
    assert min(shared_nmi) > 0.6  # measured 0.70-0.77
    assert np.mean(joint_nmi) < np.mean(shared_nmi) - 0.2  # measured 0.28 against 0.73


def test_videos_without_sound_get_their_frames_projection():
    xv, xa, _ = _nuisance_set(0)
    ok = np.ones(len(xv), dtype=bool)
    ok[:50] = False
    fv, fa, _ = shared_features(xv, xa, ok, dims=3)
    assert np.all(fa[:50] == 0) and np.allclose(np.linalg.norm(fa[50:], axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(fv, axis=1), 1.0, atol=1e-5)
    # fitted on the videos with sound only: the same maps as fitting on those rows alone
    fv2, _, _ = shared_features(xv[50:], xa[50:], ok[50:], dims=3)
    np.testing.assert_allclose(fv[50:], fv2, atol=1e-6)


def test_bad_inputs_are_refused():
    xv, xa, _ = _nuisance_set(0)
    with pytest.raises(VideolabelError):
        fit_cca(xv, xa[:-1])
    with pytest.raises(VideolabelError):
        shared_features(xv, xa, np.zeros(len(xv), dtype=bool), dims=3)
    with pytest.raises(VideolabelError):
        shared_features(xv, xa, np.ones(len(xv), dtype=bool), dims=0)
