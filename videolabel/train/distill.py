"""``final_labels="features"`` (not in the paper): k-means labels on the final features, distilled into the heads.

On CPU budgets the heads' labels lag the encoders' features (docs/method.md "The tiny recipe"), so a run may
end with k-means (one seed per head) on the clip-averaged pooled features, PCA-whitened (``final_space:
joint``) or reduced to what the two modalities share (``final_space: shared``, canonical correlation
analysis) and L2-normalised per modality, as ``assign --method kmeans [--space shared]`` does
(:func:`kmeans_labels`); every head is then trained on the frozen
per-clip features to predict its labels (:func:`distill_heads`), so that ``assign`` reproduces them and
labels new videos with the same clusters.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from videolabel.models.selavi import SeLaVi
from videolabel.seeds import DISTILL, generator, seed_for
from videolabel.train import dist as D

if TYPE_CHECKING:
    from videolabel.cluster.weights import StreamWeights

__all__ = ["distill_heads", "final_space_features", "final_stream_weights", "kmeans_labels"]


def final_stream_weights(video_features: Tensor, audio_features: Tensor, has_audio: Tensor, num_clusters: int,
                         seed: int) -> StreamWeights:
    """The streams' weights in the final space (``stream_weights: auto``): :func:`videolabel.cluster.weights.
    measure_stream_weights` on the videos with sound, each modality PCA-whitened to 32 dimensions and
    L2-normalised (the ``joint`` space's blocks)."""
    from videolabel.cluster.weights import StreamWeights, measure_stream_weights
    from videolabel.kmeans import pca_whiten

    ok = has_audio.numpy().astype(bool)
    if int(ok.sum()) < 2:  # nothing to whiten the sound over (measure_stream_weights: equal weights anyway)
        return StreamWeights(1.0, 1.0, float("nan"), float("nan"), int(ok.sum()))
    # each stream's block of the joint space (pooled_features: whitened per modality, then L2-normalised), once
    xv = F.normalize(torch.from_numpy(pca_whiten(video_features.numpy(), 32)), dim=1).numpy()[ok]
    xa = F.normalize(torch.from_numpy(pca_whiten(audio_features.numpy()[ok], 32)), dim=1).numpy()
    return measure_stream_weights(xv, xa, num_clusters, seed=seed_for(seed, DISTILL, 1 << 16) % (1 << 31))


def final_space_features(video_features: Tensor, audio_features: Tensor, has_audio: Tensor, num_clusters: int,
                         space: str = "joint", weights: StreamWeights | None = None) -> np.ndarray:
    """The points the final k-means of :func:`kmeans_labels` clusters, float32 ``[N, D]``: per modality
    PCA-whitened to 32 dimensions (``space="joint"``) or the ``2 K`` top canonical variates with the other
    modality after whitening to 64 (``space="shared"``, with at least 3 videos with sound), L2-normalised
    and concatenated (:func:`videolabel.kmeans.pooled_features`, ``modality="both"``), each modality's block
    times its weight (``weights``, :func:`final_stream_weights`; None: equal)."""
    from videolabel.cluster.cca import SHARED_PCA, shared_dims
    from videolabel.kmeans import pooled_features

    w = (1.0, 1.0) if weights is None else (weights.video, weights.audio)
    if space == "shared" and int(has_audio.sum()) >= 3:
        return pooled_features(video_features, audio_features, has_audio, "both", pca=SHARED_PCA,
                               shared=shared_dims(num_clusters), weights=w)
    return pooled_features(video_features, audio_features, has_audio, "both", pca=32, weights=w)


def kmeans_labels(video_features: Tensor, audio_features: Tensor, has_audio: Tensor, num_clusters: int,
                  num_heads: int, seed: int, space: str = "joint", weights: StreamWeights | None = None) -> Tensor:
    """[H, N] labels: k-means with K = ``num_clusters`` on the videos' pooled features, one seed per head.

    The features ([N, Dv] and [N, Da], CPU) are, per modality, PCA-whitened to 32 dimensions
    (``space="joint"``, as ``assign --method kmeans``) or reduced to their ``2 K`` top canonical variates
    with the other modality after whitening to 64 (``space="shared"``, as ``assign --method kmeans
    --space shared``), then L2-normalised (:func:`videolabel.kmeans.pooled_features`, ``modality="both"``)
    and weighted (``weights``: :func:`final_stream_weights`; None: equal).
    """
    from videolabel.kmeans import kmeans

    x = final_space_features(video_features, audio_features, has_audio, num_clusters, space, weights)
    return torch.stack([torch.as_tensor(kmeans(x, num_clusters, seed=seed_for(seed, DISTILL, h) % (1 << 31)).labels,
                                        dtype=torch.int64) for h in range(num_heads)])


def distill_heads(model: SeLaVi, fv: Tensor, fa: Tensor, owner: Tensor, labels: Tensor, has_audio: Tensor, *,
                  epochs: int, weight_decay: float, seed: int, rank: int, world_size: int) -> tuple[int, float]:
    """Train every head (of both towers, or the fusion heads) on frozen per-clip features to predict ``labels``.

    Args:
        model: the run's model; only its heads' weights change.
        fv: [clips, Dv] video features of this process's clips (inference inputs).
        fa: [clips, Da] audio features of the same clips.
        owner: [clips] int64 global video index of each clip.
        labels: [H, N] the labels to learn (on any device).
        has_audio: [N] bool; clips of videos without audio do not train the audio heads.
        epochs: passes over the clips (``distill_epochs``).
        weight_decay: AdamW's (lr 1e-3).
        seed: the run seed (the clip draws come from ``(seed, DISTILL, H, rank)``).
        rank: this process's rank.
        world_size: the number of processes; the heads' gradients are averaged over them.

    Returns:
        ``(steps, fit)``: the optimiser steps taken and the fraction of (head, clip) pairs whose argmax is
        the label, in inference mode, on this process's clips (first tower).
    """
    dev = fv.device
    H, K = labels.shape[0], model.num_clusters
    y = labels.to(dev)[:, owner]  # [H, clips]
    ha = has_audio.to(dev)[owner]
    towers: list[tuple[str, Tensor, Tensor | None]] = (
        [("fused", torch.cat([fv, fa], dim=1), None)] if model.fusion else [("video", fv, None), ("audio", fa, ha)])
    params = [p for name, _, _ in towers for head in
              (model.fused_heads if name == "fused" else model.heads(name)) for p in head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=weight_decay)
    total = torch.tensor([float(len(owner))], device=dev)
    if D.is_dist():
        torch.distributed.all_reduce(total)
    n_clips = int(total.item())
    bs = min(256, max(32, n_clips // (8 * world_size)))  # >= 8 steps an epoch on small sets
    steps = epochs * max(1, math.ceil(n_clips / (bs * world_size)))
    g = generator(seed_for(seed, DISTILL, H, rank))
    for _ in range(steps):
        sel = torch.randint(len(owner), (min(bs, len(owner)),), generator=g).to(dev)
        loss = torch.zeros((), device=dev)
        for name, f, present in towers:
            logits = model.fused_forward(fv[sel], fa[sel]) if name == "fused" else model.heads_forward(f[sel], name)
            ce = F.cross_entropy(logits.reshape(-1, K), y[:, sel].reshape(-1), reduction="none").reshape(H, -1)
            w = torch.ones_like(ce) if present is None else present[sel].to(ce.dtype).expand_as(ce)
            loss = loss + (ce * w).sum() / w.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if D.is_dist():
            for p in params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= world_size
        opt.step()
    # how well the heads reproduce their labels (inference mode, this process's clips)
    model.eval()
    with torch.no_grad():
        name, f, _ = towers[0]
        logits = model.fused_forward(fv, fa) if name == "fused" else model.heads_forward(f, name)
        fit = float((logits.argmax(-1) == y).float().mean())
    model.train()
    return steps, fit
