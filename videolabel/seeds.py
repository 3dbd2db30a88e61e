"""Seeds derived from the run seed and (what, when), so that a resumed run repeats an uninterrupted one.

Every random choice of a run (data order, clip choice, augmentations, head split, prior draw) gets its own
generator seeded by :func:`seed_for` ``(seed, what, when...)``; the ``what`` tags are below.
"""

from __future__ import annotations

import torch

# what-tags for seed_for
EPOCH, STEP, LABEL, SPLIT, ALIGN, PRIOR, BN, DISTILL = 1, 2, 3, 4, 5, 6, 7, 8


def seed_for(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from the run seed and a tuple of integers (what, when): FNV-1a style."""
    h = 1469598103934665603
    for v in (seed, *parts):
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 64)
    return h & 0x7FFFFFFFFFFFFFFF


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
