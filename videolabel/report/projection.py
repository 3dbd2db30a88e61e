"""The report's map of the collection: a 2-D PCA of the pooled encoder features, drawn as inline SVG.

Features come from the Parquet that ``videolabel assign --features`` writes (the encoders' globally
average-pooled video and audio features per video). They are pooled as ``assign --method kmeans``
pools them (:func:`videolabel.kmeans.pooled_features` with ``modality="both"``: each modality
L2-normalised, zeros for a video without sound, concatenated), but not whitened: PCA-whitening
gives every component unit variance, which would leave the two axes of a PCA arbitrary. The map is
the centred features projected on their two principal components (numpy, float64, each axis's sign
fixed so that its largest loading is positive: the same features always give the same picture).
"""

from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np
import pandas as pd

from videolabel.errors import VideolabelError

__all__ = ["pca_2d", "map_features", "colour", "svg_scatter"]


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` [N, D] centred and projected on its top two principal components: ([N, 2] float64, the
    share of the total variance each axis explains [2]). Fewer than 2 points or dimensions: zeros pad."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise VideolabelError(f"the map needs an [N, D] feature matrix with N >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise VideolabelError("the features for the map contain NaN or infinite values")
    xc = x - x.mean(axis=0, keepdims=True)
    cov = xc.T @ xc / max(1, len(x) - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:2]
    evals, evecs = np.maximum(evals[order], 0.0), evecs[:, order]
    signs = np.sign(evecs[np.abs(evecs).argmax(axis=0), np.arange(evecs.shape[1])])
    evecs = evecs * np.where(signs == 0, 1.0, signs)
    xy = xc @ evecs
    total = float(np.trace(cov))
    share = evals / total if total > 0 else np.zeros_like(evals)
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
        share = np.pad(share, (0, 2 - len(share)))
    return xy, share


def map_features(df: pd.DataFrame, feats, has_audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of the rows of ``df`` that the :class:`~videolabel.features.FeatureTable` has
    (matched on video_id, else path): ([M, D] float32, the row positions in ``df`` [M])."""
    import torch

    from videolabel.features import feature_positions
    from videolabel.kmeans import pooled_features

    key, pos = feature_positions(df, feats)
    rows = np.flatnonzero(pos >= 0)
    if len(rows) == 0:
        raise VideolabelError(f"no video of the assignments is in the features file (matched by {key})")
    sel = pos[rows]
    fv = torch.from_numpy(np.ascontiguousarray(feats.video[sel], dtype=np.float32))
    if feats.audio is not None:
        fa = torch.from_numpy(np.ascontiguousarray(feats.audio[sel], dtype=np.float32))
        ha = torch.from_numpy(np.asarray(has_audio, dtype=bool)[rows].copy())
        x = pooled_features(fv, fa, ha, "both", pca=0)
    else:
        x = pooled_features(fv, torch.zeros(len(sel), 1), torch.zeros(len(sel), dtype=torch.bool), "visual", pca=0)
    return x, rows


def colour(i: int) -> str:
    """A distinct colour for the ``i``-th category: 10 hand-picked, then hues by the golden angle."""
    base = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]
    if 0 <= i < len(base):
        return base[i]
    return f"hsl({(i * 137.508) % 360:.0f},{60 + 20 * (i % 2)}%,{40 + 15 * (i % 3)}%)"


def svg_scatter(xy: np.ndarray, cats: list[int], *, titles: list[str], links: Sequence[str | None],
                size: int = 420, pad: int = 12, cls: str = "map", label: str = "") -> str:
    """An inline SVG: point ``k`` at ``xy[k]`` filled with ``colour(cats[k])``, a tooltip ``titles[k]``
    and, where ``links[k]`` is set, a link. Every text is escaped here."""
    xy = np.asarray(xy, dtype=np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    inner = size - 2 * pad
    px = pad + (xy[:, 0] - lo[0]) / span[0] * inner
    py = size - pad - (xy[:, 1] - lo[1]) / span[1] * inner  # y up
    parts = [f"<svg class=\"{escape(cls)}\" viewBox=\"0 0 {size} {size}\" "
             f"width=\"{size}\" height=\"{size}\" role=\"img\" aria-label=\"{escape(label, quote=True)}\">",
             f"<rect x=\"0\" y=\"0\" width=\"{size}\" height=\"{size}\" fill=\"#fff\" stroke=\"#ccc\"/>"]
    for k in range(len(xy)):
        dot = (f"<circle cx=\"{px[k]:.1f}\" cy=\"{py[k]:.1f}\" r=\"3\" fill=\"{colour(cats[k])}\" "
               f"data-c=\"{int(cats[k])}\"><title>{escape(titles[k])}</title></circle>")
        link = links[k]
        parts.append(f"<a href=\"{escape(link, quote=True)}\">{dot}</a>" if link else dot)
    parts.append("</svg>")
    return "".join(parts)
