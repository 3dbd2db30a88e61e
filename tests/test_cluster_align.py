"""Audio/visual head alignment (eq. 7, appendix A.3) and its application to a linear layer."""

from __future__ import annotations

import itertools
import time

import pytest
import torch
from torch import nn

from videolabel.cluster.align import align_heads, alignment_cost, permute_linear_

pytestmark = pytest.mark.usefixtures("single_thread")


def _planted(n: int, k: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Visual probabilities V and audio probabilities whose column perm[j] is a noisy copy of V's column j."""
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, k, generator=g)
    p_visual = torch.softmax(logits, 1)
    shuffle = torch.randperm(k, generator=g)  # audio column a holds visual column shuffle[a]
    p_audio = torch.softmax(logits + noise * torch.randn(n, k, generator=g), 1)[:, shuffle]
    return p_audio, p_visual, torch.argsort(shuffle)


def test_recovers_a_planted_permutation() -> None:
    p_audio, p_visual, perm = _planted(2000, 20, 0.5, 0)
    res = align_heads(p_audio, p_visual)
    assert torch.equal(res.perm, perm)
    assert res.cost_after < 0.5 * res.cost_before
    assert res.cost_after == pytest.approx(alignment_cost(p_audio, p_visual, perm), rel=1e-12)
    assert res.cost_before == pytest.approx(alignment_cost(p_audio, p_visual), rel=1e-12)
    agree = (p_audio[:, res.perm].argmax(1) == p_visual.argmax(1)).float().mean().item()
    assert agree > 0.7  # vs ~1/K = 0.05 before alignment


@pytest.mark.parametrize("seed", range(5))
def test_never_worse_than_identity_and_deterministic(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    p_audio = torch.softmax(torch.randn(300, 12, generator=g), 1)
    p_visual = torch.softmax(torch.randn(300, 12, generator=g), 1)
    res = align_heads(p_audio, p_visual, proposals=2000, restarts=3, seed=seed)
    assert res.cost_after <= res.cost_before
    assert sorted(res.perm.tolist()) == list(range(12))
    again = align_heads(p_audio, p_visual, proposals=2000, restarts=3, seed=seed)
    assert torch.equal(res.perm, again.perm)
    exact = align_heads(p_audio, p_visual, method="assignment")
    assert exact.cost_after <= res.cost_after + 1e-9
    # already aligned: the identity must come back unchanged
    same = align_heads(p_visual, p_visual, proposals=500, restarts=2)
    assert torch.equal(same.perm, torch.arange(12)) and same.cost_after == same.cost_before == 0.0


def test_assignment_is_the_brute_force_optimum() -> None:
    g = torch.Generator().manual_seed(11)
    p_audio = torch.softmax(torch.randn(50, 6, generator=g), 1)
    p_visual = torch.softmax(torch.randn(50, 6, generator=g), 1)
    best = min(alignment_cost(p_audio, p_visual, torch.tensor(p)) for p in itertools.permutations(range(6)))
    assert align_heads(p_audio, p_visual, method="assignment").cost_after == pytest.approx(best, rel=1e-12)
    greedy = align_heads(p_audio, p_visual)
    assert best <= greedy.cost_after <= greedy.cost_before


def test_paper_budget_is_fast() -> None:
    """50,000 proposals x 5 restarts on N = 10,000, K = 100 (appendix A.3) must take seconds."""
    p_audio, p_visual, perm = _planted(10_000, 100, 1.0, 1)
    start = time.perf_counter()
    res = align_heads(p_audio, p_visual, proposals=50_000, restarts=5)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0
    assert (res.perm == perm).float().mean().item() > 0.9


def test_degenerate_inputs() -> None:
    one = torch.ones(5, 1)
    res = align_heads(one, one)
    assert res.perm.tolist() == [0] and res.cost_after == res.cost_before == 0.0
    with pytest.raises(ValueError):
        align_heads(torch.rand(5, 3), torch.rand(5, 4))
    with pytest.raises(ValueError):
        align_heads(torch.rand(5, 3), torch.rand(5, 3), method="annealing")


def test_permute_linear_reorders_outputs() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(16, 10)
    x = torch.randn(32, 16)
    before = layer(x).detach()
    perm = torch.randperm(10)
    permute_linear_(layer, perm)
    torch.testing.assert_close(layer(x).detach(), before[:, perm])
    no_bias = nn.Linear(16, 10, bias=False)
    before = no_bias(x).detach()
    permute_linear_(no_bias, perm)
    torch.testing.assert_close(no_bias(x).detach(), before[:, perm])
    with pytest.raises(ValueError):
        permute_linear_(layer, torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7, 8]))
    with pytest.raises(ValueError):
        permute_linear_(layer, torch.arange(9))


def test_alignment_result_applies_to_the_audio_head() -> None:
    """End to end: align two random heads' softmax outputs, permute the audio layer, outputs match."""
    torch.manual_seed(1)
    audio_head, visual_head = nn.Linear(8, 6), nn.Linear(8, 6)
    feats = torch.randn(500, 8)
    with torch.no_grad():
        p_a, p_v = torch.softmax(audio_head(feats), 1), torch.softmax(visual_head(feats), 1)
    res = align_heads(p_a, p_v, proposals=5000, restarts=2)
    permute_linear_(audio_head, res.perm)
    with torch.no_grad():
        aligned = torch.softmax(audio_head(feats), 1)
    assert alignment_cost(aligned, p_v) == pytest.approx(res.cost_after, rel=1e-5)
