"""The typer application every command module registers on, and :func:`fail`."""

from __future__ import annotations

import typer

__all__ = ["app", "fail"]

app = typer.Typer(
    name="videolabel",
    help="Label an unlabelled video collection from scratch, from its pictures and its sound (SeLaVi).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from videolabel import __version__

        typer.echo(f"videolabel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Label an unlabelled video collection from scratch, from its pictures and its sound (SeLaVi)."""


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit with ``code``."""
    typer.echo(f"videolabel: error: {message}", err=True)
    raise typer.Exit(code)
