"""Multi-modal single labelling: average log-probabilities over augmentations and modalities (eq. 6).

Eq. 6 replaces log P by ``E_t[log softmax Psi(t x_i)]``, the expectation running over the data
augmentations t, the modality splicings t_a (audio only) and t_v (visual only) included. With one
prediction per modality this is ``(log P_audio + log P_visual) / 2``. A sample for which a modality is
missing (a video without audio) averages over the modalities it has: the visual prediction stands alone.

:func:`balance_scales` (option ``balance_modalities``, not in the paper) first rescales each modality
to the same spread of log-probabilities, so that the sharper one does not decide the labels alone.

The result is not renormalised (``logsumexp`` over K is <= 0 by Jensen); Sinkhorn-Knopp and argmax are
invariant to per-row shifts, so no renormalisation is needed for labelling.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor

__all__ = ["balance_factors", "balance_scales", "centred_sum_of_squares", "combine_log_probs", "modality_log_probs"]


def combine_log_probs(
    log_ps: Sequence[Tensor],
    present: Sequence[Tensor | None] | None = None,
) -> Tensor:
    """Eq. 6: the mean of the log-probabilities that are present, per sample.

    Args:
        log_ps: M tensors [N, K] of log-probabilities (one per augmentation/modality), same shape.
        present: None (all present) or M boolean tensors [N] (None entries: all present). Where
            ``present[m][i]`` is False, ``log_ps[m][i]`` is ignored (it may hold anything, even NaN).

    Returns:
        [N, K] tensor in the promoted dtype of the inputs: row i is the mean of ``log_ps[m][i]`` over
        the m with ``present[m][i]``.

    Raises:
        ValueError: no inputs, shape mismatch, or a sample with no modality present.
    """
    if len(log_ps) == 0:
        raise ValueError("combine_log_probs needs at least one log-probability tensor")
    shape = log_ps[0].shape
    if len(shape) != 2:
        raise ValueError(f"log-probabilities must be [N, K], got shape {tuple(shape)}")
    for lp in log_ps:
        if lp.shape != shape:
            raise ValueError(f"all log-probabilities must have shape {tuple(shape)}, got {tuple(lp.shape)}")
    dtype = log_ps[0].dtype
    for lp in log_ps[1:]:
        dtype = torch.promote_types(dtype, lp.dtype)
    device = log_ps[0].device

    if present is None or all(m is None for m in present):
        if present is not None and len(present) != len(log_ps):
            raise ValueError(f"got {len(present)} presence masks for {len(log_ps)} inputs")
        total = log_ps[0].to(dtype=dtype, copy=True)
        for lp in log_ps[1:]:
            total.add_(lp.to(device=device, dtype=dtype))
        return total.div_(len(log_ps))

    if len(present) != len(log_ps):
        raise ValueError(f"got {len(present)} presence masks for {len(log_ps)} inputs")
    n = shape[0]
    total = torch.zeros(shape, dtype=dtype, device=device)
    count = torch.zeros(n, dtype=dtype, device=device)
    for lp, mask in zip(log_ps, present):
        if mask is None:
            mask_t = torch.ones(n, dtype=torch.bool, device=device)
        else:
            mask_t = mask.to(device=device)
            if mask_t.dtype != torch.bool or mask_t.shape != (n,):
                raise ValueError(f"presence masks must be boolean [N] = [{n}], got {mask_t.dtype} "
                                 f"{tuple(mask_t.shape)}")
        total.add_(torch.where(mask_t.unsqueeze(1), lp.to(device=device, dtype=dtype), 0.0))
        count.add_(mask_t.to(dtype))
    if bool((count == 0).any()):
        missing = int((count == 0).sum())
        raise ValueError(f"{missing} sample(s) have no modality/augmentation present")
    return total.div_(count.unsqueeze(1))


def centred_sum_of_squares(log_p: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The spread of one modality's log-probabilities, as sums that can be all-reduced across processes.

    Each row is centred (its mean over K subtracted: Sinkhorn-Knopp and argmax ignore per-row shifts),
    then the squares are summed over the present rows. ``sqrt(sum / count)`` is the root mean square of
    the centred log-probabilities: how confident, on average, the modality's predictions are.

    Args:
        log_p: [N, K] log-probabilities.
        present: None (all rows) or boolean [N]: only these rows count.

    Returns:
        ``(sum of squares, number of values)`` as float64 scalars on ``log_p``'s device.
    """
    if log_p.dim() != 2:
        raise ValueError(f"log-probabilities must be [N, K], got shape {tuple(log_p.shape)}")
    x = log_p.to(torch.float64)
    if present is not None:
        x = x[present.to(device=x.device, dtype=torch.bool)]
    c = x - x.mean(dim=1, keepdim=True)
    return c.square().sum(), torch.tensor(float(c.numel()), dtype=torch.float64, device=x.device)


def balance_scales(spreads: Sequence[float]) -> list[float]:
    """Factors that give every modality the same spread before eq. 6 (an extension, not in the paper).

    Eq. 6 averages the modalities' log-probabilities, so a modality whose predictions are sharper
    (larger centred log-probabilities, e.g. because it memorises its training videos) decides the
    labels alone. Multiplying modality m by ``mean(spreads) / spreads[m]`` gives each the same root
    mean square and keeps the overall scale, so lambda (eq. 3) keeps its meaning. A spread of 0 (a
    constant prediction) keeps factor 1.

    Args:
        spreads: the root mean square of each modality's centred log-probabilities
            (from :func:`centred_sum_of_squares`), non-negative.

    Returns:
        One factor per modality.
    """
    if len(spreads) == 0:
        raise ValueError("balance_scales needs at least one spread")
    if any(not s >= 0 for s in spreads):
        raise ValueError(f"spreads must be non-negative, got {list(spreads)}")
    target = sum(spreads) / len(spreads)
    return [target / s if s > 0 else 1.0 for s in spreads]


def balance_factors(log_ps: Sequence[Tensor], present: Sequence[Tensor | None],
                    all_reduce: Callable[[Tensor], Any] | None = None) -> list[float]:
    """The :func:`balance_scales` factors of some modalities' log-probabilities, end to end.

    Each modality's spread is the root mean square of its row-centred values over its present rows
    (:func:`centred_sum_of_squares`). ``all_reduce`` (e.g. ``torch.distributed.all_reduce``), when
    given, sums the ``[M, 2]`` table of sums in place across processes first, so every process gets the
    factors of the whole data set.

    Args:
        log_ps: M tensors [N, K].
        present: M masks (None or boolean [N]), as for :func:`combine_log_probs`.
        all_reduce: optional in-place sum across processes.

    Returns:
        One factor per modality.
    """
    sums = torch.stack([torch.stack(centred_sum_of_squares(lp, m)) for lp, m in zip(log_ps, present)])
    if all_reduce is not None:
        all_reduce(sums)
    spreads = [math.sqrt(s / c) if c > 0 else 0.0 for s, c in sums.tolist()]
    return balance_scales(spreads)


def modality_log_probs(
    lv: Tensor | None,
    la: Tensor | None,
    has_audio: Tensor,
    use: Literal["both", "video", "audio"] = "both",
    *,
    balance: bool = False,
    all_reduce: Callable[[Tensor], Any] | None = None,
) -> Tensor:
    """One head's log P over the modalities in ``use``: eq. 6, the one combination training and labelling share.

    ``"both"``: the mean of the video and audio log-probabilities, the video's alone for a sample
    without audio (:func:`combine_log_probs`), after rescaling both to the same spread when ``balance``
    (:func:`balance_factors`, option ``balance_modalities``; ``all_reduce`` sums the spreads across
    processes). ``"video"`` / ``"audio"``: that modality's log-probabilities, unchanged (the same tensor).

    Args:
        lv: [N, K] video log-probabilities (may be None when ``use="audio"``).
        la: [N, K] audio log-probabilities (may be None when ``use="video"``).
        has_audio: boolean [N]: which samples have audio.
        use: the modalities to combine.
        balance: rescale the two modalities to the same spread first.
        all_reduce: optional in-place sum across processes, for ``balance``.

    Returns:
        [N, K] log-probabilities (not renormalised).
    """
    if use == "video" or use == "audio":
        out = lv if use == "video" else la
        if out is None:
            raise ValueError(f"modality_log_probs(use={use!r}) needs the {use} log-probabilities")
        return out
    if use != "both":
        raise ValueError(f"use must be both, video or audio, not {use!r}")
    if lv is None or la is None:
        raise ValueError("modality_log_probs(use='both') needs both modalities' log-probabilities")
    present: list[Tensor | None] = [torch.ones_like(has_audio, dtype=torch.bool), has_audio.to(torch.bool)]
    pair = [lv, la]
    if balance:
        factors = balance_factors(pair, present, all_reduce)
        pair = [lp * f for lp, f in zip(pair, factors)]
    return combine_log_probs(pair, present)
