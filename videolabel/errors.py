"""Errors a user can act on. The CLI prints them as one line and exits non-zero, never a traceback."""

from __future__ import annotations


class VideolabelError(Exception):
    """A user-facing error: bad flag, missing file, mismatched cache or run. ``exit_code`` is the CLI code."""

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for
    one-line user errors about files a library could not parse."""
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


class ConfigMismatchError(VideolabelError):
    """A cache or run was made with a different configuration than the one asked for."""


class TooManyFailuresError(VideolabelError):
    """More inputs failed than ``--max-failures`` allows (exit code 3)."""

    exit_code = 3
