"""Label-free choice of a clustering head by how well its two modalities agree.

SeLaVi trains the video head h and the audio head h of every head pair to predict one labelling (the
cross-modal objective, eq. 5, with the shared labels of eq. 6). Where training worked, the clusters
that the frames alone give (argmax of head h's video classifier) and those that the sound alone gives
(argmax of its audio classifier) coincide up to noise; where a head latched onto something only one
modality sees (a memorised instance, a nuisance), they do not. The agreement between the two is a
score that needs no ground truth.

It is measured as the NMI (eq. 8) between the two single-modality partitions over the videos that have
both streams: chance-corrected enough to ignore a head that puts most videos into one cluster, which
raw agreement would reward.

What it was measured to do (docs/method.md, fifth session): on 27 trained 3-head runs of 1,000
AV-Digits videos, the head chosen this way scored 55.0 mean NMI to the digit on those videos against
53.3 for head 0 and 55.5 for the best head in hindsight (better than head 0 on 10 runs, worse on 3);
on 900 videos of unseen speakers, 69.8 against 68.5 and 70.0 (17 runs). Among seeds of one setting,
the run with the highest score was the best run in 7 of 7 groups of 2-4 seeds. Across settings it is
not reliable: a model that memorised its training videos can agree with itself on them (a 120-epoch
run: 0.67 score, 41.9 NMI).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from videolabel.metrics import nmi

__all__ = ["MISMATCH_FLAG", "audio_visual_nmi", "choose_head", "consensus_head", "consensus_scores",
           "kmeans_objective", "modality_mismatch", "objective_head"]

#: ``av_mismatch`` at or above this: the towers put the video in different clusters more likely than not
#: (an unrelated soundtrack, a picture that says nothing); docs/method.md "Real collections"
MISMATCH_FLAG = 0.5


def audio_visual_nmi(video_clusters: Any, audio_clusters: Any, has_audio: Any | None = None) -> list[float]:
    """Per head, the NMI (eq. 8) between the frames-only and the audio-only cluster of each video.

    Args:
        video_clusters: [H, N] integer clusters from each head's video classifier (argmax).
        audio_clusters: [H, N] integer clusters from the same heads' audio classifiers.
        has_audio: None (every video has audio) or [N] bools; videos without audio are left out.

    Returns:
        H floats in [0, 1]; 0.0 for every head when fewer than two videos have audio.

    Raises:
        ValueError: shapes that do not match.
    """
    v = np.asarray(video_clusters)
    a = np.asarray(audio_clusters)
    if v.ndim != 2 or v.shape != a.shape:
        raise ValueError(f"video and audio clusters must both be [H, N], got {v.shape} and {a.shape}")
    ok = np.ones(v.shape[1], dtype=bool) if has_audio is None else np.asarray(has_audio, dtype=bool)
    if ok.shape != (v.shape[1],):
        raise ValueError(f"has_audio must be [N] = [{v.shape[1]}], got {ok.shape}")
    if ok.sum() < 2:
        return [0.0] * v.shape[0]
    return [float(nmi(v[h][ok], a[h][ok])) for h in range(v.shape[0])]


def choose_head(scores: list[float]) -> int:
    """The head with the highest audio-visual agreement score; the lowest index among ties.

    Args:
        scores: one score per head (:func:`audio_visual_nmi`).

    Raises:
        ValueError: no heads, or a score that is not finite.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("choose_head needs one score per head")
    if not np.isfinite(s).all():
        raise ValueError(f"scores must be finite, got {scores}")
    return int(np.argmax(s))


def consensus_scores(clusters: Any) -> list[float]:
    """Per head, the mean NMI (eq. 8) of its partition to every other head's; ``[1.0]`` for a single head.

    Args:
        clusters: ``[H, N]`` integer cluster of each of N videos under each head.

    Raises:
        ValueError: not an ``[H, N]`` array with at least one head.
    """
    c = np.asarray(clusters)
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError("consensus needs an [H, N] array of clusters")
    h = c.shape[0]
    if h == 1:
        return [1.0]
    return [float(np.mean([nmi(c[i], c[j]) for j in range(h) if j != i])) for i in range(h)]


def consensus_head(clusters: Any) -> int:
    """The head whose partition agrees most with the other heads' (the medoid partition of the ensemble:
    the highest :func:`consensus_scores`); the lowest index among ties, 0 for a single head. Not in the paper.

    The label-free choice for runs whose heads differ by the seed of their labels (the tiny recipe's final
    k-means, ``final_labels: features``; ``assign --head auto`` there): an outlier head, e.g. one that
    follows something both streams share besides the classes, is the one the others agree with least
    (docs/method.md, "The head choice").

    Args:
        clusters: ``[H, N]`` integer cluster of each of N videos under each head.
    """
    return int(np.argmax(consensus_scores(clusters)))


def kmeans_objective(features: Any, clusters: Any) -> list[float]:
    """Per head, the k-means objective of its partition: ``sum_i ||x_i - mu_{c_i}||^2`` over the videos,
    ``mu_c`` the mean of cluster ``c``'s points (the within-cluster sum of squares that Lloyd's algorithm
    lowers at every step; MacQueen 1967, Lloyd 1982).

    Args:
        features: ``[N, D]`` points the partitions are judged in.
        clusters: ``[H, N]`` integer cluster of each point under each head.

    Raises:
        ValueError: shapes that do not match, or no heads.
    """
    x = np.asarray(features, dtype=np.float64)
    c = np.asarray(clusters)
    if x.ndim != 2 or c.ndim != 2 or c.shape[0] == 0 or c.shape[1] != x.shape[0]:
        raise ValueError(f"need features [N, D] and clusters [H, N], got {x.shape} and {c.shape}")
    out = []
    total = float((x * x).sum())
    for part in c:
        _, inv = np.unique(part, return_inverse=True)
        sums = np.zeros((int(inv.max()) + 1, x.shape[1]))
        np.add.at(sums, inv, x)
        # sum ||x - mu||^2 = sum ||x||^2 - sum_c ||S_c||^2 / n_c (every cluster in inv has n_c >= 1)
        out.append(total - float(((sums * sums).sum(axis=1) / np.bincount(inv)).sum()))
    return out


def objective_head(features: Any, clusters: Any) -> int:
    """The head whose partition has the lowest :func:`kmeans_objective` in ``features``; the lowest index
    among ties. Not in the paper.

    The label-free choice for runs whose heads hold k-means restarts of the final features (the tiny
    recipe's ``final_labels: features``; ``assign --head auto`` there): of several k-means solutions, keep
    the one with the lowest objective, as any k-means with restarts does. A restart stuck in a local
    minimum that merges two classes and splits a third has a higher objective, even where most restarts
    are stuck in it and the medoid (:func:`consensus_head`) is one of them (docs/method.md, "The head
    choice: the k-means objective").
    """
    obj = np.asarray(kmeans_objective(features, clusters))
    best = obj.min()
    return int(np.flatnonzero(obj <= best + 1e-9 * max(1.0, abs(best)))[0])


def modality_mismatch(log_p_video: torch.Tensor, log_p_audio: torch.Tensor) -> torch.Tensor:
    """Per video, how much the frames-only and the audio-only cluster distributions of one head disagree.

    Not in the paper: SeLaVi trains both towers to predict the same label (eq. 5, with the shared labels
    of eq. 6), so on a video whose sound is about its picture the two distributions overlap, and on one
    whose sound is unrelated (another video's soundtrack, noise, silence) each tower predicts its own
    content. The score is the squared Hellinger distance ``1 - sum_k sqrt(p_v(k) p_a(k))`` (one minus the
    Bhattacharyya coefficient): 0 for identical distributions, 1 for disjoint ones, symmetric, and bounded
    even where one tower is certain and the other is not.

    Args:
        log_p_video: [..., K] log-probabilities (or logits: each row is normalised here) of the video head.
        log_p_audio: [..., K] the same head's audio log-probabilities (or logits).

    Returns:
        [...] float tensor in [0, 1].

    Raises:
        ValueError: shapes that do not match.
    """
    if log_p_video.shape != log_p_audio.shape or log_p_video.ndim < 1:
        raise ValueError(f"video and audio log-probabilities must have one shape [..., K], got "
                         f"{tuple(log_p_video.shape)} and {tuple(log_p_audio.shape)}")
    lv = torch.log_softmax(log_p_video.double(), dim=-1)
    la = torch.log_softmax(log_p_audio.double(), dim=-1)
    bc = torch.logsumexp(0.5 * (lv + la), dim=-1).exp()
    return (1.0 - bc).clamp(0.0, 1.0).to(log_p_video.dtype if log_p_video.is_floating_point() else torch.float32)
