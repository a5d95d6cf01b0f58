"""`--help` as a person reads it: a flag shows no value placeholder, a repeatable option
its value's (``<str>``, not ``<list[str]>``), and prose wraps at the terminal's width.

``--json`` takes no value, so its help line must not read ``--json <bool>`` (which says
"pass true or false"). Click's plain help leaves the type out for flags (``is_flag``) and
Typer's rich help did too up to 0.28 (it dropped any type named bool); Typer 0.29's rich
panel prints ``TyperOption.display_type_rich`` for every option, flags included. That
method is wrapped once here to answer "no type" for a flag and defer to Typer otherwise,
for every command, including ones registered later; with a Typer that has no such
method (older) there is nothing to do. tests/cli/test_command_line.py holds the output.

Typer's rich help keeps a docstring's line breaks after its first paragraph, so at 80
columns a line written 88 wide comes out as a full line and a fragment ("latency" /
"< 200 ms ..."). ``typer.rich_utils._fix_linebreaks`` is wrapped to join the lines of a
prose paragraph (Rich then wraps it at the terminal's width) and keep those of an
indented one (examples) or a list.

Typer prints the help (and click's usage errors) through a Rich console of its own,
whose broken-pipe exit is 1 ("a check found a problem"): ``rich_utils._get_rich_console``
is wrapped so that `unistatus --help | head` ends as every other command whose reader
left does (:func:`unistatus.cli.context.reader_left`, exit 141).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from typer.core import TyperOption

from unistatus.cli.context import reader_left

_MARK = "_unistatus_hides_flag_types"
_NUMBERED = re.compile(r"\d+[.)] ")  # a numbered list's item: its lines kept


def hide_flag_value_placeholders() -> None:
    """Make the rich help show no type for flags (idempotent)."""
    original: Callable[..., str | None] | None = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, _MARK, False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        shown = original(self, ctx)
        # A repeatable option (a list annotation) takes one value per occurrence.
        if shown and shown.startswith("<list[") and shown.endswith("]>"):
            return f"<{shown[len('<list[') : -len(']>')]}>"
        return shown

    setattr(display_type_rich, _MARK, True)
    setattr(TyperOption, "display_type_rich", display_type_rich)  # noqa: B010


def reflow_help_prose() -> None:
    """Make the rich help join a prose paragraph's lines (idempotent)."""
    from typer import rich_utils

    original: Callable[..., str] | None = getattr(rich_utils, "_fix_linebreaks", None)
    if original is None or getattr(original, _MARK, False):
        return

    def fix_linebreaks(paragraphs: list[str], markup_mode: Any) -> str:
        return original([_reflowed(p) for p in paragraphs], markup_mode)

    setattr(fix_linebreaks, _MARK, True)
    setattr(rich_utils, "_fix_linebreaks", fix_linebreaks)  # noqa: B010


def help_reader_left_is_141() -> None:
    """Make the consoles Typer prints its help with end a broken pipe as unistatus's
    own do (idempotent)."""
    from typer import rich_utils

    original: Callable[..., Any] | None = getattr(rich_utils, "_get_rich_console", None)
    if original is None or getattr(original, _MARK, False):
        return

    def get_rich_console(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        made.on_broken_pipe = reader_left  # Rich calls it on the instance
        return made

    setattr(get_rich_console, _MARK, True)
    setattr(rich_utils, "_get_rich_console", get_rich_console)  # noqa: B010


def _reflowed(paragraph: str) -> str:
    """``paragraph``'s lines joined, unless it is laid out by hand (an indented line, a
    list item, Click's ``\\b`` marker)."""
    lines = paragraph.splitlines()
    listed = (" ", "- ", "* ")
    if paragraph.startswith("\b") or any(
        line.startswith(listed) or _NUMBERED.match(line) for line in lines
    ):
        return paragraph
    return " ".join(line.strip() for line in lines)
