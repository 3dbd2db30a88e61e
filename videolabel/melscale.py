"""The HTK mel scale and its triangular filterbank (numpy only; imports nothing of videolabel).

A leaf module, so that :meth:`videolabel.config.IngestConfig.validate` can check the filterbank without
importing the ingest stage (:mod:`videolabel.ingest.logmel` computes the spectrograms with it).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["empty_mel_filters", "hz_to_mel", "mel_filterbank", "mel_to_hz"]


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """Triangular HTK mel filterbank, float32 ``[n_fft // 2 + 1, n_mels]`` (torchaudio layout)."""
    f_max = sample_rate / 2.0 if f_max is None else f_max
    n_freqs = n_fft // 2 + 1
    all_freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
    m_pts = np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts = mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up)).astype(np.float32)
    fb.setflags(write=False)
    return fb


def empty_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> list[int]:
    """Indices of the filters of :func:`mel_filterbank` with no non-zero weight."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels)
    return [int(i) for i in np.flatnonzero(fb.max(axis=0) <= 0)]
