"""Log-mel: the filterbank matches torchaudio, no filter of the default config is empty."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from videolabel.config import IngestConfig
from videolabel.errors import VideolabelError
from videolabel.ingest.logmel import band_of_frequency, empty_filters, filterbank_for, log_mel, window_samples


def test_every_filter_of_the_default_config_has_weight() -> None:
    cfg = IngestConfig()
    fb = filterbank_for(cfg)
    assert fb.shape == (cfg.n_fft // 2 + 1, cfg.n_mels) == (1025, 257)
    assert (fb.max(axis=0) > 0).all(), "an empty mel filter"
    assert empty_filters(cfg) == []
    assert cfg.validate() is cfg


def test_filterbank_matches_torchaudio() -> None:
    cfg = IngestConfig()
    ref = AF.melscale_fbanks(cfg.n_fft // 2 + 1, 0.0, cfg.sample_rate / 2, cfg.n_mels, cfg.sample_rate).numpy()
    np.testing.assert_allclose(filterbank_for(cfg), ref, atol=1e-4)


def test_log_mel_matches_torch_stft() -> None:
    cfg = IngestConfig()
    n = window_samples(cfg)
    assert n == 32000  # 198 hops of 10 ms + one 20 ms window = 2 s at 16 kHz
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32) * 0.1
    ours = log_mel(x[None], cfg)[0].astype(np.float32)
    pad = (cfg.n_fft - 320) // 2  # torch centres the short window in the n_fft frame
    spec = torch.stft(torch.nn.functional.pad(torch.from_numpy(x), (pad, pad)), cfg.n_fft, 160, 320,
                      torch.hann_window(320), center=False, return_complex=True).abs() ** 2
    ref = torch.log(torch.from_numpy(filterbank_for(cfg).copy()).T @ spec + cfg.log_eps).numpy()
    assert ours.shape == ref.shape == (257, 199)
    np.testing.assert_allclose(ours, ref, atol=0.02)  # float16 storage


def test_tone_peaks_in_its_band() -> None:
    cfg = IngestConfig()
    t = np.arange(window_samples(cfg)) / cfg.sample_rate
    for hz in (440.0, 1000.0, 3000.0):
        m = log_mel(np.sin(2 * np.pi * hz * t).astype(np.float32)[None], cfg)[0].astype(np.float32)
        assert abs(int(np.argmax(m.mean(axis=1))) - band_of_frequency(cfg, hz)) <= 1


def test_silence_is_the_floor() -> None:
    cfg = IngestConfig()
    m = log_mel(np.zeros((2, window_samples(cfg)), np.float32), cfg)
    assert np.all(m == np.float16(np.log(cfg.log_eps)))


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(n_fft=1024), "mel filters are empty"),
        (dict(short="maybe"), "short must be"),
        (dict(hop_ms=10.03), "whole numbers of samples"),
        (dict(n_fft=256), "shorter than the window"),
        (dict(height=4), "too small"),
    ],
)
def test_invalid_configs_are_refused(kw, msg) -> None:
    with pytest.raises(VideolabelError, match=msg):
        IngestConfig(**kw).validate()
