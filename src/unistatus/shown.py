"""Text that came from outside (a database client's name, a stored legacy value, a
configured table name) as it is shown on a terminal or in a log line: as text, never as
orders.

A PostgreSQL role may be named with an escape sequence (OSC 52 sets the clipboard, OSC 0
the window's title), any client sets its ``application_name``, and a raw writer stores
any status: printed raw, such text rewrote the operator's terminal, forged log lines
(a newline) and, read as Rich markup, stopped `monitor` (``[/]`` closes nothing).
"""

from __future__ import annotations

import re

from rich.markup import escape

__all__ = ["as_markup", "as_text"]

# C0 and C1 controls (a tab kept) and the bidirectional overrides and isolates, which
# reorder what follows them on the line.
_HIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def as_text(value: object) -> str:
    """``value`` with each control or bidirectional character written as its escape
    (``\\x1b``, ``\\n``, ``\\u202e``): one line, shown as it is."""
    return _HIDDEN.sub(lambda m: repr(m.group())[1:-1], str(value))


def as_markup(value: object) -> str:
    """:func:`as_text`, its Rich markup escaped too: for a string Rich renders."""
    return escape(as_text(value))
