"""Cluster marginals r for eq. 2-3 and their matching to the current clusters (paper section 3.2, eq. 4-5).

Every function returns a float64 CPU tensor of K non-negative masses summing to 1. A non-uniform prior
is only known up to a permutation of the clusters; :func:`match_prior` picks the permutation that is
optimal for eq. 4, and must be called at every clustering step, before Sinkhorn-Knopp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from videolabel.errors import VideolabelError

__all__ = ["ADAPTIVE_FLOOR", "ADAPTIVE_WARMUP", "adaptive_prior", "uniform_prior", "gaussian_prior_masses",
           "load_prior", "match_prior"]

_MIN_MASS = 1e-6  # Gaussian draws are clipped to at least this (before normalisation)
#: ``prior="adaptive"``: no cluster's mass below this fraction of 1/K (a cluster the model stopped
#: predicting keeps a few videos, so it can come back)
ADAPTIVE_FLOOR = 0.1
#: ``prior="adaptive"``: the first quarter of a run's solves use the uniform prior (the predictions of a
#: young model say little about the data's class sizes and may have collapsed onto a few clusters)
ADAPTIVE_WARMUP = 0.25


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"the number of clusters must be a positive integer, got {k!r}")
    return int(k)


def uniform_prior(k: int) -> Tensor:
    """The uniform marginal r = 1/K of eq. 2 (all clusters a priori equally likely)."""
    k = _check_k(k)
    return torch.full((k,), 1.0 / k, dtype=torch.float64)


def gaussian_prior_masses(
    k: int,
    *,
    sigma: float = 0.1,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> Tensor:
    """Gaussian cluster masses (paper appendix A.2): m_k ~ N(1, sigma) * N/K, normalised to sum 1.

    The factor N/K disappears in the normalisation. Draws are clipped to at least 1e-6 so that every
    cluster keeps a positive mass (only relevant for sigma >~ 0.2). Draw once per head and keep the
    result (e.g. in the checkpoint): the prior is fixed for the run and re-ordered at every clustering
    step by :func:`match_prior`.

    Args:
        k: number of clusters.
        sigma: standard deviation of the masses around 1 (the paper uses 0.1).
        generator: a seeded ``torch.Generator`` (neither it nor ``seed``: torch's global RNG).
        seed: the seed of a fresh generator, instead of ``generator``.
    """
    k = _check_k(k)
    if sigma < 0:
        raise ValueError(f"sigma must be non-negative, got {sigma}")
    if generator is not None and seed is not None:
        raise ValueError("give either generator or seed, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    m = torch.randn(k, dtype=torch.float64, generator=generator).mul_(sigma).add_(1.0)
    m.clamp_(min=_MIN_MASS)
    return m / m.sum()


def adaptive_prior(log_p: Tensor, *, floor: float = ADAPTIVE_FLOOR, all_reduce=None) -> Tensor:
    """Cluster marginals estimated from the model's own predictions (not in the paper; issue 15).

    The paper fixes r before training (uniform, or Gaussian masses with the matching of eq. 4-5), which
    a collection whose class sizes follow a long tail does not obey: an equipartition splits the large
    classes and merges the small ones. Here r is the model's predicted mass of each cluster over the
    videos being labelled, ``r_k = max(mean_i p(k | x_i), floor / K)`` normalised to sum 1, with
    ``p = softmax(log_p)``: the same log-probabilities that Sinkhorn-Knopp (eq. 3) then balances. The
    predictions already name the clusters, so no matching (eq. 4-5) is needed. Its fixed point is a
    labelling whose cluster sizes are those the model predicts; the floor keeps every cluster alive.

    Args:
        log_p: [n, K] (log-)probabilities or logits of this process's videos (each row is normalised here).
        floor: the least mass, as a fraction of the uniform 1/K (0 <= floor <= 1).
        all_reduce: ``torch.distributed.all_reduce`` when the videos are sharded over processes (the
            masses are then summed over them), else None.

    Returns:
        [K] float64 masses on ``log_p``'s device, non-negative, summing to 1.
    """
    if log_p.ndim != 2 or log_p.shape[1] < 1:
        raise ValueError(f"log_p must be [n, K], got {tuple(log_p.shape)}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    k = log_p.shape[1]
    mass = torch.softmax(log_p.double(), dim=1).sum(0)
    count = torch.tensor([float(log_p.shape[0])], dtype=torch.float64, device=log_p.device)
    if all_reduce is not None:
        all_reduce(mass)
        all_reduce(count)
    if float(count) <= 0:
        return torch.full((k,), 1.0 / k, dtype=torch.float64, device=log_p.device)
    r = (mass / count).clamp(min=floor / k)
    return r / r.sum()


def load_prior(path: str | Path, k: int) -> Tensor:
    """Read K non-negative cluster masses from a file and normalise them to sum 1.

    Formats: ``.npy`` (a numeric array with K elements), or text/CSV: numbers separated by commas,
    semicolons, whitespace or newlines; lines starting with ``#`` are comments and a first line with no
    number at all (a CSV header) is skipped. The masses are unordered: :func:`match_prior` assigns them.

    Raises:
        VideolabelError: missing/unreadable file, non-numeric entries, wrong count, negative or
            non-finite values, or an all-zero prior.
    """
    k = _check_k(k)
    p = Path(path)
    if not p.is_file():
        raise VideolabelError(f"prior file not found: {p}")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file for the user
            raise VideolabelError(f"cannot read prior file {p} as .npy: {exc}") from exc
        if arr.dtype.kind not in "biuf":
            raise VideolabelError(f"prior file {p} must hold numbers, got dtype {arr.dtype}")
        values = np.asarray(arr, dtype=np.float64).reshape(-1)
    else:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise VideolabelError(f"cannot read prior file {p}: {exc}") from exc
        values_list: list[float] = []
        first_content_line = True
        for lineno, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            tokens = [t for t in line.replace(",", " ").replace(";", " ").split() if t]
            parsed: list[float] = []
            bad: str | None = None
            for t in tokens:
                try:
                    parsed.append(float(t))
                except ValueError:
                    bad = t
            if bad is not None:
                if first_content_line and not parsed:
                    first_content_line = False
                    continue  # a header line
                raise VideolabelError(f"prior file {p}, line {lineno}: {bad!r} is not a number")
            first_content_line = False
            values_list.extend(parsed)
        values = np.asarray(values_list, dtype=np.float64)
    if values.size != k:
        raise VideolabelError(f"prior file {p} holds {values.size} masses, expected K = {k}")
    if not np.all(np.isfinite(values)):
        raise VideolabelError(f"prior file {p} holds non-finite values")
    if np.any(values < 0):
        raise VideolabelError(f"prior file {p} holds negative masses")
    total = float(values.sum())
    if total <= 0:
        raise VideolabelError(f"prior file {p} sums to zero")
    return torch.from_numpy(values / total)


def match_prior(prior_masses: Tensor, cluster_sizes: Tensor) -> Tensor:
    """Permute the prior so that the k-th largest mass goes to the k-th largest cluster (eq. 4-5).

    Eq. 4 writes the energy of eq. 3 as a function of the permutation R applied to r:
    ``E(R) = const - sum_y q(y) [R log r]_y``, so the best R *maximises* ``sum_y q(y) log r_{pi(y)}``,
    where q(y) is the current mass of cluster y. By the exchange argument of eq. 5 (the rearrangement
    inequality) the maximum is reached by sorting both sequences the same way: the smallest prior mass
    to the smallest cluster, ..., the largest to the largest. Because log is increasing, the very same
    matching also maximises ``sum_y q(y) r_{pi(y)}``; both objectives are optimised by this function.
    (The authors' code takes 1/m after sorting, which pairs large masses with small clusters; we do not.)

    Args:
        prior_masses: [K] non-negative masses (any order; e.g. from :func:`gaussian_prior_masses`).
        cluster_sizes: [K] current cluster masses q(y): label counts from the previous solve, or the
            column sums of the softmax outputs before the first one. Any positive scale.

    Returns:
        float64 [K] tensor ``r`` with ``r[y]`` the prior mass given to cluster y, normalised to sum 1.
        Ties in ``cluster_sizes`` are broken by cluster index (stable sort), so the result is deterministic.
    """
    m = torch.as_tensor(prior_masses).detach().to(dtype=torch.float64).reshape(-1).cpu()
    q = torch.as_tensor(cluster_sizes).detach().to(dtype=torch.float64).reshape(-1).cpu()
    if m.numel() != q.numel():
        raise ValueError(f"prior has {m.numel()} masses but there are {q.numel()} clusters")
    if not bool(torch.isfinite(m).all()) or bool((m < 0).any()) or float(m.sum()) <= 0:
        raise ValueError("prior masses must be finite, non-negative, with a positive sum")
    if not bool(torch.isfinite(q).all()):
        raise ValueError("cluster sizes must be finite")
    m_sorted = torch.sort(m, stable=True).values  # increasing
    order = torch.sort(q, stable=True).indices  # clusters by increasing size
    r = torch.empty_like(m)
    r[order] = m_sorted
    return r / r.sum()
