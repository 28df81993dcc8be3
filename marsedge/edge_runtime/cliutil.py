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


def plain_metavars(command: Any) -> None:
    """Help shows a flag as a flag: no ``<bool>`` after ``--tta`` (it takes no value), and
    a number with bounds as ``<int>``/``<float>`` followed by its range, for ``command`` and,
    for a group, each of its sub-commands."""
    params = list(getattr(command, "params", ()))
    try:  # the --help option, made once and kept by the command
        params.append(command.get_help_option(typer.Context(command, help_option_names=["--help"])))
    except Exception:  # a typer without it: the help option keeps its rendering
        pass
    for param in params:
        if param is None or getattr(param, "metavar", None) is not None:
            continue
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        else:  # typer 0.2x describes types itself; older ones through click's param.type
            descriptor = getattr(param, "type_descriptor", None)
            if descriptor is not None and getattr(descriptor, "is_ranged", False):
                param.metavar = f"<{descriptor.ranged_type_name}>"
    for sub in (getattr(command, "commands", None) or {}).values():
        plain_metavars(sub)


class _OneLineErrors:
    """Mixin for a Typer command or group: usage errors as ``error: MESSAGE`` (exit 2)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        plain_metavars(self)
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
