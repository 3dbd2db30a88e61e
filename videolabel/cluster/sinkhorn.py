"""Self-labelling by optimal transport: the Sinkhorn-Knopp solver (paper section 3.1-3.2, eq. 1-3).

For one clustering head, ``log_p`` is the N x K matrix of log-probabilities ``log p(y|x_i)`` (the paper
writes it K x N; we keep the PyTorch row-per-sample layout). The labels solve eq. 3::

    min_{Q in U(r, c)}  <Q, -log P> + (1/lambda) KL(Q || r c^T),     c = 1/N,  sum_k r_k = 1,

whose solution has the form ``Q = diag(a) P^lambda diag(b)``: Sinkhorn-Knopp alternately rescales the
rows (to 1/N) and the columns (to r) of ``P^lambda``; the label of sample i is ``argmax_k Q_ik``.

Numerics. ``P^20`` underflows float32 as soon as a log-probability drops below about -5, so we work in
float64 and on a *shifted* kernel ``M = exp(lambda log P + alpha_i + beta_k)``. Row and column shifts
are free (they are absorbed by the scalings a and b). We start with the column shift then the row shift
that make the largest entry of every row *and* every column exactly 1, and, if the scalings ever grow
beyond ``e^(+-100)``, we absorb them into the shifts and recompute the kernel from ``log_p``
(the "log-stabilised" Sinkhorn of Schmitzer, 2019). Entries below 1e-300 are flushed to zero (they are
< 1e-300 times the row's largest entry; flushing keeps the CPU off slow denormal arithmetic).

Scale. Sinkhorn-Knopp only needs matrix-vector products, so the N rows can live on several ranks:
each rank holds its own rows of ``log_p``; the K-sized column sums (and the column maxima, once) are
all-reduced, as is one 2-element vector of counts at the start. Nothing N-sized ever crosses ranks, and
every rank sees the same column sums, hence takes the same stopping and absorption decisions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_multihead"]

_FLUSH = 1e-300  # kernel entries below this (relative to a row maximum of 1) are set to 0
_CLAMP = 1e-250  # lower bound on row/column sums before dividing (keeps scalings finite)
_ABSORB_HI = math.exp(100.0)  # absorb the scalings into the kernel once one leaves [e^-100, e^100]
_ABSORB_LO = math.exp(-100.0)
_LOCAL = object()  # sentinel: solve on this process only


@dataclass
class SinkhornResult:
    """The solution of eq. 3 for one head.

    Attributes:
        labels: int64 [N_local], ``argmax_k Q_ik`` for this rank's rows, on ``log_p``'s device.
        plan: the transport plan Q restricted to this rank's rows, float64 [N_local, K], or None when
            not requested. Normalisation: Q sums to 1 over *all* ranks; every row sums to exactly
            ``1 / N_global`` (the last update is a row update) and column k sums (over all ranks) to
            ``r_k`` within relative error ``error``. Multiply by ``N_global`` for per-sample soft labels.
        iterations: number of Sinkhorn-Knopp (column, row) update pairs performed.
        error: max over clusters of ``|sum_i Q_ik - r_k| / r_k`` at the returned plan (absolute error
            for clusters with ``r_k = 0``).
    """

    labels: Tensor
    plan: Tensor | None
    iterations: int
    error: float


def sinkhorn(
    log_p: Tensor,
    r: Tensor | None = None,
    *,
    lam: float = 20.0,
    tol: float = 1e-6,
    max_iters: int = 1000,
    return_plan: bool = False,
    group: Any | None = None,
    distributed: bool | None = None,
    check_every: int = 5,
) -> SinkhornResult:
    """Solve eq. 3 for one head by Sinkhorn-Knopp on ``P^lam`` and return the labels.

    Args:
        log_p: [N_local, K] log-probabilities (e.g. ``log_softmax`` output, or the eq. 6 average of
            several), any floating dtype and device. The computation is done in float64 on that device.
        r: cluster marginal [K], non-negative (None: uniform 1/K). It is normalised to sum 1 here.
            Use :func:`videolabel.cluster.priors.match_prior` first to order a non-uniform prior (eq. 4-5).
        lam: the entropic parameter lambda of eq. 3 (the paper uses 20).
        tol: stop once the max relative column-marginal error is below ``tol`` (rows are exact).
        max_iters: upper bound on the number of update pairs; a warning is issued if ``tol`` is not met.
        return_plan: also return Q (float64 [N_local, K]; see :class:`SinkhornResult` for the scale).
        group: a ``torch.distributed`` process group. When given, or when ``torch.distributed`` is
            initialised (default group), each rank passes only its own rows and gets its rows' labels.
        distributed: force (True) or forbid (False) the distributed mode; None decides as above.
        check_every: compute the stopping criterion every this many iterations (one host sync each).

    Returns:
        A :class:`SinkhornResult`. In distributed mode the labels of each rank are the rows of the
        single-process solution for that rank's rows (equal up to floating-point summation order).
    """
    if log_p.dim() != 2:
        raise ValueError(f"log_p must be [N, K], got shape {tuple(log_p.shape)}")
    rs = None if r is None else r.reshape(1, -1)
    return _solve([log_p], log_p.shape[0], log_p.shape[1], rs, lam=lam, tol=tol, max_iters=max_iters,
                  return_plan=return_plan, group=_resolve_group(group, distributed),
                  check_every=check_every, device=log_p.device)[0]


def sinkhorn_multihead(
    log_ps: Tensor | Sequence[Tensor],
    rs: Tensor | Sequence[Tensor | None] | None = None,
    *,
    lam: float = 20.0,
    tol: float = 1e-6,
    max_iters: int = 1000,
    return_plan: bool = False,
    group: Any | None = None,
    distributed: bool | None = None,
    check_every: int = 5,
    heads_per_batch: int | None = None,
    max_batch_bytes: int | None = None,
) -> list[SinkhornResult]:
    """Solve eq. 3 independently for H heads, several heads at a time (batched matrix-vector products).

    Args:
        log_ps: [H, N_local, K] tensor, or a list of H tensors [N_local, K_h] (heads with equal shapes
            are batched together; different K are solved in separate batches).
        rs: None (uniform for every head), one [K] tensor shared by all heads, a [H, K] tensor, or a
            list of H tensors/None.
        lam: as :func:`sinkhorn`.
        tol: as :func:`sinkhorn`; heads of a batch iterate until all of them meet it (extra iterations
            only tighten the others); ``iterations`` is the batch's count.
        max_iters: as :func:`sinkhorn`.
        return_plan: as :func:`sinkhorn`.
        group: as :func:`sinkhorn`.
        distributed: as :func:`sinkhorn`.
        check_every: as :func:`sinkhorn`.
        heads_per_batch: heads solved together; default: as many as fit in ``max_batch_bytes`` of
            float64 kernel, at least one. In distributed mode the batch size is made equal on all
            ranks (one scalar all-reduce).
        max_batch_bytes: the kernel memory of one batch (default: 40% of free GPU memory on CUDA,
            2 GiB on CPU).

    Returns:
        One :class:`SinkhornResult` per head, in order.
    """
    heads = list(log_ps.unbind(0)) if isinstance(log_ps, Tensor) else list(log_ps)
    n_heads = len(heads)
    if n_heads == 0:
        return []
    for h in heads:
        if h.dim() != 2:
            raise ValueError(f"each head's log_p must be [N, K], got shape {tuple(h.shape)}")
    if rs is None:
        r_list: list[Tensor | None] = [None] * n_heads
    elif isinstance(rs, Tensor):
        r_list = list(rs.unbind(0)) if rs.dim() == 2 else [rs] * n_heads
    else:
        r_list = list(rs)
    if len(r_list) != n_heads:
        raise ValueError(f"got {len(r_list)} marginals for {n_heads} heads")
    grp = _resolve_group(group, distributed)
    device = heads[0].device

    if heads_per_batch is None:
        n_max = max(h.shape[0] * h.shape[1] for h in heads)
        if max_batch_bytes is None:
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                max_batch_bytes = int(0.4 * free)
            else:
                max_batch_bytes = 2 << 30
        heads_per_batch = max(1, min(n_heads, max_batch_bytes // max(1, 8 * n_max)))
        if grp is not _LOCAL:
            t = torch.tensor([heads_per_batch], dtype=torch.float64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MIN, group=grp)
            heads_per_batch = int(t.item())
    heads_per_batch = max(1, int(heads_per_batch))

    results: list[SinkhornResult | None] = [None] * n_heads
    # Group heads by shape (order-preserving), then cut each group into batches.
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, h in enumerate(heads):
        by_shape.setdefault((h.shape[0], h.shape[1]), []).append(i)
    for (n, k), idx in by_shape.items():
        for s in range(0, len(idx), heads_per_batch):
            chunk = idx[s:s + heads_per_batch]
            r_chunk = None
            if any(r_list[i] is not None for i in chunk):
                r_chunk = torch.stack([_uniform(k, device) if (ri := r_list[i]) is None
                                       else ri.reshape(-1).to(device=device, dtype=torch.float64)
                                       for i in chunk])
            out = _solve([heads[i] for i in chunk], n, k, r_chunk, lam=lam, tol=tol, max_iters=max_iters,
                         return_plan=return_plan, group=grp, check_every=check_every, device=device)
            for i, res in zip(chunk, out):
                results[i] = res
    return [res for res in results if res is not None]


# --------------------------------------------------------------------------------------------------


def _resolve_group(group: Any | None, distributed: bool | None) -> Any:
    """The process group to reduce over, or ``_LOCAL`` for a single-process solve."""
    if distributed is False:
        return _LOCAL
    if not (dist.is_available() and dist.is_initialized()):
        if distributed or group is not None:
            raise RuntimeError("distributed Sinkhorn asked for but torch.distributed is not initialised")
        return _LOCAL
    grp = dist.group.WORLD if group is None else group
    if dist.get_world_size(grp) == 1:
        return _LOCAL
    return grp


def _all_reduce(t: Tensor, op: Any, group: Any) -> Tensor:
    """All-reduce ``t`` in place over ``group`` (no-op for a local solve)."""
    if group is not _LOCAL:
        dist.all_reduce(t, op=op, group=group)
    return t


def _uniform(k: int, device: torch.device) -> Tensor:
    return torch.full((k,), 1.0 / k, dtype=torch.float64, device=device)


def _col_sums(kern: Tensor, a: Tensor) -> Tensor:
    """``[h, k] -> sum_i a[h, i] kern[h, i, k]``: one BLAS matrix-vector product per head.

    (Per-head ``mv`` is much faster than a batched ``matmul`` of vector-shaped operands on CPU.)
    """
    if kern.shape[1] == 0:
        return torch.zeros((kern.shape[0], kern.shape[2]), dtype=kern.dtype, device=kern.device)
    return torch.stack([torch.mv(kern[h].T, a[h]) for h in range(kern.shape[0])])


def _row_sums(kern: Tensor, b: Tensor) -> Tensor:
    """``[h, i] -> sum_k kern[h, i, k] b[h, k]``: one BLAS matrix-vector product per head."""
    if kern.shape[1] == 0:
        return torch.zeros(kern.shape[:2], dtype=kern.dtype, device=kern.device)
    return torch.stack([torch.mv(kern[h], b[h]) for h in range(kern.shape[0])])


def _fill_kernel(out: Tensor, heads: Sequence[Tensor], lam: float, alpha: Tensor, beta: Tensor) -> Tensor:
    """``out[h] = exp(lam * log_p[h] + alpha[h, :, None] + beta[h, None, :])``, flushed below 1e-300."""
    for h, lp in enumerate(heads):
        out[h].copy_(lp)
    out.mul_(lam).add_(alpha.unsqueeze(2)).add_(beta.unsqueeze(1)).exp_()
    torch.threshold_(out, _FLUSH, 0.0)
    return out


def _solve(
    heads: Sequence[Tensor],
    n_local: int,
    k: int,
    r: Tensor | None,
    *,
    lam: float,
    tol: float,
    max_iters: int,
    return_plan: bool,
    group: Any,
    check_every: int,
    device: torch.device,
) -> list[SinkhornResult]:
    """Batched Sinkhorn-Knopp on B heads with equal shape [n_local, k] (see the module docstring)."""
    f64 = torch.float64
    b_heads = len(heads)
    if k < 1:
        raise ValueError("log_p must have at least one column (K >= 1)")
    if lam <= 0 or not math.isfinite(lam):
        raise ValueError(f"lam must be a positive number, got {lam}")
    if max_iters < 0 or check_every < 1:
        raise ValueError("max_iters must be >= 0 and check_every >= 1")

    # Marginal r: [B, K], non-negative, normalised.
    if r is None:
        r = _uniform(k, device).expand(b_heads, k).clone()
    else:
        if r.numel() not in (k, b_heads * k):
            raise ValueError(f"r must have K = {k} entries per head, got shape {tuple(r.shape)}")
        r = r.to(device=device, dtype=f64).reshape(-1, k)
        if r.shape[0] == 1 and b_heads > 1:
            r = r.expand(b_heads, k).clone()
        if r.shape[0] != b_heads:
            raise ValueError(f"r must have shape [K] = [{k}], got {tuple(r.shape)}")
        if not bool(torch.isfinite(r).all()) or bool((r < 0).any()) or bool((r.sum(1) <= 0).any()):
            raise ValueError("r must be finite, non-negative and have a positive sum")
        r = r / r.sum(1, keepdim=True)
    positive = r > 0

    # Validate rows locally, agree globally (so that all ranks raise together), count N.
    bad = 0.0
    for lp in heads:
        if lp.shape[0] > 0:
            row_max = lp.detach().amax(1)
            bad += float((~torch.isfinite(row_max)).sum())
    stats = _all_reduce(torch.tensor([float(n_local), bad], dtype=f64, device=device), dist.ReduceOp.SUM, group)
    n_global, n_bad = int(round(stats[0].item())), stats[1].item()
    if n_bad > 0:
        raise ValueError("log_p has rows with NaN, +inf or all -inf entries")
    if n_global == 0:
        raise ValueError("log_p has no rows (N = 0 on every rank)")
    c = 1.0 / n_global

    # Kernel with the double shift: column maxima first (all-reduced), then row maxima.
    kern = torch.empty((b_heads, n_local, k), dtype=f64, device=device)
    for h, lp in enumerate(heads):
        kern[h].copy_(lp.detach())
    kern.mul_(lam)
    col_max = kern.amax(1) if n_local > 0 else torch.full((b_heads, k), -math.inf, dtype=f64, device=device)
    _all_reduce(col_max, dist.ReduceOp.MAX, group)
    if bool((torch.isneginf(col_max) & positive).any()):
        raise ValueError("a cluster with positive prior mass has log-probability -inf for every sample")
    col_max = torch.where(torch.isfinite(col_max), col_max, torch.zeros_like(col_max))
    kern.sub_(col_max.unsqueeze(1))
    row_max = kern.amax(2) if k > 0 else torch.zeros((b_heads, n_local), dtype=f64, device=device)
    kern.sub_(row_max.unsqueeze(2)).exp_()
    torch.threshold_(kern, _FLUSH, 0.0)
    alpha = -row_max  # kern = exp(lam * log_p + alpha + beta)
    beta = -col_max

    b = torch.ones((b_heads, k), dtype=f64, device=device)
    a = c / _row_sums(kern, b).clamp_min(_CLAMP)
    it = 0
    err = torch.full((b_heads,), math.inf, dtype=f64)
    while True:
        col = _all_reduce(_col_sums(kern, a), dist.ReduceOp.SUM, group)  # [B, K]
        check = it % check_every == 0 or it >= max_iters
        if check:
            mass = b * col  # column sums of the current plan diag(a) kern diag(b)
            dev = (mass - r).abs()
            rel = torch.where(positive, dev / torch.where(positive, r, torch.ones_like(r)), dev)
            err = rel.amax(1).cpu()
            if float(err.max()) < tol or it >= max_iters:
                break
        b = torch.where(positive, r / col.clamp_min(_CLAMP), torch.zeros_like(r))
        a = c / _row_sums(kern, b).clamp_min(_CLAMP)
        it += 1
        if check:
            # Stabilisation: absorb large scalings into the shifts and recompute the kernel from log_p.
            # The b decision is global (b is identical on all ranks); the a decision is local.
            big_b = bool((positive & ((b > _ABSORB_HI) | (b < _ABSORB_LO))).any())
            big_a = bool(((a > _ABSORB_HI) | (a < _ABSORB_LO)).any())
            if big_b or big_a:
                alpha = alpha + a.log()
                a = torch.ones_like(a)
                if big_b:
                    beta = torch.where(positive, beta + b.log(), beta)
                    b = torch.where(positive, torch.ones_like(b), torch.zeros_like(b))
                _fill_kernel(kern, [lp.detach() for lp in heads], lam, alpha, beta)
                kern.mul_(positive.unsqueeze(1))

    if float(err.max()) >= tol:
        warnings.warn(f"Sinkhorn-Knopp did not reach tol={tol:g} in {max_iters} iterations "
                      f"(max relative marginal error {float(err.max()):.3g})", RuntimeWarning, stacklevel=3)
    plan = kern.mul_(a.unsqueeze(2)).mul_(b.unsqueeze(1))  # in place: Q = diag(a) M diag(b)
    labels = plan.argmax(2) if n_local > 0 else torch.zeros((b_heads, 0), dtype=torch.int64, device=device)
    return [SinkhornResult(labels=labels[h], plan=plan[h] if return_plan else None, iterations=it,
                           error=float(err[h])) for h in range(b_heads)]
