"""Modality alignment of randomly initialised heads before training (paper section 3.3, eq. 7, appendix A.3).

Eq. 7 looks for the permutation R of the audio head's outputs that minimises
``sum_i |softmax(R W_a f_a(x_i)) - softmax(W_v f_v(x_i))|_1``. Convention used throughout: ``perm`` is
an int64 [K] tensor and the aligned audio output column j is the old audio column ``perm[j]``, i.e.
``p_audio_aligned = p_audio[:, perm]``; :func:`permute_linear_` applies the same ``perm`` to a layer.

Because the 1-norm is a sum over columns, the cost is ``sum_j D[perm[j], j]`` with the K x K matrix
``D[a, j] = sum_i |p_audio[i, a] - p_visual[i, j]|``. We compute D once (O(N K^2), ``torch.cdist``), after
which the cost change of swapping two output columns is O(1). The paper's greedy search (random pair
swaps kept when they lower the cost, 50,000 proposals, 5 restarts, keep the best) is then a matter of
milliseconds. The same D also makes eq. 7 a linear assignment problem, solvable exactly
(``method="assignment"``, scipy's Hungarian solver); the default follows the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

__all__ = ["AlignResult", "align_heads", "alignment_cost", "permute_linear_"]


@dataclass
class AlignResult:
    """Result of :func:`align_heads`.

    Attributes:
        perm: int64 [K]; new audio column j = old audio column ``perm[j]``.
        cost_before: eq. 7 cost of the identity, ``sum_i |p_audio[i] - p_visual[i]|_1``.
        cost_after: eq. 7 cost of ``perm``, ``sum_i |p_audio[i, perm] - p_visual[i]|_1`` (<= cost_before).
    """

    perm: Tensor
    cost_before: float
    cost_after: float


def alignment_cost(p_audio: Tensor, p_visual: Tensor, perm: Tensor | None = None) -> float:
    """Eq. 7 cost ``sum_i |p_audio[i, perm] - p_visual[i]|_1`` in float64 (perm None: identity)."""
    a = p_audio.detach().to(torch.float64)
    v = p_visual.detach().to(device=a.device, dtype=torch.float64)
    if perm is not None:
        a = a[:, perm.to(a.device)]
    return float((a - v).abs().sum())


def _column_costs(p_audio: Tensor, p_visual: Tensor, chunk: int = 65536) -> np.ndarray:
    """``D[a, j] = sum_i |p_audio[i, a] - p_visual[i, j]|`` as a float64 numpy [K, K] matrix."""
    a = p_audio.detach().to(torch.float64)
    v = p_visual.detach().to(device=a.device, dtype=torch.float64)
    k = a.shape[1]
    d = torch.zeros((k, k), dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[0], chunk):
        d += torch.cdist(a[s:s + chunk].T.contiguous(), v[s:s + chunk].T.contiguous(), p=1)
    return d.cpu().numpy()


def _greedy_swaps(d: np.ndarray, perm: list[int], j1s: list[int], j2s: list[int]) -> tuple[list[int], float]:
    """Greedy pair swaps on ``cost = sum_j d[perm[j], j]``: swap outputs j1, j2 when the cost drops."""
    rows = d.tolist()  # python lists: O(1) scalar access without numpy overhead
    cost = float(sum(rows[perm[j]][j] for j in range(len(perm))))
    for j1, j2 in zip(j1s, j2s):
        a1 = perm[j1]
        a2 = perm[j2]
        delta = rows[a2][j1] + rows[a1][j2] - rows[a1][j1] - rows[a2][j2]
        if delta < 0.0:
            perm[j1] = a2
            perm[j2] = a1
            cost += delta
    return perm, cost


def align_heads(
    p_audio: Tensor,
    p_visual: Tensor,
    *,
    proposals: int = 50000,
    restarts: int = 5,
    seed: int = 0,
    method: str = "greedy",
) -> AlignResult:
    """Find the permutation of the audio clusters that best matches the visual ones (eq. 7).

    Args:
        p_audio: [N, K] audio-head probabilities (softmax outputs) on N samples.
        p_visual: [N, K] visual-head probabilities on the same samples.
        proposals: random pair swaps proposed per restart (appendix A.3: 50,000).
        restarts: number of greedy runs; the first starts from the identity, the others from random
            permutations (appendix A.3: 5). The best final permutation is kept.
        seed: seed of the proposals and of the random starts (numpy ``default_rng``).
        method: ``"greedy"`` (the paper's search) or ``"assignment"`` (the exact optimum of eq. 7 via
            the Hungarian algorithm on the K x K column-cost matrix).

    Returns:
        :class:`AlignResult`; ``perm`` is the identity whenever nothing beats it, so ``cost_after`` is
        never above ``cost_before``. Costs are sums over samples (divide by N for a mean).
    """
    if p_audio.dim() != 2 or p_audio.shape != p_visual.shape:
        raise ValueError(f"p_audio and p_visual must both be [N, K], got {tuple(p_audio.shape)} "
                         f"and {tuple(p_visual.shape)}")
    if method not in ("greedy", "assignment"):
        raise ValueError(f"method must be 'greedy' or 'assignment', got {method!r}")
    if proposals < 0 or restarts < 1:
        raise ValueError("proposals must be >= 0 and restarts >= 1")
    k = p_audio.shape[1]
    identity = torch.arange(k, dtype=torch.int64)
    cost_before = alignment_cost(p_audio, p_visual)
    if k < 2 or p_audio.shape[0] == 0:
        return AlignResult(perm=identity, cost_before=cost_before, cost_after=cost_before)

    d = _column_costs(p_audio, p_visual)
    if method == "assignment":
        rows, cols = linear_sum_assignment(d)
        best = np.empty(k, dtype=np.int64)
        best[cols] = rows
        best_perm = best.tolist()
    else:
        rng = np.random.default_rng(seed)
        best_perm, best_cost = list(range(k)), float(np.trace(d))
        for restart in range(restarts):
            start = list(range(k)) if restart == 0 else rng.permutation(k).tolist()
            j1 = rng.integers(0, k, size=proposals)
            j2 = (j1 + rng.integers(1, k, size=proposals)) % k  # a different column, uniformly
            perm, cost = _greedy_swaps(d, start, j1.tolist(), j2.tolist())
            if cost < best_cost:
                best_perm, best_cost = perm, cost
    perm_t = torch.tensor(best_perm, dtype=torch.int64)
    cost_after = alignment_cost(p_audio, p_visual, perm_t)
    if cost_after > cost_before:  # only possible through rounding in D; keep the guarantee exact
        return AlignResult(perm=identity, cost_before=cost_before, cost_after=cost_before)
    return AlignResult(perm=perm_t, cost_before=cost_before, cost_after=cost_after)


@torch.no_grad()
def permute_linear_(layer: nn.Linear, perm: Tensor) -> None:
    """Permute a linear layer's outputs in place: new output column j = old output column ``perm[j]``.

    Reorders the rows of ``weight`` ([out, in]) and the entries of ``bias`` (the paper's footnote 5: the
    bias is part of the last-layer matrix), so that ``layer(x)`` after equals ``layer(x)[:, perm]`` before.
    """
    perm = torch.as_tensor(perm).detach().to(device="cpu", dtype=torch.int64).reshape(-1)
    out = layer.weight.shape[0]
    if perm.numel() != out or not torch.equal(torch.sort(perm).values, torch.arange(out)):
        raise ValueError(f"perm must be a permutation of range({out})")
    perm = perm.to(layer.weight.device)
    layer.weight.copy_(layer.weight[perm])
    if layer.bias is not None:
        layer.bias.copy_(layer.bias[perm])
