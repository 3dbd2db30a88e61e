"""Multi-modal single labelling: the eq. 6 mean of log-probabilities over modalities/augmentations."""

from __future__ import annotations

import pytest
import torch

from videolabel.cluster.combine import combine_log_probs


def _lp(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.log_softmax(torch.randn(n, k, generator=torch.Generator().manual_seed(seed)), 1)


def test_mean_of_two_modalities() -> None:
    a, v = _lp(6, 4, 0), _lp(6, 4, 1)
    torch.testing.assert_close(combine_log_probs([a, v]), (a + v) / 2)
    torch.testing.assert_close(combine_log_probs([a]), a)
    assert not combine_log_probs([a, v]).data_ptr() == a.data_ptr()  # inputs are not modified


def test_missing_audio_lets_the_visual_stand_alone() -> None:
    a, v = _lp(5, 3, 2), _lp(5, 3, 3)
    a[1] = float("nan")  # what a missing modality may hold: ignored
    has_audio = torch.tensor([True, False, True, True, False])
    out = combine_log_probs([a, v], [has_audio, None])
    expected = (a + v) / 2
    expected[1] = v[1]
    expected[4] = v[4]
    torch.testing.assert_close(out, expected)
    assert torch.isfinite(out).all()


def test_three_inputs_partial_presence_and_dtype_promotion() -> None:
    x, y, z = _lp(4, 2, 4), _lp(4, 2, 5).double(), _lp(4, 2, 6)
    px = torch.tensor([True, True, False, True])
    py = torch.tensor([True, False, False, True])
    pz = torch.tensor([False, True, True, True])
    out = combine_log_probs([x, y, z], [px, py, pz])
    assert out.dtype == torch.float64
    torch.testing.assert_close(out[0], ((x[0] + y[0]) / 2).double())
    torch.testing.assert_close(out[1], ((x[1] + z[1]) / 2).double())
    torch.testing.assert_close(out[2], z[2].double())
    torch.testing.assert_close(out[3], (x[3] + y[3] + z[3]).double() / 3)


def test_errors() -> None:
    a, v = _lp(3, 2, 7), _lp(3, 2, 8)
    with pytest.raises(ValueError, match="no modality"):
        combine_log_probs([a, v], [torch.tensor([True, False, True]), torch.tensor([True, False, False])])
    with pytest.raises(ValueError):
        combine_log_probs([a, _lp(4, 2, 9)])
    with pytest.raises(ValueError):
        combine_log_probs([])
    with pytest.raises(ValueError):
        combine_log_probs([a, v], [torch.tensor([1, 0, 1]), None])
    with pytest.raises(ValueError):
        combine_log_probs([a, v], [None])
