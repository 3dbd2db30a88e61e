"""SeLaVi's self-labelling maths as small pure functions (paper section 3, appendix A).

- :mod:`.sinkhorn`  Sinkhorn-Knopp labels from log-probabilities (eq. 1-3), optionally row-sharded.
- :mod:`.priors`    cluster marginals r and their matching to the clusters (eq. 4-5).
- :mod:`.combine`   multi-modal single labelling: mean log-probabilities (eq. 6).
- :mod:`.align`     audio/visual head alignment by greedy pair swaps (eq. 7, appendix A.3).
- :mod:`.schedule`  when to solve during training (appendix A.2).
"""

from __future__ import annotations

from videolabel.cluster.align import AlignResult, align_heads, alignment_cost, permute_linear_
from videolabel.cluster.combine import combine_log_probs
from videolabel.cluster.priors import (
    gaussian_prior_masses,
    load_prior,
    match_prior,
    uniform_prior,
)
from videolabel.cluster.schedule import clustering_schedule, solves_before
from videolabel.cluster.sinkhorn import SinkhornResult, sinkhorn, sinkhorn_multihead

__all__ = [
    "AlignResult",
    "SinkhornResult",
    "align_heads",
    "alignment_cost",
    "clustering_schedule",
    "combine_log_probs",
    "gaussian_prior_masses",
    "load_prior",
    "match_prior",
    "permute_linear_",
    "sinkhorn",
    "sinkhorn_multihead",
    "solves_before",
    "uniform_prior",
]
