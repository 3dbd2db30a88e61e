"""The label solve's pieces: eq. 6 as training and assign share it, the Sinkhorn step with a matched prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videolabel.assign_table import combine_modalities
from videolabel.cluster.combine import balance_factors, modality_log_probs
from videolabel.cluster.priors import match_prior
from videolabel.cluster.sinkhorn import sinkhorn
from videolabel.train.solve import label_log_probs, solve_head


def _logp(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(*shape, generator=g) * 3, dim=-1)


def test_eq6_by_hand():
    lv = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    la = torch.log(torch.tensor([[0.2, 0.8], [0.3, 0.7]]))
    has = torch.tensor([True, False])
    out = modality_log_probs(lv, la, has)
    torch.testing.assert_close(out[0], (lv[0] + la[0]) / 2, rtol=0, atol=0)
    torch.testing.assert_close(out[1], lv[1], rtol=0, atol=0)  # no audio: the frames alone
    assert modality_log_probs(lv, None, has, "video") is lv
    assert modality_log_probs(None, la, has, "audio") is la
    with pytest.raises(ValueError):
        modality_log_probs(lv, None, has, "both")


def test_balance_rescales_to_the_same_spread():
    lv, la = _logp(6, 4, seed=1), 5 * _logp(6, 4, seed=2)
    has = torch.tensor([True, True, False, True, True, True])
    fv, fa = balance_factors([lv, la], [None, has])
    torch.testing.assert_close(modality_log_probs(lv, la, has, balance=True),
                               modality_log_probs(lv * fv, la * fa, has), rtol=0, atol=0)


@pytest.mark.parametrize("balance", [False, True])
def test_assign_and_training_combine_alike(balance: bool):
    """assign's [H, n, K] combination is the trainer's per-head one, bit for bit."""
    H, n, K = 3, 7, 5
    lv, la = _logp(H, n, K, seed=3), _logp(H, n, K, seed=4)
    has = torch.tensor([True, False, True, True, False, True, True])
    got = combine_modalities(lv, la, has, "both", balance=balance)
    out = {"video": lv, "audio": la}
    for h in range(H):
        torch.testing.assert_close(got[h], label_log_probs(out, h, "both", has, balance=balance), rtol=0, atol=0)
    # the formula assign wrote by hand before (the mean of the present modalities), without balance
    if not balance:
        w = has.to(lv.dtype)[None, :, None]
        torch.testing.assert_close(got, (lv + w * la) / (1 + w), rtol=0, atol=0)
    assert combine_modalities(lv, la, has, "visual") is lv
    assert label_log_probs(out, 1, "video", has) is not None
    torch.testing.assert_close(label_log_probs(out, 1, "audio", has), la[1], rtol=0, atol=0)
    torch.testing.assert_close(label_log_probs({"fused": lv}, 2, "concat", has), lv[2], rtol=0, atol=0)


def test_solve_head_matches_the_prior_to_the_previous_sizes():
    n, K = 40, 4
    log_p = _logp(n, K, seed=5)
    masses = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    previous = torch.tensor([3] * 25 + [0] * 10 + [1] * 4 + [2] * 1)
    res = solve_head(log_p, masses, previous, match=True, lam=20.0, tol=1e-4, max_iters=2000)
    r = match_prior(masses, torch.bincount(previous, minlength=K).double())
    ref = sinkhorn(log_p, r, lam=20.0, tol=1e-4, max_iters=2000)
    torch.testing.assert_close(res.labels, ref.labels, rtol=0, atol=0)
    assert r[3] == r.max() and r[2] == r.min()  # the largest mass went to the largest cluster
    # the plain prior is far from these sizes: at tol=1e-4 Sinkhorn-Knopp stops at 2000 iterations with a warning
    # (marginal error 8e-4), which says nothing of what is compared here
    plain = solve_head(log_p, masses, previous, match=False, lam=20.0, tol=1e-3, max_iters=2000)
    torch.testing.assert_close(plain.labels, sinkhorn(log_p, masses, lam=20.0, tol=1e-3, max_iters=2000).labels)
    sizes = np.bincount(res.labels.numpy(), minlength=K) / n
    assert np.abs(sizes - r.numpy()).max() < 0.1
