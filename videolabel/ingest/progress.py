"""Ingest progress: a rich bar on a terminal, plain log lines on stderr otherwise, or nothing."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from videolabel.errors import VideolabelError
from videolabel.train.progress import PROGRESS_MODES

if TYPE_CHECKING:
    from rich.progress import TaskID

__all__ = ["PROGRESS_MODES", "make_reporter"]


class _Reporter:
    def start(self, total: int, note: str) -> None: ...
    def update(self, done: int, failed: int) -> None: ...
    def log(self, text: str) -> None: ...
    def stop(self) -> None: ...


class _LogReporter(_Reporter):
    """Plain lines on stderr, at most every ``every`` seconds."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.t0 = self.last = time.monotonic()
        self.total = 0

    def start(self, total: int, note: str) -> None:
        self.total, self.t0 = total, time.monotonic()
        self.log(note)

    def update(self, done: int, failed: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        eta_s = "?" if eta != eta else time.strftime("%H:%M:%S", time.gmtime(eta))
        self.log(f"{done}/{self.total} videos, {failed} failed, {rate:.2f} videos/s, ETA {eta_s}")

    def log(self, text: str) -> None:
        print(f"videolabel ingest: {text}", file=sys.stderr, flush=True)


class _RichReporter(_Reporter):
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.2f} videos/s"), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]} failed"), console=self.console, transient=False,
        )
        self.t0 = time.monotonic()
        self.task: TaskID | None = None

    def start(self, total: int, note: str) -> None:
        self.console.print(note)
        self.t0 = time.monotonic()
        self.progress.start()
        self.task = self.progress.add_task("ingest", total=total, rate=0.0, failed=0)

    def update(self, done: int, failed: int) -> None:
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        if self.task is not None:
            self.progress.update(self.task, completed=done, rate=rate, failed=failed)

    def log(self, text: str) -> None:
        self.progress.console.print(text)

    def stop(self) -> None:
        self.progress.stop()


def make_reporter(mode: str) -> _Reporter:
    """The reporter of a ``--progress`` mode ("auto": rich on a terminal, log lines otherwise)."""
    if mode not in PROGRESS_MODES:
        raise VideolabelError(f"progress must be one of {', '.join(PROGRESS_MODES)}, not {mode!r}")
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "log"
    if mode == "rich":
        return _RichReporter()
    if mode == "log":
        return _LogReporter()
    return _Reporter()
