"""Each video's sound level and background, measured once at ingest (numpy only, for the decode workers).

``audio_level="video"`` (:mod:`videolabel.data.levels`) levels a collection's sound from two statistics of
each video's stored spectrograms ``log(mel + 1e-6)``:

* its **peak**, the loudest stored bin that holds sound (:func:`sound_peak`), from which the collection's
  gain follows;
* its **background**, per mel band the median of all the video's bins (:func:`band_medians`), from which its
  band's noise floor follows.

Both come from at most :data:`MAX_CLIPS` of the video's clips, evenly spaced (:func:`stat_clips`). Measured
when a run starts, they cost two passes over the cache's sound in every process of every run (0.6 ms per
clip on an idle 2-core AMD EPYC, 2 ms with other jobs on its cores: half an hour or more per process for 3
million clips). The decode worker has the
spectrograms in hand, so ingest stores them with the video's record (``level_peak``,
``level_background``), and a run reads them in a moment. Both are computed exactly as
:func:`videolabel.data.levels.video_peaks` and :func:`torch.nanquantile` (linear interpolation) compute them
from the stored float16 values, so a run levels its sound the same whether the statistics were stored or
measured (tested bit for bit).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EMPTY_BIN", "MAX_CLIPS", "band_medians", "level_stats", "sound_peak", "stat_clips"]

#: stored bins at or under this (``log(1e-6)``: padding, digital silence) hold no sound
EMPTY_BIN = math.log(1e-6) + 0.01
#: a video's statistics come from at most this many of its clips, evenly spaced (a long video's level and
#: background are steady enough; the cost stays bounded)
MAX_CLIPS = 32


def stat_clips(n_clips: int, max_clips: int = MAX_CLIPS) -> np.ndarray:
    """Which of a video's ``n_clips`` clips (``int64`` indices in the video, ascending) its statistics come
    from: all of them, or ``max_clips`` evenly spaced from the first to the last. Pure."""
    if n_clips > max_clips:
        return np.unique(np.linspace(0, n_clips - 1, max_clips).round().astype(np.int64))
    return np.arange(n_clips, dtype=np.int64)


def sound_peak(logmel: np.ndarray, empty: float = EMPTY_BIN) -> float:
    """The loudest bin of a video's spectrograms (``logmel [clips, F, T]``, as stored, or as float32) as
    float32, or ``-inf`` when none holds sound (every bin at or under ``empty``). Pure."""
    if logmel.size == 0:
        return -math.inf
    top = float(np.max(logmel).astype(np.float32))
    return top if top > empty else -math.inf


def band_medians(logmel: np.ndarray) -> np.ndarray:
    """``float32 [F]``: per band, the median of all the bins of a video's spectrograms (``logmel [clips, F,
    T]``), as :func:`torch.quantile` with ``q = 0.5`` computes it in float32 (the mean of the two middle
    values of an even count written as ``hi - (hi - lo) * 0.5``, torch's ``lerp`` at weight 0.5). Pure."""
    clips, n_mels, frames = logmel.shape
    n = clips * frames
    if n == 0:
        raise ValueError("band_medians needs at least one bin per band")
    x = logmel.astype(np.float32, copy=False)
    x = (x if clips == 1 else np.ascontiguousarray(x.transpose(1, 0, 2))).reshape(n_mels, n)
    x = np.sort(x, axis=1)  # (numpy's vectorised sort: faster than a partition on real sound, many equal bins)
    hi = x[:, n // 2]
    if n % 2:
        return np.ascontiguousarray(hi)
    lo = x[:, n // 2 - 1]
    return (hi - (hi - lo) * np.float32(0.5)).astype(np.float32)


def level_stats(logmel: np.ndarray, max_clips: int = MAX_CLIPS) -> tuple[float, list[float]]:
    """A video's ``(peak, background)`` for its record, from all its spectrograms ``logmel [clips, F, T]``:
    :func:`sound_peak` and :func:`band_medians` of the clips :func:`stat_clips` picks. Pure.

    About 1 ms of CPU for a video of 3 clips of the default 257 bands x 199 frames (its log-mel: 13 ms; AMD
    EPYC Zen 4, 2026-12-07)."""
    picked = logmel[stat_clips(len(logmel), max_clips)].astype(np.float32)
    return sound_peak(picked), band_medians(picked).tolist()
