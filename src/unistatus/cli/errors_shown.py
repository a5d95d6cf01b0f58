"""The click classes of unistatus's programs: an error escaping a command is one line.

Errors derived from :class:`unistatus.UnistatusError` (and any other) become one line on
stderr and exit code 2, ``--debug`` shows the traceback; click's own usage errors keep
click's message and its exit code 2. Given ``--json``, an error is also one JSON object
on stdout (:func:`unistatus.cli.context.abort`), a usage error too (``"error":
"UsageError"``). Ctrl-C (or SIGTERM) that no command said itself is said as an
interruption (one line, exit 130: :func:`unistatus.cli.context.say_interrupted`), not
Typer's silent exit 130; one before that handling is in place (Typer building the
command tree, the command line parsed) is one of the start-up
(:func:`says_interrupted_while_starting`). The group is the `unistatus` command; the
command class serves a program that is one command (scripts/load_test_dual_write.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from unistatus.cli.context import (
    EXIT_INTERRUPTED,
    INTERRUPTED_BEFORE_DONE,
    AppState,
    abort_from,
    note_json,
    say_error_as_json,
    say_interrupted,
    tell_interrupted,
)
from unistatus.cli.help_changes import change_rich_help
from unistatus.interrupts import INTERRUPTED_WHILE_STARTING

# Click's exception classes as Typer raises them: Typer 0.29 raises those of a click of
# its own (``typer._click``), older Typers those of the click package.
_CLICK_ERRORS = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
ClickException: type[Exception] = _CLICK_ERRORS["ClickException"]
UsageError: type[Exception] = _CLICK_ERRORS["UsageError"]


# Whether the command's own handling of an interruption is in place (:func:`_invoke`):
# before it, an interruption is one of the start-up's.
_HANDLING_INTERRUPTS: ContextVar[bool] = ContextVar("unistatus_handling_interrupts", default=False)


@contextmanager
def says_interrupted_while_starting(args: Sequence[str]) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) in the block before the command's own handling of it is in
    place (:func:`_invoke`) is said as one during the imports is
    (:data:`unistatus.interrupts.INTERRUPTED_WHILE_STARTING`: one line, exit 130, under
    ``--json`` in ``args`` one JSON object). Typer building the command tree (a few
    tenths of a second) let it out as a traceback; click parsing the command line, or
    any moment after until the command was invoked, ended in Typer's exit 130 with not a
    word (told by the exit and by the handling not in place yet). One that reaches here
    once the command has handled interrupts (its ending) ends as Typer ends one: 130."""
    note_json(args)  # before the group does: it may be interrupted before it parses
    _HANDLING_INTERRUPTS.set(False)
    try:
        yield
    except KeyboardInterrupt:
        if _HANDLING_INTERRUPTS.get():
            raise SystemExit(EXIT_INTERRUPTED) from None
        _interrupted_while_starting()
    except SystemExit as end:
        if end.code != EXIT_INTERRUPTED or _HANDLING_INTERRUPTS.get():
            raise
        _interrupted_while_starting()


def _interrupted_while_starting() -> NoReturn:
    tell_interrupted(INTERRUPTED_WHILE_STARTING)
    raise SystemExit(EXIT_INTERRUPTED) from None


def _invoke(ctx: Any, invoke: Callable[[Any], Any]) -> Any:
    try:
        # First: an interrupt from here is this block's to say (said twice otherwise).
        _HANDLING_INTERRUPTS.set(True)
        return invoke(ctx)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except KeyboardInterrupt:  # one its command did not say (Typer would exit 130 silently)
        say_interrupted(INTERRUPTED_BEFORE_DONE)
    except ClickException as exc:
        _said_as_json(exc)
        change_rich_help()  # Typer prints the error through its rich help's console
        raise  # usage errors: click prints them with exit code 2 itself
    except Exception as exc:
        if type(exc).__module__.startswith(("click", "typer")):
            raise
        debug = isinstance(ctx.obj, AppState) and ctx.obj.debug
        abort_from(exc, debug=debug)


def _parse_args(
    ctx: Any, args: list[str], parse: Callable[[Any, list[str]], list[str]]
) -> list[str]:
    note_json(args)  # the whole command line: its subcommands' options too
    try:
        return parse(ctx, args)
    except ClickException as exc:
        _said_as_json(exc)
        change_rich_help()
        raise


def _said_as_json(exc: Any) -> None:
    error = "UsageError" if isinstance(exc, UsageError) else type(exc).__name__
    say_error_as_json(exc.format_message(), exc.exit_code, error=error)


class ErrorsShownGroup(TyperGroup):
    """A command group whose commands' errors are one line and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        return _invoke(ctx, super().invoke)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return _parse_args(ctx, args, super().parse_args)


class ErrorsShownCommand(TyperCommand):
    """A single-command program whose errors are one line and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        return _invoke(ctx, super().invoke)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return _parse_args(ctx, args, super().parse_args)
