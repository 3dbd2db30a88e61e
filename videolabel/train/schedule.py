"""The learning-rate schedule of a run (method.md "Training loop")."""

from __future__ import annotations

import math

__all__ = ["learning_rate", "scaled_lr"]


def scaled_lr(lr: float, batch_size: int, world_size: int) -> float:
    """The base learning rate: ``lr`` is given per 16 clips and scaled linearly with the global batch."""
    return lr * batch_size * world_size / 16.0


def learning_rate(step: int, base_lr: float, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The learning rate at ``step``.

    Linear warm-up to ``base_lr`` over ``warmup_steps``, then constant or (``schedule="cosine"``) cosine
    decay to 0 at ``total_steps``.
    """
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup_steps) / span))
    return base_lr
