"""What the frames and the sound share: canonical correlation analysis of the two towers' features.

SeLaVi's premise is that a class a person would name is what the picture and the sound have in common.
The trained encoders' pooled features also carry what only one stream sees - in the frames the file's
size, crop, blur and codec, in the sound the voice, the room and the level - and k-means on the
concatenated features splits on whichever varies most. Canonical correlation analysis (Hotelling 1936)
keeps only the directions along which the two streams vary *together*:

1. each modality is PCA-whitened to ``pca`` dimensions (:func:`videolabel.kmeans.pca_whiten`), so that
   its covariance is the identity;
2. the cross-covariance ``C = W_v^T W_a / (n - 1)`` of the whitened features is decomposed,
   ``C = U diag(rho) V^T``: the columns of ``W_v U`` and ``W_a V`` are the canonical variates, each pair
   correlated by ``rho_i`` (the canonical correlations, in decreasing order) and uncorrelated with every
   other pair.

Clusters that both streams see span at most ``K - 1`` directions of either stream's feature space (the
between-cluster covariance of ``K`` clusters has rank ``K - 1``), which therefore show up as the top
canonical pairs. Directions seen by one stream only have no partner and come last.

Not in the paper (its Table 5 clusters the concatenated features). Measured in ``docs/method.md``,
"What both streams share".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videolabel.errors import VideolabelError
from videolabel.kmeans import l2_normalise, pca_whitening

__all__ = ["SHARED_PCA", "CanonicalMaps", "fit_cca", "shared_dims", "shared_features"]

#: whitened dimensions per modality before the CCA of the ``shared`` space (``--space shared``,
#: ``final_space: shared``): 64 kept more of the digits than 32 on both sets of docs/method.md
SHARED_PCA = 64


def shared_dims(num_clusters: int) -> int:
    """Canonical pairs kept for ``num_clusters`` clusters: ``2 K`` (``K`` clusters span ``K - 1`` shared
    directions; the margin keeps pairs the finite sample ranks a little lower). Capped by the whitened
    dimensions in :func:`shared_features`: at ``2 K >= SHARED_PCA`` (and as many whitened dimensions in both
    modalities) the shared space is the whole whitened space, rotated, and k-means in it is k-means on the
    features whitened to ``SHARED_PCA`` dimensions."""
    return 2 * int(num_clusters)


def _whiten(x: np.ndarray, mean: np.ndarray, components: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``((x - mean) @ components) / scale`` in float64: :func:`videolabel.kmeans.pca_whitening`'s map."""
    return ((np.asarray(x, dtype=np.float64) - mean[None, :]) @ components) / scale


@dataclass(frozen=True)
class CanonicalMaps:
    """The fitted maps of :func:`fit_cca`: canonical variates of new rows are
    ``(((x - mean) @ components) / scale) @ rotation`` for each modality (float64).

    corr: ``[r]``, the canonical correlations ``rho_1 >= rho_2 >= ... >= 0`` on the fitted rows.
    """

    video: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # mean, components, scale, rotation
    audio: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    corr: np.ndarray

    def project(self, x: np.ndarray, modality: str, dims: int | None = None) -> np.ndarray:
        """Canonical variates ``[n, dims]`` (all ``r`` when ``dims`` is None) of ``x`` for ``modality``
        ("video" or "audio")."""
        mean, components, scale, rotation = self.video if modality == "video" else self.audio
        r = rotation.shape[1] if dims is None else int(min(dims, rotation.shape[1]))
        return _whiten(x, mean, components, scale) @ rotation[:, :r]


def fit_cca(xv: np.ndarray, xa: np.ndarray, *, pca: int = 32) -> CanonicalMaps:
    """Canonical correlation analysis of paired ``xv`` ``[n, Dv]`` and ``xa`` ``[n, Da]`` (row ``i`` of
    each is video ``i``), after PCA-whitening each to at most ``pca`` dimensions
    (:func:`videolabel.kmeans.pca_whitening`); ``r`` = the smaller whitened dimension. Each pair's sign
    makes the largest-magnitude loading of its frames' rotation positive (deterministic)."""
    xv, xa = np.asarray(xv), np.asarray(xa)
    if xv.ndim != 2 or xa.ndim != 2 or len(xv) != len(xa):
        raise VideolabelError(f"CCA needs paired [n, D] arrays, got shapes {xv.shape} and {xa.shape}")
    if pca < 1:
        raise VideolabelError(f"CCA needs pca >= 1, got {pca}")
    n = len(xv)
    mv = pca_whitening(xv, pca)
    ma = pca_whitening(xa, pca)
    wv, wa = _whiten(xv, *mv), _whiten(xa, *ma)
    u, rho, vt = np.linalg.svd(wv.T @ wa / (n - 1), full_matrices=False)
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    signs = np.where(signs == 0, 1.0, signs)
    return CanonicalMaps(video=(*mv, u * signs), audio=(*ma, vt.T * signs), corr=np.clip(rho, 0.0, 1.0))


def shared_features(xv: np.ndarray, xa: np.ndarray, has_audio: np.ndarray, dims: int, *,
                    pca: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-modality features restricted to what the two streams share, for k-means.

    The top ``dims`` canonical variates of each modality, each column weighted by its canonical
    correlation (a pair the streams barely share counts little), then L2-normalised per video. CCA is
    fitted on the videos with sound; a video without sound gets its frames' projection and zeros for the
    sound. Returns float32 ``(video [n, d], audio [n, d], corr [r])`` with ``d = min(dims, r)``.
    """
    ok = np.asarray(has_audio, dtype=bool)
    if dims < 1:
        raise VideolabelError(f"shared features need dims >= 1, got {dims}")
    if ok.sum() < 3:
        raise VideolabelError(f"shared features need at least 3 videos with sound, got {int(ok.sum())}")
    maps = fit_cca(np.asarray(xv)[ok], np.asarray(xa)[ok], pca=pca)
    r = int(min(dims, maps.corr.shape[0]))
    w = maps.corr[:r]
    pv = maps.project(xv, "video", r) * w
    pa = maps.project(xa, "audio", r) * w
    pa[~ok] = 0.0
    return l2_normalise(pv), l2_normalise(pa), maps.corr
