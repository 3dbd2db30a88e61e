"""What a training step minimises, and the cluster-size figures of a label solve (pure functions).

The loss is the paper's cross-entropy of every head of both encoders against the current labels
(section 3, eq. 2 with the labels fixed); a video without audio contributes no audio term.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cluster_size_entropy", "cluster_sizes", "clusters_used", "selavi_loss"]


def selavi_loss(out: Mapping[str, Tensor], y: Tensor, has_audio: Tensor) -> Tensor:
    """The training loss of one batch: the mean over the present towers of each tower's head-mean CE.

    Args:
        out: the model's outputs: ``video_logits`` and/or ``audio_logits`` [H, B, K] (the towers trained),
            or ``fused_logits`` [H, B, K] (``modalities="concat"``: one head set on [f_v; f_a]).
        y: [H, B] labels of head h for the batch's videos.
        has_audio: [B] bool; the audio CE is averaged over the videos with audio only.

    Returns:
        ``0.5 mean_h CE_video + 0.5 mean_h CE_audio`` with both towers, the one tower's ``mean_h CE``
        otherwise (a 0-d tensor with gradients).
    """
    H, B = y.shape
    losses: list[Tensor] = []
    if "fused_logits" in out:
        losses.append(F.cross_entropy(out["fused_logits"].float().reshape(H * B, -1), y.reshape(-1)))
    elif "video_logits" in out:
        losses.append(F.cross_entropy(out["video_logits"].float().reshape(H * B, -1), y.reshape(-1)))
    if "audio_logits" in out:
        la = out["audio_logits"].float().reshape(H * B, -1)
        ce = F.cross_entropy(la, y.reshape(-1), reduction="none").reshape(H, B)
        w = has_audio.to(ce.dtype).expand(H, B)
        losses.append((ce * w).sum() / w.sum().clamp_min(1.0))
    if not losses:
        raise ValueError("selavi_loss needs video_logits, audio_logits or fused_logits")
    total = losses[0]
    for term in losses[1:]:
        total = total + term
    return total / len(losses)


def cluster_sizes(labels: np.ndarray, num_clusters: int) -> np.ndarray:
    """[H, K] fraction of the N videos in each cluster, per head, from [H, N] labels."""
    return np.stack([np.bincount(row, minlength=num_clusters) for row in labels]) / labels.shape[1]


def cluster_size_entropy(sizes: np.ndarray) -> np.ndarray:
    """[H] entropy of each head's cluster sizes ([H, K] fractions) over log K: 1 = equal sizes, 0 = one cluster."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(sizes > 0, sizes * np.log(sizes), 0.0), axis=1)
    return ent / math.log(sizes.shape[1])


def clusters_used(sizes: np.ndarray) -> np.ndarray:
    """[H] number of non-empty clusters of each head ([H, K] fractions)."""
    return np.asarray([(row > 0).sum() for row in sizes])
