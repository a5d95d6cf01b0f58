"""The click classes of unistatus's programs: an error escaping a command is one line.

Errors derived from :class:`unistatus.UnistatusError` (and any other) become one line on
stderr and exit code 2, ``--debug`` shows the traceback; click's own usage errors keep
click's message and its exit code 2. Given ``--json``, an error is also one JSON object
on stdout (:func:`unistatus.cli.context.abort`). The group is the `unistatus` command; the command
class serves a program that is one command (scripts/load_test_dual_write.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from unistatus.cli.context import AppState, abort_from, note_json


def _invoke(ctx: Any, invoke: Callable[[Any], Any]) -> Any:
    try:
        return invoke(ctx)
    except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        if type(exc).__module__.startswith(("click", "typer")):
            raise  # usage errors: click prints them with exit code 2 itself
        debug = isinstance(ctx.obj, AppState) and ctx.obj.debug
        abort_from(exc, debug=debug)


class ErrorsShownGroup(TyperGroup):
    """A command group whose commands' errors are one line and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        return _invoke(ctx, super().invoke)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        note_json(args)  # the whole command line: its subcommands' options too
        return super().parse_args(ctx, args)


class ErrorsShownCommand(TyperCommand):
    """A single-command program whose errors are one line and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        return _invoke(ctx, super().invoke)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        note_json(args)
        return super().parse_args(ctx, args)
