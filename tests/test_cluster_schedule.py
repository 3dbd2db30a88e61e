"""The clustering schedule (appendix A.2): 100 solves, dense at the start."""

from __future__ import annotations

import math

import pytest

from videolabel.cluster.schedule import clustering_schedule, solves_before


@pytest.mark.parametrize("total", [1, 2, 7, 99, 100, 101, 120, 150, 1000, 12345, 10**6])
@pytest.mark.parametrize("power", [1.0, 1.5, 2.0])
def test_count_monotone_endpoints(total: int, power: float) -> None:
    steps = clustering_schedule(total, 100, power)
    assert len(steps) == min(100, total)
    assert steps[0] == 0
    assert all(b > a for a, b in zip(steps, steps[1:]))
    assert steps[-1] < total


def test_formula_without_collisions() -> None:
    total = 10**6
    steps = clustering_schedule(total, 100, 1.5)
    assert steps == [math.floor((i / 100) ** 1.5 * total) for i in range(100)]


def test_power_makes_the_start_denser() -> None:
    total = 100_000
    even = clustering_schedule(total, 100, 1.0)
    p15 = clustering_schedule(total, 100, 1.5)
    p2 = clustering_schedule(total, 100, 2.0)
    first_half = [sum(s < total // 2 for s in steps) for steps in (even, p15, p2)]
    assert first_half[0] == 50 and first_half[0] < first_half[1] < first_half[2]
    gaps = [b - a for a, b in zip(p2, p2[1:])]
    assert all(g2 >= g1 for g1, g2 in zip(gaps, gaps[1:]))  # gaps grow: dense start, sparse end


def test_short_runs_keep_the_count() -> None:
    assert clustering_schedule(50, 100) == list(range(50))
    assert clustering_schedule(100, 100) == list(range(100))
    steps = clustering_schedule(130, 100, 2.0)
    assert len(set(steps)) == 100 and steps[-1] < 130


def test_solves_before() -> None:
    steps = clustering_schedule(1000, 10, 1.5)
    assert solves_before(steps, 0) == 0
    assert solves_before(steps, 1) == 1
    assert solves_before(steps, 1000) == 10
    for i, s in enumerate(steps):
        assert solves_before(steps, s) == i
        assert solves_before(steps, s + 1) == i + 1


def test_invalid_arguments() -> None:
    for args in [(0, 100, 1.5), (10, 0, 1.5), (10, 10, 0.0), (10.5, 10, 1.5)]:
        with pytest.raises(ValueError):
            clustering_schedule(*args)
