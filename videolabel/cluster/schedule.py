"""When to run the Sinkhorn-Knopp solves during training (paper appendix A.2: "an inverse quadratic
clustering schedule with 100 clustering operations", adopted from SeLa).

Solve i (i = 0 .. n-1) happens at training step ``floor((i / n) ** power * total_steps)``. With
``power > 1`` the solves are dense at the start, when the representation (and so the labels) changes
fastest, and sparse at the end (SeLa uses power 2, the SeLaVi scripts 1.5). We divide by n rather than
n - 1 so that the last solve (fraction ``((n-1)/n)^power``) still has training steps after it: a solve
at the very last step would produce labels nobody trains on. Solve 0 is at step 0: training starts from
labels, not from nothing.
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

__all__ = ["clustering_schedule", "solves_before"]


def clustering_schedule(total_steps: int, n_solves: int = 100, power: float = 1.5) -> list[int]:
    """The training steps at which to solve for labels.

    Args:
        total_steps: number of optimisation steps of the whole run (>= 1).
        n_solves: number of solves wanted (the paper: 100).
        power: the schedule's exponent; > 1 is denser at the start, 1 is evenly spaced.

    Returns:
        ``min(n_solves, total_steps)`` strictly increasing steps, the first 0, all < ``total_steps``.
        Where rounding makes two solves collide (short runs), later solves are pushed one step later
        and, if that would run past the end, earlier ones one step earlier, so the count is kept.
    """
    if int(total_steps) != total_steps or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if int(n_solves) != n_solves or n_solves < 1:
        raise ValueError(f"n_solves must be a positive integer, got {n_solves!r}")
    if not (power > 0 and math.isfinite(power)):
        raise ValueError(f"power must be positive, got {power!r}")
    total_steps, n_solves = int(total_steps), int(n_solves)
    n = min(n_solves, total_steps)
    steps = [min(total_steps - 1, math.floor((i / n_solves) ** power * total_steps)) for i in range(n_solves)]
    if n < n_solves:  # more solves than steps: solve at every step
        return list(range(total_steps))
    for i in range(1, n):  # forward: strictly increasing
        steps[i] = max(steps[i], steps[i - 1] + 1)
    steps[-1] = min(steps[-1], total_steps - 1)
    for i in range(n - 2, -1, -1):  # backward: stay below total_steps
        steps[i] = min(steps[i], steps[i + 1] - 1)
    return steps


def solves_before(schedule: Sequence[int], step: int) -> int:
    """How many solves of ``schedule`` (sorted) happen strictly before ``step``.

    Use it to resume: at the start of ``step``, ``solves_before(schedule, step)`` solves are done and the
    next one due is ``schedule[solves_before(schedule, step)]`` (if any).
    """
    return bisect.bisect_left(schedule, step)
