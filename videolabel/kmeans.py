"""k-means with faiss: the baseline of the paper's Table 5 (k-means on pooled encoder features).

``kmeans`` clusters an ``[N, D]`` float32 matrix with :class:`faiss.Kmeans` (on the GPU when faiss
was built with GPU support and sees one, otherwise on the CPU) and returns hard labels, the squared
Euclidean distance of each point to its own centroid, the centroids and the inertia (the sum of
those squared distances). ``spherical=True`` L2-normalises the features first and keeps the
centroids on the unit sphere (cosine k-means).

``assign_confidence`` turns distances to all centroids into a soft assignment (softmax of the
negative squared distance over a temperature) so that k-means outputs carry the same
``confidence`` / ``margin`` columns as SeLaVi assignments.

faiss is an optional dependency: ``pip install videolabel[cpu]`` (faiss-cpu) or
``videolabel[gpu]`` (faiss-gpu).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from videolabel.errors import VideolabelError

if TYPE_CHECKING:
    import torch

__all__ = ["KMeansResult", "kmeans", "assign_confidence", "squared_distances", "faiss_num_gpus", "pca_whiten",
           "pca_whitening", "l2_normalise"]


@dataclass(frozen=True)
class KMeansResult:
    """Result of :func:`kmeans`.

    labels:    int64 ``[N]``, the index of each point's nearest centroid (0 .. k-1).
    distances: float32 ``[N]``, squared Euclidean distance of each point to its own centroid
               (of the L2-normalised point when ``spherical``).
    centroids: float32 ``[k, D]``.
    inertia:   float, ``distances.sum()`` (the k-means objective at the returned centroids).
    """

    labels: np.ndarray
    distances: np.ndarray
    centroids: np.ndarray
    inertia: float


def _import_faiss():
    try:
        import faiss
    except ImportError as exc:
        raise VideolabelError(
            f"k-means needs faiss, which is not importable ({exc}): install videolabel[cpu] or videolabel[gpu]"
        ) from None
    return faiss


def faiss_num_gpus() -> int:
    """Number of GPUs faiss can use (0 for faiss-cpu or no visible GPU)."""
    faiss = _import_faiss()
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get is not None else 0
    except Exception:  # noqa: BLE001 - a broken CUDA set-up means "no GPU" here
        return 0


def _as_matrix(features: np.ndarray, name: str = "features") -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2:
        raise VideolabelError(f"{name} must be a 2-D [N, D] array, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise VideolabelError(f"{name} is empty (shape {x.shape})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise VideolabelError(f"{name} contains NaN or infinite values")
    return x


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32, contiguous."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def kmeans(
    features: np.ndarray,
    k: int,
    *,
    niter: int = 50,
    nredo: int = 3,
    seed: int = 0,
    gpu: bool | None = None,
    spherical: bool = False,
    init: str = "k-means++",
) -> KMeansResult:
    """Cluster ``features`` ``[N, D]`` into ``k`` clusters with faiss k-means.

    ``nredo`` runs are made from different seeded initialisations and the one with the lowest
    objective is kept. ``init="k-means++"`` (default) seeds each run with k-means++ (D^2 sampling,
    on at most 256 points per centroid) and lets faiss iterate; ``init="random"`` is faiss's own
    initialisation (k random points), which often merges well-separated clusters for small k.
    ``gpu=None`` uses the GPU(s) when faiss sees any, ``False`` forces the CPU, ``True`` requires a GPU
    (error when faiss has none). Deterministic for a given ``seed`` on the CPU. ``spherical``
    L2-normalises the points and the centroids (cosine k-means).
    """
    faiss = _import_faiss()
    x = _as_matrix(features)
    n, d = x.shape
    k = int(k)
    if k < 1:
        raise VideolabelError(f"k-means needs k >= 1, got k={k}")
    if k > n:
        raise VideolabelError(f"k-means with k={k} clusters needs at least {k} points, got {n}")
    if niter < 1 or nredo < 1:
        raise VideolabelError(f"k-means needs niter >= 1 and nredo >= 1, got niter={niter}, nredo={nredo}")
    if spherical:
        x = l2_normalise(x)
    n_gpus = faiss_num_gpus() if gpu is not False else 0
    if gpu is True and n_gpus == 0:
        raise VideolabelError("k-means on the GPU was asked for but faiss sees no GPU (install videolabel[gpu])")
    if init not in ("k-means++", "random"):
        raise VideolabelError(f"unknown k-means init {init!r} (use k-means++ or random)")
    use_gpu = bool(n_gpus > 0)
    if init == "random":
        km = faiss.Kmeans(d, k, niter=int(niter), nredo=int(nredo), seed=int(seed),
                          spherical=bool(spherical), gpu=use_gpu, verbose=False,
                          min_points_per_centroid=1)
        km.train(x)
        return _finish(faiss, x, km.centroids)
    best: KMeansResult | None = None
    for r in range(int(nredo)):
        rng = np.random.default_rng([int(seed), r])
        start = _kmeanspp(x, k, rng, max_points=256 * k)
        if spherical:
            start = l2_normalise(start)
        km = faiss.Kmeans(d, k, niter=int(niter), nredo=1, seed=int(seed) + r,
                          spherical=bool(spherical), gpu=use_gpu, verbose=False,
                          min_points_per_centroid=1)
        km.train(x, init_centroids=start)
        result = _finish(faiss, x, km.centroids)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


def _finish(faiss, x: np.ndarray, centroids: np.ndarray) -> KMeansResult:
    """Final hard assignment of every point against ``centroids`` (exact search)."""
    n, d = x.shape
    centroids = np.ascontiguousarray(centroids, dtype=np.float32).reshape(-1, d)
    index = faiss.IndexFlatL2(d)
    index.add(centroids)
    dist, idx = index.search(x, 1)
    labels = idx[:, 0].astype(np.int64)
    distances = np.maximum(dist[:, 0], 0.0).astype(np.float32)
    return KMeansResult(labels=labels, distances=distances, centroids=centroids,
                        inertia=float(distances.astype(np.float64).sum()))


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator, *, max_points: int) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on a random subsample of at most ``max_points``."""
    n = x.shape[0]
    sample = x if n <= max_points else x[np.sort(rng.choice(n, size=max_points, replace=False))]
    m = sample.shape[0]
    s64 = sample.astype(np.float64)
    sq = (s64 * s64).sum(1)
    chosen = [int(rng.integers(m))]
    d2 = np.maximum(sq - 2.0 * s64 @ s64[chosen[0]] + sq[chosen[0]], 0.0)
    for _ in range(1, k):
        total = d2.sum()
        if total > 0:
            j = int(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right"))
            j = min(j, m - 1)
        else:  # every point sits on a chosen centre: pick any other one
            rest = np.setdiff1d(np.arange(m), chosen)
            j = int(rng.choice(rest))
        chosen.append(j)
        d2 = np.minimum(d2, np.maximum(sq - 2.0 * s64 @ s64[j] + sq[j], 0.0))
    return np.ascontiguousarray(sample[chosen], dtype=np.float32)


def squared_distances(features: np.ndarray, centroids: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """Squared Euclidean distances ``[N, k]`` (float32, >= 0) of every point to every centroid."""
    x = _as_matrix(features)
    c = _as_matrix(centroids, "centroids")
    if c.shape[1] != x.shape[1]:
        raise VideolabelError(f"features have {x.shape[1]} dimensions but centroids have {c.shape[1]}")
    c64 = c.astype(np.float64)
    cc = (c64 * c64).sum(1)
    out = np.empty((x.shape[0], c.shape[0]), dtype=np.float32)
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk].astype(np.float64)
        d2 = (xb * xb).sum(1, keepdims=True) - 2.0 * xb @ c64.T + cc[None, :]
        out[s:s + chunk] = np.maximum(d2, 0.0)
    return out


def assign_confidence(
    features: np.ndarray,
    centroids: np.ndarray,
    *,
    temperature: float | None = None,
    spherical: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft confidence of the nearest-centroid assignment: ``(prob, margin)``, both float32 ``[N]``.

    ``p_i(j) = softmax_j(-||x_i - c_j||^2 / T)``; ``prob`` is ``p_i`` of the nearest centroid (the
    hard k-means label), ``margin`` the difference between the largest and second-largest
    probability (``margin = prob = 1`` when k == 1).
    The default temperature ``T`` is the median over points of the squared distance to the
    nearest centroid (scale-free: a typical point is at ``-1`` in units of ``T``); when that is 0
    (points on their centroids) the median of all squared distances is used, then 1.
    ``spherical`` L2-normalises the features first (use it for centroids of a spherical k-means).
    """
    x = _as_matrix(features)
    if spherical:
        x = l2_normalise(x)
    d2 = squared_distances(x, centroids).astype(np.float64)
    nearest = d2.min(axis=1)
    if temperature is None:
        t = float(np.median(nearest))
        if not t > 0:
            t = float(np.median(d2))
        if not t > 0:
            t = 1.0
    else:
        t = float(temperature)
        if not t > 0:
            raise VideolabelError(f"temperature must be > 0, got {temperature}")
    logits = -(d2 - nearest[:, None]) / t  # max logit is 0: stable softmax
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    if p.shape[1] == 1:
        prob = p[:, 0]
        margin = prob.copy()
    else:
        top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
        prob = top2[:, 1]
        margin = top2[:, 1] - top2[:, 0]
    return prob.astype(np.float32), margin.astype(np.float32)


def pca_whitening(features: np.ndarray, dims: int, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The map of :func:`pca_whiten`, to apply to other rows too: ``(mean [D], components [D, dims],
    scale [dims])``, where whitened = ``((x - mean) @ components) / scale`` (float64 throughout)."""
    x = _as_matrix(features).astype(np.float64)
    n, d = x.shape
    if dims < 1:
        raise VideolabelError(f"PCA needs dims >= 1, got {dims}")
    if n < 2:
        raise VideolabelError(f"PCA whitening needs at least 2 points, got {n}")
    dims = int(min(dims, d, n - 1))
    mean = x.mean(axis=0)
    xc = x - mean[None, :]
    cov = xc.T @ xc / (n - 1)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    order = np.argsort(evals)[::-1][:dims]
    evals, evecs = evals[order], evecs[:, order]
    signs = np.sign(evecs[np.abs(evecs).argmax(axis=0), np.arange(dims)])
    evecs = evecs * np.where(signs == 0, 1.0, signs)
    return mean, evecs, np.sqrt(np.maximum(evals, 0.0) + eps)


def pca_whiten(features: np.ndarray, dims: int, eps: float = 1e-6) -> np.ndarray:
    """Project ``[N, D]`` features on their top ``dims`` principal components and whiten them.

    ``(x - mean) @ V[:, :dims] / sqrt(eigenvalue)``: centred, decorrelated, unit variance per
    component (the preprocessing of k-means on deep features in DeepCluster, Caron et al. 2018,
    section 3.2). ``dims`` is capped at ``min(D, N - 1)``. Components are ordered by decreasing
    variance, each with the sign that makes its largest-magnitude loading positive (deterministic).
    Returns float32 ``[N, dims]``. Computed in float64 by an eigendecomposition of the D x D covariance.
    """
    mean, components, scale = pca_whitening(features, dims, eps)
    xc = _as_matrix(features).astype(np.float64) - mean[None, :]
    out = (xc @ components) / scale
    return np.ascontiguousarray(out, dtype=np.float32)


def pooled_features(fv: torch.Tensor, fa: torch.Tensor, has_audio: torch.Tensor, modality: str = "both", *,
                    pca: int = 0, shared: int = 0, weights: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Global-average-pooled encoder features for k-means: per modality PCA-whitened to ``pca`` dims
    (0: not) then L2-normalised, and concatenated (both; zeros for a video without audio).

    Why whiten: pooled post-ReLU features share a large common component, and raw L2-normalised
    features let k-means split on it. On 1,000 AV-Digits videos (tiny preset, 20 epochs) k-means NMI
    to the digit was 17.6 (L2 only) / 38.0 (whitened to 32 dims) on trained features and 23.6 / 16.7 on
    randomly initialised ones: without whitening the trained encoder looked worse than a random one.

    ``shared > 0`` (the ``shared`` space): instead of the whitened features, each modality's top
    ``shared`` canonical variates with the other modality (CCA after whitening to ``pca`` dims,
    :func:`videolabel.cluster.cca.shared_features`): only what the frames and the sound vary in together.
    Needs both modalities' features even for ``modality="visual"`` or ``"audio"``. ``weights``: the frames'
    and the sound's block are multiplied by these after the normalisation (``modality="both"``;
    :mod:`videolabel.cluster.weights`)."""
    import torch
    import torch.nn.functional as F

    if shared > 0:
        from videolabel.cluster.cca import shared_features

        sv, sa, _ = shared_features(fv.numpy(), fa.numpy(), has_audio.numpy().astype(bool), shared,
                                    pca=pca if pca > 0 else 32)
        fv, fa = torch.from_numpy(sv), torch.from_numpy(sa)
    elif pca > 0:
        fv = torch.from_numpy(pca_whiten(fv.numpy(), pca))
        ok = has_audio.numpy().astype(bool)
        w = torch.from_numpy(pca_whiten(fa.numpy()[ok], pca)) if ok.sum() >= 2 else None
        wa = torch.zeros(fa.shape[0], min(pca, fa.shape[1]) if w is None else w.shape[1], dtype=torch.float32)
        if w is not None:
            wa[torch.from_numpy(ok)] = w
        fa = wa
    fv = F.normalize(fv, dim=1)
    fa = F.normalize(fa, dim=1) * has_audio[:, None].to(fa.dtype)
    if modality == "visual":
        f = fv
    elif modality == "audio":
        f = fa
    else:  # (times 1.0 is exact: equal weights are the plain concatenation, bit for bit)
        f = torch.cat([fv * float(weights[0]), fa * float(weights[1])], dim=1)
    return np.ascontiguousarray(f.numpy().astype(np.float32))
