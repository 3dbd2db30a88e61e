"""The learning-rate schedule, by hand."""

from __future__ import annotations

import math

from videolabel.train.schedule import learning_rate, scaled_lr


def test_learning_rate_warmup_then_schedule():
    assert [learning_rate(s, 1.0, 4, 20, "constant") for s in (0, 3, 4, 19)] == [0.25, 1.0, 1.0, 1.0]
    cos = [learning_rate(s, 2.0, 0, 10, "cosine") for s in range(11)]
    assert cos[0] == 2.0 and abs(cos[5] - 1.0) < 1e-12 and abs(cos[10]) < 1e-12
    assert all(a >= b for a, b in zip(cos, cos[1:]))


def test_cosine_after_warmup_by_hand():
    # warm-up 2 of 10 steps: 0.5, 1.0, then cos over the remaining span of 8 steps
    lrs = [learning_rate(s, 1.0, 2, 10, "cosine") for s in range(10)]
    assert lrs[:2] == [0.5, 1.0]
    for s in range(2, 10):
        assert math.isclose(lrs[s], 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)), rel_tol=0, abs_tol=1e-15)
    assert learning_rate(5, 0.1, 0, 5, "cosine") == 0.0  # span ends at total_steps
    assert learning_rate(0, 0.3, 0, 1, "constant") == 0.3  # no warm-up: the base rate at once


def test_scaled_lr_is_per_16_clips():
    assert scaled_lr(0.01, 16, 1) == 0.01
    assert scaled_lr(0.001, 32, 2) == 0.004
