"""`--help`'s examples printed as written, never wrapped at the terminal's width.

Typer's rich help renders a command's whole help (prose and examples) as one text that
Rich word-wraps at the terminal's width, with no continuation mark: at 80 columns
`tx create --help` showed `... --currency USD` and `--idempotency-key order-1042` on the
next line, so copying the first line ran a different command (a second cashout on a
retry); at 40 columns nearly every example split. An example is a command to copy: it
is printed whole, as the docstring lays it out (a terminal narrower than the line folds
it for the eye only; a pipe gets it on one line). A long example can still be written
over several lines with the shell's ``\\`` continuation, as `repair`'s are.

The examples are the help's last section, from a paragraph that reads ``Examples:``.
Rich crops what it prints inside a padded block (the help text is printed in one), so
the examples cannot stay in that block: :func:`examples_never_wrap` wraps
``rich_utils.rich_format_help`` to give Typer the help without them and print them
right after the prose, when Typer prints its first panel (``_print_options_panel`` is
called for the arguments first, with or without any), or at the end should a Typer
not call it. tests/cli/test_help_examples.py holds the output at 40 and 80 columns.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

_MARK = "_unistatus_examples_never_wrap"
_HEADING = re.compile(r"^Examples:[ \t]*$", re.MULTILINE)
# The examples of the help being printed, until the first panel prints them.
_pending: list[tuple[list[str], str]] = []


def examples_never_wrap() -> None:
    """Make the rich help print its examples unwrapped (idempotent)."""
    from typer import rich_utils

    format_help: Callable[..., Any] | None = getattr(rich_utils, "rich_format_help", None)
    print_panel: Callable[..., Any] | None = getattr(rich_utils, "_print_options_panel", None)
    if format_help is None or print_panel is None or getattr(format_help, _MARK, False):
        return

    def rich_format_help(*, obj: Any, ctx: Any, markup_mode: Any) -> Any:
        whole = obj.help
        prose, examples = split_examples(whole or "")
        if not examples:
            return format_help(obj=obj, ctx=ctx, markup_mode=markup_mode)
        mine = (examples, markup_mode)
        _pending.append(mine)
        obj.help = prose
        try:
            return format_help(obj=obj, ctx=ctx, markup_mode=markup_mode)
        finally:
            obj.help = whole
            if mine in _pending:  # no panel printed them: they go last
                _pending.remove(mine)
                _print_examples(rich_utils._get_rich_console(), *mine)

    def print_options_panel(*args: Any, **kwargs: Any) -> Any:
        if _pending and "console" in kwargs:
            _print_examples(kwargs["console"], *_pending.pop())
        return print_panel(*args, **kwargs)

    setattr(rich_format_help, _MARK, True)
    setattr(rich_utils, "rich_format_help", rich_format_help)  # noqa: B010
    setattr(rich_utils, "_print_options_panel", print_options_panel)  # noqa: B010


def split_examples(help_text: str) -> tuple[str, list[str]]:
    """``help_text``'s prose and its examples' lines (none without an ``Examples:``
    paragraph), as Typer would read them (dedented, cut at ``\\f``)."""
    text = inspect.cleandoc(help_text).partition("\f")[0]
    found = _HEADING.search(text)
    if found is None or not text[: found.start()].strip():
        return help_text, []
    return text[: found.start()].rstrip(), text[found.end() :].strip("\n").splitlines()


def _print_examples(console: Any, lines: list[str], markup_mode: Any) -> None:
    from rich.text import Text
    from typer import rich_utils

    console.print(Text(" Examples:", style=rich_utils.STYLE_HELPTEXT))
    console.print()
    for line in lines:
        shown = f" {line}" if line.strip() else ""
        text = (
            Text.from_markup(shown, style=rich_utils.STYLE_HELPTEXT)
            if markup_mode == rich_utils.MARKUP_MODE_RICH
            else Text(shown, style=rich_utils.STYLE_HELPTEXT)
        )
        # soft_wrap: no word wrap and no cropping, whatever the console's width.
        console.print(rich_utils.highlighter(text), soft_wrap=True)
    console.print()
