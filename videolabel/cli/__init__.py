"""The ``videolabel`` command line: a thin typer shell over the library.

Each command parses its flags, calls one library function and prints. A :class:`VideolabelError`
becomes one line on stderr and a non-zero exit code, never a traceback.

One module per command (or group of commands) registers on the typer :data:`~videolabel.cli.app.app`;
importing them here, in this order, gives ``--help`` its order.
"""

from __future__ import annotations

import sys

import typer

from videolabel.cli.app import app, fail
from videolabel.errors import VideolabelError

# isort: off
from videolabel.cli import ingest_cmd, train_cmd, assign_cmd, labels_cmd, browse_cmd  # noqa: F401 - registers, in order
# isort: on

__all__ = ["app", "fail", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except VideolabelError as exc:
        typer.echo(f"videolabel: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("videolabel: interrupted", err=True)
        sys.exit(130)
