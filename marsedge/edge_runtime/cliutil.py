"""What ``marsedge`` and ``marsedge-run`` share on the command line: usage errors as one
``error:`` line with exit code 2, like every other error the commands print.

Typer's own rendering of a bad option value is a boxed panel of several lines; these
command classes print the parser's message on one line instead. They rely only on the
attributes every Click/Typer version gives its exceptions (``exit_code``,
``format_message``), so they work with the typer versions the package allows.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

USAGE_EXIT_CODE = 2


class _OneLineErrors:
    """Mixin for a Typer command or group: usage errors as ``error: MESSAGE`` (exit 2)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        except Exception as exc:
            kind = type(exc).__name__
            if kind == "NoArgsIsHelpError":  # a bare `marsedge`: the help, as the parser would
                typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
                sys.exit(USAGE_EXIT_CODE)
            if kind == "Abort":
                typer.echo("error: aborted", err=True)
                sys.exit(1)
            code = getattr(exc, "exit_code", None)
            if isinstance(code, int) and hasattr(exc, "format_message"):
                message = " ".join(str(exc.format_message()).split())
                typer.echo(f"error: {message}", err=True)
                sys.exit(code)
            raise
        sys.exit(result if isinstance(result, int) else 0)


class OneLineErrorsGroup(_OneLineErrors, TyperGroup):
    """``typer.Typer(cls=OneLineErrorsGroup)`` for a program with sub-commands."""


class OneLineErrorsCommand(_OneLineErrors, TyperCommand):
    """``@app.command(cls=OneLineErrorsCommand)`` for a single-command program."""
