"""A label-free choice of the number of clusters K, from what the two modalities share (not in the paper).

The paper sets K to the true number of classes, which a user does not know. SeLaVi's premise gives a
score that needs no labels: a cluster a person would name is one that the frames alone *and* the sound
alone can tell. A candidate partition of the videos (k-means on the joint features at some K) is scored
by how much the frames and the sound agree about it on videos neither has seen:

1. a linear probe from the frames' features and one from the sound's features are each trained to
   predict the candidate clusters, by two-fold cross-validation (each video's prediction comes from the
   probe trained on the other half);
2. the score is the **chance-adjusted mutual information** between the two probes' predictions, in
   nats: ``I(v; a) - E[I(v; a)]`` under random permutations (the correction of the AMI, eq. 8 of
   Vinh et al. 2010, without its normalisation).

Below the true K, merged classes carry less information (at most log K). Above it, k-means splits
classes by what only one modality sees (the handwriting, the speaker): the other modality's probe cannot
predict the split on held-out videos, so the shared information stops growing and the split clusters'
probes grow noisier. The score is highest near the number of classes both modalities see; of the
candidates within ``tol`` of the best score, :func:`choose_k` takes the smallest (the plateau above the
true K is flat within noise). Measured in ``docs/method.md``, "Choosing K without labels".

Unnormalised mutual information is used on purpose: the NMI or AMI between the two predictions is higher
for a coarser partition that both modalities predict well (K = 2 is easy to agree on), so it prefers too
small a K.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from videolabel.metrics import _expected_mutual_info, _mutual_info, _table

__all__ = ["AUTO_K", "PROBE_MAX_VIDEOS", "adjusted_mutual_info_nats", "choose_k", "cross_modal_information",
           "probe_predictions"]

#: candidate K of ``--k auto``: a geometric grid from 2 to 64 (about 25 % apart)
AUTO_K: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64)
#: the probes of one candidate are trained on at most this many videos (a random subset)
PROBE_MAX_VIDEOS = 20000


def adjusted_mutual_info_nats(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float:
    """``I(a; b) - E[I(a; b)]`` in nats, the expectation over random permutations with the same cluster
    sizes (the hypergeometric model of the AMI; Vinh, Epps and Bailey 2010, eq. 24-25)."""
    t = _table(a, b)
    n = int(t.sum())
    if n == 0:
        return 0.0
    return float(_mutual_info(t) - _expected_mutual_info(t.sum(1), t.sum(0), n))


def probe_predictions(x: torch.Tensor, labels: torch.Tensor, k: int, *, folds: int = 2, steps: int = 200,
                      weight_decay: float = 0.1, seed: int = 0) -> torch.Tensor:
    """Cross-validated predictions of a linear probe (softmax regression) from ``x`` [N, D] to ``labels`` [N].

    Each video's prediction comes from a probe trained on the other folds (full-batch AdamW, lr 0.01,
    ``steps`` steps; inputs standardised on the training folds). Folds are drawn from ``seed``, so two
    calls with the same seed and N split the videos the same way (the frames' and the sound's probes
    then predict each video from the same training videos)."""
    n = x.shape[0]
    if n < 2 * folds:
        return labels.clone()
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=g)
    out = torch.empty(n, dtype=torch.int64)
    x = x.float()
    for f in range(folds):
        test = order[f::folds]
        train = torch.cat([order[j::folds] for j in range(folds) if j != f])
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        xt, yt = (x[train] - mu) / sd, labels[train]
        with torch.random.fork_rng(devices=[]):  # the probe's seeded init leaves the caller's RNG alone
            torch.manual_seed(int(seed) * 1000 + f)
            probe = torch.nn.Linear(x.shape[1], k)
        opt = torch.optim.AdamW(probe.parameters(), lr=1e-2, weight_decay=weight_decay)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(probe(xt), yt).backward()
            opt.step()
        with torch.no_grad():
            out[test] = probe((x[test] - mu) / sd).argmax(1)
    return out


def cross_modal_information(video: torch.Tensor, audio: torch.Tensor, labels: torch.Tensor, k: int, *,
                            seed: int = 0, max_videos: int = PROBE_MAX_VIDEOS) -> float:
    """The score of one candidate partition: chance-adjusted mutual information (nats) between the
    cross-validated predictions of a frames-only and a sound-only probe of ``labels`` (see the module).

    Args:
        video: [N, Dv] the videos' frame features (e.g. PCA-whitened pooled features).
        audio: [N, Da] their sound features (videos without audio left out by the caller).
        labels: [N] int64 candidate clusters in [0, k).
        k: the number of candidate clusters.
        seed: folds, probe initialisation and the subset of videos.
        max_videos: at most this many videos (a random subset) train and test the probes.
    """
    n = labels.shape[0]
    if video.shape[0] != n or audio.shape[0] != n:
        raise ValueError(f"video {tuple(video.shape)}, audio {tuple(audio.shape)} and labels {tuple(labels.shape)} "
                         "must describe the same videos")
    if n > max_videos:
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 1))[:max_videos]
        video, audio, labels = video[keep], audio[keep], labels[keep]
    pv = probe_predictions(video, labels, k, seed=seed)
    pa = probe_predictions(audio, labels, k, seed=seed)
    return adjusted_mutual_info_nats(pv.numpy(), pa.numpy())


def choose_k(scores: Mapping[int, float], tol: float = 0.05) -> int:
    """The smallest K whose score is within ``tol`` (a fraction) of the best score.

    Raises:
        ValueError: no candidates, a score that is not finite, or ``tol`` outside [0, 1).
    """
    if not scores:
        raise ValueError("choose_k needs at least one candidate")
    if not 0.0 <= tol < 1.0:
        raise ValueError(f"tol must be in [0, 1), got {tol}")
    if not all(math.isfinite(float(s)) for s in scores.values()):
        raise ValueError(f"scores must be finite, got {dict(scores)}")
    best = max(float(s) for s in scores.values())
    bar = best - tol * abs(best)
    return min(int(k) for k, s in scores.items() if float(s) >= bar)
