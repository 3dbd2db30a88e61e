"""Stopping a run cleanly: SIGTERM / SIGUSR1 (SLURM pre-emption) and Ctrl-C checkpoint, then exit."""

from __future__ import annotations

import signal
import sys
from typing import Any

__all__ = ["EXIT_PREEMPTED", "StopFlag"]

#: Exit code of ``videolabel train`` when it stopped at a signal after writing a checkpoint.
EXIT_PREEMPTED = 75


class StopFlag:
    """SIGTERM / SIGUSR1 and a first Ctrl-C (SIGINT) set :attr:`raised`: finish the step, checkpoint, exit.

    A second Ctrl-C interrupts at once (the checkpoint of the last finished epoch remains).
    """

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        """Take over the three signals (in the main thread; elsewhere nothing is installed)."""
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self.raised:
                raise KeyboardInterrupt
            print("videolabel: interrupted: finishing the step and writing a checkpoint "
                  "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        self.raised = True

    def restore(self) -> None:
        """Give the signals back their previous handlers."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
