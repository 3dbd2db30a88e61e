"""The ``train`` rows of ``metrics.jsonl``: loss, learning rate, clips/s and data wait over a window of steps."""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["Throughput"]


class Throughput:
    """The steps since the last row; a label solve in between is not training time (:meth:`reset`)."""

    def __init__(self, clips_per_step: int) -> None:
        self.clips_per_step = clips_per_step
        self.reset()

    def reset(self) -> None:
        self.t = time.perf_counter()
        self.wait = 0.0
        self.steps = 0
        self.loss: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, wait: float) -> None:
        """One step: its loss (a device tensor, read only in :meth:`row`) and its wait for data (s)."""
        self.loss.append(loss)
        self.wait += wait
        self.steps += 1

    def row(self, step: int, epoch: float, lr: float) -> dict[str, Any]:
        """The ``train`` row of the window (then a new window starts)."""
        now = time.perf_counter()
        dt = max(now - self.t, 1e-9)
        loss = float(torch.stack(self.loss).mean()) if self.loss else float("nan")
        m = {"event": "train", "step": step, "epoch": round(epoch, 4), "loss": loss, "lr": lr,
             "clips_per_s": round(self.steps * self.clips_per_step / dt, 2), "data_wait": round(self.wait / dt, 4)}
        self.reset()
        self.t = now
        return m
