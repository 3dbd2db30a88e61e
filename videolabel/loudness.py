"""How loud a cached soundtrack is: the level of its loudest spectrogram frame, in dB relative to full scale.

A soundtrack that is there but silent (a muted phone video, a screen recording, a slideshow whose music
was removed) says nothing about its picture, yet the sound tower gives it a confident cluster of its own,
so the towers' disagreement (``av_mismatch``) almost never flags it (``benchmarks/RESULTS.md``, "Sound not
about the picture": 0-8 % of silent videos flagged). Silence needs no model: the cached log-mel
spectrograms (:mod:`videolabel.ingest.logmel`) hold the power of every frame, and a frame's level follows
from the expected mel power of a full-scale signal.

Level of one frame: ``10 log10(P / P_fs)``, where ``P = sum_b (exp(S_b) - eps)`` is its total mel power
(``S = log(mel + eps)`` as stored) and ``P_fs`` the expected total of one frame of white noise of RMS 1:
for a frame ``x_n w_n`` zero-padded to ``n_fft``, ``E|X_k|^2 = sigma^2 sum_n w_n^2`` at every DFT bin
``k``, so ``P_fs = sum_n w_n^2 * sum_{k,b} fb[k, b]`` (:func:`full_scale_power`). A signal of RMS ``r``
then reads ``20 log10(r)`` dBFS (a full-scale sine, RMS 1/sqrt 2, reads -3 dB), whatever the window,
the FFT size and the number of bands. Digital silence reads at the ``eps`` floor (about -110 dB).
"""

from __future__ import annotations

import numpy as np
import torch

from videolabel.config import IngestConfig
from videolabel.ingest.logmel import filterbank_for, hann_window, win_samples

__all__ = ["FLOOR_DB", "SILENCE_DB", "full_scale_power", "peak_level_db"]

#: a soundtrack whose loudest frame is below this is silent (the default noise threshold of ffmpeg's
#: ``silencedetect``): room tone and hiss sit below it, any audible speech or music well above
SILENCE_DB = -60.0
#: lowest level reported (a frame of digital silence, and anything quieter)
FLOOR_DB = -120.0


def full_scale_power(cfg: IngestConfig) -> float:
    """Expected total mel power of one spectrogram frame of white noise of RMS 1 (0 dBFS) under ``cfg``.

    ``sum_n w_n^2 * sum_{k,b} fb[k, b]``: the periodic Hann window of ``win`` samples (as
    :func:`videolabel.ingest.logmel.log_mel`) and the HTK filterbank of ``cfg``."""
    w = hann_window(win_samples(cfg)).astype(np.float64)
    return float((w**2).sum() * filterbank_for(cfg).astype(np.float64).sum())


def peak_level_db(logmel: torch.Tensor, reference: float, log_eps: float) -> torch.Tensor:
    """Level of the loudest frame of each spectrogram, in dB re ``reference`` (:func:`full_scale_power`).

    Args:
        logmel: ``[B, n_mels, frames]`` stored spectrograms, ``log(mel_power + log_eps)`` (any float dtype).
        reference: the total mel power that reads 0 dB.
        log_eps: the ``eps`` of the stored logarithm (``IngestConfig.log_eps``), removed before summing.

    Returns:
        ``[B]`` float32, at least :data:`FLOOR_DB`.
    """
    if logmel.dim() != 3:
        raise ValueError(f"logmel must be [B, n_mels, frames], got {tuple(logmel.shape)}")
    if not reference > 0:
        raise ValueError(f"reference must be > 0, got {reference}")
    power = (logmel.float().exp() - log_eps).clamp_min(0.0).sum(dim=1)  # [B, frames]
    peak = power.amax(dim=1).clamp_min(reference * 10.0 ** (FLOOR_DB / 10.0))
    return 10.0 * torch.log10(peak / reference)

