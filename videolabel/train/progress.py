"""Training progress on rank 0: a rich bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

#: the progress modes of ``videolabel train`` and ``videolabel ingest`` (ingest.progress imports this tuple)
PROGRESS_MODES = ("auto", "rich", "log", "none")


class TrainProgress:
    """``mode``: "auto" (rich on a terminal, log lines otherwise), "rich", "log" or "none"."""

    def __init__(self, mode: str = "auto", stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "log"
        self.mode = mode
        self._bar: Any = None
        self._task: Any = None
        self._total = 0
        self._t0 = 0.0

    def start(self, total: int, done: int, solves: int | None = None) -> None:
        """Open the bar (or log the first line) at ``done`` of ``total`` steps; ``solves``: the run's label solves,
        said once at the start (a ``tiny`` run's count follows its length)."""
        self._total, self._t0 = total, time.time()
        said = f", {solves} label solves" if solves is not None else ""
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=total, completed=done, info=said.lstrip(", "))
        elif self.mode == "log":
            print(f"train: {done}/{total} steps{said}", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        """One line for the user outside the bar (a slow step about to start); nothing in mode "none"."""
        if self.mode == "rich" and self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        elif self.mode != "none":
            print(message, file=self.stream, flush=True)

    def update(self, step: int, m: dict[str, Any]) -> None:
        info = (f"loss {m.get('loss', float('nan')):.3f}  {m.get('clips_per_s', 0):.1f} clips/s  "
                f"data_wait {100 * m.get('data_wait', 0):.0f}%  lr {m.get('lr', 0):.4g}")
        if self.mode == "rich" and self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif self.mode == "log":
            print(f"train: step {step}/{self._total} epoch {m.get('epoch', 0):.2f}  {info}",
                  file=self.stream, flush=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
