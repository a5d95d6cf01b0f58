"""`--help` as a person reads it: a flag shows no value placeholder.

``--json`` takes no value, so its help line must not read ``--json <bool>`` (which says
"pass true or false"). Click's plain help leaves the type out for flags (``is_flag``) and
Typer's rich help did too up to 0.28 (it dropped any type named bool); Typer 0.29's rich
panel prints ``TyperOption.display_type_rich`` for every option, flags included. That
method is wrapped once here to answer "no type" for a flag and defer to Typer otherwise,
for every command, including ones registered later; with a Typer that has no such
method (older) there is nothing to do. tests/cli/test_command_line.py holds the output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from typer.core import TyperOption

_MARK = "_unistatus_hides_flag_types"


def hide_flag_value_placeholders() -> None:
    """Make the rich help show no type for flags (idempotent)."""
    original: Callable[..., str | None] | None = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, _MARK, False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        return original(self, ctx)

    setattr(display_type_rich, _MARK, True)
    setattr(TyperOption, "display_type_rich", display_type_rich)  # noqa: B010
