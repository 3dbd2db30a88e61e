"""Multi-modal single labelling: the eq. 6 mean of log-probabilities over modalities/augmentations."""

from __future__ import annotations

import pytest
import torch

from videolabel.cluster.combine import balance_factors, balance_scales, centred_sum_of_squares, combine_log_probs


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


def test_centred_sum_of_squares_by_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(7, 4, generator=g).log_softmax(-1)
    mask = torch.tensor([True, False, True, True, False, True, True])
    s, c = centred_sum_of_squares(lp, mask)
    want = 0.0
    for i in range(7):
        if mask[i]:
            row = [float(v) for v in lp[i]]
            mu = sum(row) / len(row)
            want += sum((v - mu) ** 2 for v in row)
    assert float(s) == pytest.approx(want, rel=1e-9) and float(c) == 5 * 4
    s_all, c_all = centred_sum_of_squares(lp)
    assert float(c_all) == 28 and float(s_all) > float(s)
    # a per-row shift (which Sinkhorn-Knopp ignores) does not change the spread
    assert float(centred_sum_of_squares(lp + torch.arange(7.0)[:, None])[0]) == pytest.approx(float(s_all))


def test_balance_scales_equalises_spreads() -> None:
    assert balance_scales([0.5, 0.5]) == [1.0, 1.0]
    f = balance_scales([1.0, 3.0])
    assert f == pytest.approx([2.0, 2 / 3])
    assert [x * y for x, y in zip(f, [1.0, 3.0])] == pytest.approx([2.0, 2.0])  # same spread, mean kept
    assert balance_scales([0.0, 2.0]) == [1.0, 0.5]  # a constant prediction keeps factor 1
    # the sharper modality no longer decides the labels alone: where it is only mildly sure (row 2),
    # the softer but consistent modality now wins; where it is sure (rows 0 and 1) it still does
    sharp = torch.tensor([[0.0, -8.0], [-8.0, 0.0], [0.0, -1.0]])
    soft = torch.tensor([[-0.2, 0.0], [0.0, -0.2], [-0.2, 0.0]])
    spreads = [float(s / c) ** 0.5 for s, c in (centred_sum_of_squares(sharp), centred_sum_of_squares(soft))]
    a, b = balance_scales(spreads)
    assert combine_log_probs([sharp, soft]).argmax(-1).tolist() == [0, 1, 0]
    assert combine_log_probs([sharp * a, soft * b]).argmax(-1).tolist() == [0, 1, 1]
    with pytest.raises(ValueError):
        balance_scales([])
    with pytest.raises(ValueError):
        balance_scales([1.0, -1.0])
    with pytest.raises(ValueError):
        centred_sum_of_squares(torch.zeros(3))


def test_balance_factors_end_to_end_and_with_a_reduction() -> None:
    g = torch.Generator().manual_seed(0)
    lv = torch.log_softmax(3.0 * torch.randn(6, 4, generator=g), -1)
    la = torch.log_softmax(torch.randn(6, 4, generator=g), -1)
    has = torch.tensor([True, False, True, True, True, False])
    rms = [float((x.double() - x.double().mean(1, keepdim=True)).square().mean().sqrt()) for x in (lv, la[has])]
    want = balance_scales(rms)
    assert balance_factors([lv, la], [None, has]) == pytest.approx(want)
    # a reduction that doubles every sum (two identical processes) leaves the factors unchanged
    assert balance_factors([lv, la], [None, has], all_reduce=lambda t: t.mul_(2)) == pytest.approx(want)
