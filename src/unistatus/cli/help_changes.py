"""unistatus's changes to Typer's rich help, made when a help is first rendered.

Typer renders a help (and click's usage errors) with ``typer.rich_utils``, which brings
Rich's Markdown, its parser and its syntax highlighter: 0.1 s of every command's start-up
on the 2-core test machine, for a command that prints no help (Typer itself imports it
only to render one). So the changes to it (:mod:`unistatus.cli.help_examples`,
:mod:`unistatus.cli.help_format`) are made the first time a command or a group formats
its help (``format_help``, wrapped once here on Typer's two classes: every command and
group of every unistatus program), and before a usage error prints
(:mod:`unistatus.cli.errors_shown`). tests/cli/test_startup.py holds that `check` and
`backfill` load none of it; the help's own tests hold the output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from typer.core import TyperCommand, TyperGroup

from unistatus.cli.help_examples import examples_never_wrap
from unistatus.cli.help_format import help_reader_left_is_141, reflow_help_prose

_MARK = "_unistatus_changes_rich_help"


def change_rich_help() -> None:
    """Make unistatus's changes to Typer's rich help now (idempotent)."""
    reflow_help_prose()
    help_reader_left_is_141()
    examples_never_wrap()


def change_rich_help_when_rendered() -> None:
    """Make them the first time any command or group formats its help (idempotent)."""
    for cls in (TyperCommand, TyperGroup):
        original: Callable[..., Any] = cls.format_help
        if not getattr(original, _MARK, False):
            setattr(cls, "format_help", _changing_first(original))  # noqa: B010


def _changing_first(format_help: Callable[..., Any]) -> Callable[..., Any]:
    def changed_format_help(self: Any, ctx: Any, formatter: Any) -> Any:
        change_rich_help()
        return format_help(self, ctx, formatter)

    setattr(changed_format_help, _MARK, True)
    return changed_format_help
