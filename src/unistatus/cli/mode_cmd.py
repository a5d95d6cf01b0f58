"""`unistatus mode get|set`: the write mode every adapter follows."""

from __future__ import annotations

import typer

from unistatus.cli.context import console, print_json, state
from unistatus.statuses import DualWriteMode

mode_app = typer.Typer(help="Show or switch the dual-write mode (takes effect in ~1 s everywhere).")

MODES_HELP = ", ".join(m.value for m in DualWriteMode)


@mode_app.command("get")
def get(
    ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="JSON output.")
) -> None:
    """Print the current write mode."""
    from unistatus.control import get_mode

    mode = get_mode(state(ctx).engine)
    if json_out:
        print_json({"mode": mode.value})
    else:
        console.print(mode.value)


@mode_app.command("set")
def set_(
    ctx: typer.Context,
    mode: str = typer.Argument(..., help=f"One of: {MODES_HELP}."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the control log)."),
    actor: str = typer.Option("cli", "--actor", help="Who is switching (recorded)."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Switch the write mode for every running adapter (waits for in-flight writes)."""
    from unistatus.control import set_mode

    change = set_mode(state(ctx).engine, DualWriteMode.parse(mode), reason=reason, actor=actor)
    if json_out:
        print_json(change.as_dict())
    else:
        console.print(f"mode: {change.old_value or 'LEGACY_ONLY'} -> [bold]{change.new_value}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(mode_app, name="mode")
