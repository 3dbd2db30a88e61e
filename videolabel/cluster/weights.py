"""How much each stream counts in the final labels: what of one stream's clusters the other stream can see.

SeLaVi labels what the frames and the sound share: eq. 6 of the paper averages the two towers'
log-probabilities with equal weight, and the ``tiny`` recipe's final k-means (``final_labels: features``)
weighs the two streams' features equally too. When one stream holds the class and the other mostly something
of its own (the room and level of quiet recordings, a foreign soundtrack, frames too coarse to read), equal
weights let the second stream's own clusters into the labels.

A label-free sign of which stream that is: cluster each stream alone (k-means with the run's ``K``), then
predict those clusters from the *other* stream's features, on videos the predictor was not fitted on
(:func:`heldout_predictability`). Clusters of the class are partly visible from the other stream; clusters of
what one stream alone records are not. ``q_v`` is how much of the frames' clusters the sound predicts, ``q_a``
how much of the sound's clusters the frames predict (NMI, 0 to 1), and the weights
(:func:`stream_weights`) are

    w_s = 1 - (1 - q_s / q_max) (1 - q_max)^3,   q_max = max(q_v, q_a):

near 1 unless the streams share little of what they cluster on (``q_max`` well below 1), and then close to
``q_s / q_max``. The stream whose clusters the other sees more always keeps weight 1. The cube keeps short runs
of a collection whose streams both hold the class (their features not yet aligned: ``q_max`` 0.28-0.63) near
equal weights; with the plain ``1 - q_max`` they lost 2-8 NMI there (``docs/method.md``).

Not in the paper. Measured in ``docs/method.md``, "Stream weights in the final labels".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from videolabel.metrics import nmi

__all__ = ["MAX_POINTS", "SHARE_POWER", "SOLUTIONS", "StreamWeights", "heldout_predictability",
           "measure_stream_weights", "stream_weights"]

#: at most this many videos (evenly spaced) measure the weights: a million-video collection costs what 20,000 do
MAX_POINTS = 20000
#: how hard little sharing turns the weaker stream down (module docstring)
SHARE_POWER = 3
#: k-means solutions per stream whose held-out prediction is averaged: a stream with little structure of its own
#: clusters differently from seed to seed
SOLUTIONS = 3


@dataclass(frozen=True)
class StreamWeights:
    """The weights of the frames' and the sound's features (:func:`stream_weights`) and what they came from."""

    video: float
    audio: float
    q_video: float  #: NMI of the frames' own clusters to their prediction from the sound (held out)
    q_audio: float  #: NMI of the sound's own clusters to their prediction from the frames (held out)
    videos: int  #: videos (with sound) they were measured on

    def record(self) -> dict[str, Any]:
        """The summary a run logs with its final labels (``metrics.jsonl``, event ``distill``)."""
        return {"stream_weights": [round(self.video, 4), round(self.audio, 4)],
                "stream_seen": [round(self.q_video, 4), round(self.q_audio, 4)], "stream_videos": self.videos}



def stream_weights(q_video: float, q_audio: float) -> tuple[float, float]:
    """``(w_v, w_a)`` from what each stream's clusters show of themselves to the other stream (module docstring):
    ``w_s = 1 - (1 - q_s / q_max) (1 - q_max)^SHARE_POWER``; both 1 when neither stream predicts the other at
    all."""
    q_max = max(q_video, q_audio)
    if not q_max > 0.0:
        return 1.0, 1.0
    shared = (1.0 - min(q_max, 1.0)) ** SHARE_POWER
    return 1.0 - (1.0 - max(q_video, 0.0) / q_max) * shared, 1.0 - (1.0 - max(q_audio, 0.0) / q_max) * shared


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of each row of ``x``'s nearest centroid (squared Euclidean); a NaN centroid is never nearest."""
    d = (centroids * centroids).sum(1)[None, :] - 2.0 * (x @ centroids.T)
    d[:, np.isnan(centroids).any(1)] = np.inf
    return d.argmin(1)


def heldout_predictability(x: np.ndarray, labels: np.ndarray, k: int, *, splits: int = 5, seed: int = 0) -> float:
    """How well ``x`` ``[N, D]`` predicts ``labels`` ``[N]`` (integers in ``[0, k)``) on videos it was not fitted
    on: the points are halved at random, each half labelled by the nearest of the other half's class means,
    and the NMI of ``labels`` to those predictions is averaged over ``splits`` random halvings."""
    x = np.asarray(x, np.float64)
    labels = np.asarray(labels, np.int64)
    n = len(x)
    if n < 4:
        return 0.0
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(splits):
        order = rng.permutation(n)
        halves = (order[: n // 2], order[n // 2 :])
        pred = np.empty(n, np.int64)
        for fit, held in (halves, halves[::-1]):
            sums = np.zeros((k, x.shape[1]))
            np.add.at(sums, labels[fit], x[fit])
            counts = np.bincount(labels[fit], minlength=k).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                centroids = sums / counts[:, None]  # NaN for a cluster absent from this half
            pred[held] = _nearest(x[held], centroids)
        scores.append(nmi(labels, pred))
    return float(np.mean(scores))


def measure_stream_weights(video: np.ndarray, audio: np.ndarray, k: int, *, seed: int = 0,
                           max_points: int = MAX_POINTS) -> StreamWeights:
    """:class:`StreamWeights` of the videos with sound, from each stream's features ``video`` ``[N, Dv]`` and
    ``audio`` ``[N, Da]`` (per modality PCA-whitened and L2-normalised, as the ``joint`` space's blocks:
    :func:`videolabel.kmeans.pooled_features`). Each stream is clustered alone (k-means, ``k`` clusters,
    :func:`videolabel.kmeans.kmeans`, :data:`SOLUTIONS` seeds) and its clusters predicted from the other
    stream (:func:`heldout_predictability`, averaged over the solutions). Equal weights where there are fewer
    than ``4 k`` such videos. Deterministic for a given ``seed``."""
    from videolabel.kmeans import kmeans

    n = len(video)
    if n < 4 * k:
        return StreamWeights(1.0, 1.0, float("nan"), float("nan"), n)
    if n > max_points:
        keep = np.linspace(0, n - 1, max_points).round().astype(np.int64)
        video, audio = video[keep], audio[keep]
    video, audio = np.ascontiguousarray(video, np.float32), np.ascontiguousarray(audio, np.float32)
    q_v = float(np.mean([heldout_predictability(audio, kmeans(video, k, seed=seed + 2 * r).labels, k, seed=seed + r)
                         for r in range(SOLUTIONS)]))
    q_a = float(np.mean([heldout_predictability(video, kmeans(audio, k, seed=seed + 2 * r + 1).labels, k, seed=seed + r)
                         for r in range(SOLUTIONS)]))
    w_v, w_a = stream_weights(q_v, q_a)
    return StreamWeights(w_v, w_a, q_v, q_a, len(video))
