"""The loudest-frame level of cached spectrograms (videolabel.loudness), against known signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from videolabel.config import IngestConfig
from videolabel.ingest.logmel import log_mel, win_samples, window_samples
from videolabel.loudness import FLOOR_DB, SILENCE_DB, full_scale_power, peak_level_db

CONFIGS = [IngestConfig(), IngestConfig(n_mels=64, mel_frames=100), IngestConfig(n_mels=40, n_fft=1024, win_ms=32.0)]


def _level(wave: np.ndarray, cfg: IngestConfig) -> float:
    spec = torch.from_numpy(log_mel(wave.astype(np.float32)[None], cfg).astype(np.float32))
    return float(peak_level_db(spec, full_scale_power(cfg), cfg.log_eps)[0])


@pytest.mark.parametrize("cfg", CONFIGS, ids=["paper", "tiny", "other-fft"])
def test_reference_is_the_expected_power_of_full_scale_noise(cfg):
    """Brute force: the mean total mel power of many frames of unit-variance white noise."""
    rng = np.random.default_rng(0)
    n = window_samples(cfg)
    spec = log_mel(rng.standard_normal((16, n)).astype(np.float32), cfg).astype(np.float64)
    mean_power = (np.exp(spec) - cfg.log_eps).sum(axis=1).mean()
    assert mean_power == pytest.approx(full_scale_power(cfg), rel=0.03)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["paper", "tiny", "other-fft"])
@pytest.mark.parametrize("amp,freq", [(0.5, 1000.0), (0.01, 300.0), (0.9, 3000.0)])
def test_a_sine_reads_its_rms_level(cfg, amp, freq):
    t = np.arange(window_samples(cfg)) / cfg.sample_rate
    want = 20 * math.log10(amp / math.sqrt(2))
    assert _level(amp * np.sin(2 * np.pi * freq * t), cfg) == pytest.approx(want, abs=0.5)


def test_noise_reads_its_rms_and_silence_the_floor():
    cfg = CONFIGS[1]
    rng = np.random.default_rng(1)
    n = window_samples(cfg)
    for rms in (0.3, 0.01, 1e-4):
        got = _level(rms * rng.standard_normal(n), cfg)
        assert 20 * math.log10(rms) - 0.5 <= got <= 20 * math.log10(rms) + 2.0  # the loudest of 100 frames
    quiet = _level(np.zeros(n), cfg)
    assert FLOOR_DB <= quiet < SILENCE_DB - 30
    # a word at -40 dBFS in the middle of digital silence: the loudest frame finds it
    wave = np.zeros(n)
    mid = n // 2
    wave[mid : mid + 4 * win_samples(cfg)] = 0.01 * np.sqrt(2) * np.sin(2 * np.pi * 440 * np.arange(4 * win_samples(cfg))
                                                                        / cfg.sample_rate)
    assert _level(wave, cfg) == pytest.approx(-40.0, abs=0.5)


def test_bad_arguments():
    with pytest.raises(ValueError):
        peak_level_db(torch.zeros(3, 4), 1.0, 1e-6)
    with pytest.raises(ValueError):
        peak_level_db(torch.zeros(1, 3, 4), 0.0, 1e-6)
