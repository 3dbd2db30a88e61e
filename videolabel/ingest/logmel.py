"""Log-mel spectrograms (numpy only, so that decode workers need no torch).

The filterbank is the HTK-scale triangular filterbank of ``torchaudio.functional.melscale_fbanks``
(``norm=None``, ``mel_scale="htk"``, 0 Hz to Nyquist), re-implemented here and tested equal to it.
The STFT uses a periodic Hann window of ``win`` samples zero-padded to ``n_fft`` (the zero padding
refines the frequency grid so that no mel band is empty), no centring: spectrogram frame ``j``
covers samples ``[j * hop, j * hop + win)`` of the window, so ``mel_frames`` frames need
``(mel_frames - 1) * hop + win`` samples (:func:`window_samples`).

Stored value: ``log(mel_power + log_eps)`` as float16, shape ``[n_mels, mel_frames]``.
"""

from __future__ import annotations

import functools

import numpy as np

from videolabel.config import IngestConfig
from videolabel.melscale import empty_mel_filters, mel_filterbank


def hop_samples(cfg: IngestConfig) -> int:
    return int(round(cfg.hop_ms * cfg.sample_rate / 1000.0))


def win_samples(cfg: IngestConfig) -> int:
    return int(round(cfg.win_ms * cfg.sample_rate / 1000.0))


def window_samples(cfg: IngestConfig) -> int:
    """Number of PCM samples behind one spectrogram."""
    return (cfg.mel_frames - 1) * hop_samples(cfg) + win_samples(cfg)


def filterbank_for(cfg: IngestConfig) -> np.ndarray:
    return mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels)


def empty_filters(cfg: IngestConfig) -> list[int]:
    """Indices of mel filters with no non-zero weight (must be empty for a valid config)."""
    return empty_mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels)


@functools.lru_cache(maxsize=8)
def hann_window(win: int) -> np.ndarray:
    """The periodic Hann window of ``win`` samples, float32 (as ``torch.hann_window``)."""
    n = np.arange(win, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / win)).astype(np.float32)


def log_mel(wave: np.ndarray, cfg: IngestConfig) -> np.ndarray:
    """``wave`` float32 ``[K, window_samples(cfg)]`` -> float16 ``[K, n_mels, mel_frames]``."""
    wave = np.asarray(wave, np.float32)
    if wave.ndim == 1:
        wave = wave[None]
    hop, win, n_frames = hop_samples(cfg), win_samples(cfg), cfg.mel_frames
    need = window_samples(cfg)
    if wave.shape[1] < need:
        wave = np.pad(wave, ((0, 0), (0, need - wave.shape[1])))
    idx = hop * np.arange(n_frames)[:, None] + np.arange(win)[None, :]  # [F, win]
    frames = wave[:, idx] * hann_window(win)  # [K, F, win]
    spec = np.fft.rfft(frames, n=cfg.n_fft, axis=-1)
    power = np.ascontiguousarray(spec.real, np.float32) ** 2 + np.ascontiguousarray(spec.imag, np.float32) ** 2
    fb = filterbank_for(cfg)
    # one 2-D product (BLAS); a stacked 3-D matmul is ~15x slower in numpy
    mel = (power.reshape(-1, power.shape[-1]) @ fb).reshape(power.shape[0], n_frames, fb.shape[1])  # [K, F, n_mels]
    out = np.log(mel + np.float32(cfg.log_eps)).transpose(0, 2, 1)
    return np.ascontiguousarray(out, dtype=np.float16)


def band_of_frequency(cfg: IngestConfig, hz: float) -> int:
    """Index of the mel filter with the largest weight at the FFT bin nearest to ``hz``."""
    fb = filterbank_for(cfg)
    k = int(round(hz * cfg.n_fft / cfg.sample_rate))
    return int(np.argmax(fb[k]))
