"""`unistatus mode get|set`: the write mode every adapter follows."""

from __future__ import annotations

import typer

from unistatus.cli.context import console, print_json, state
from unistatus.domain.statuses import DualWriteMode

mode_app = typer.Typer(
    help=(
        "Show or switch the dual-write mode (takes effect in ~1 s everywhere).\n\n"
        "During the migration, `unistatus phase advance` switches it through the gates; "
        "`mode set` is the manual override.\n\n"
        "Examples:\n\n"
        "  unistatus mode get\n"
        '  unistatus mode set DUAL_WRITE_LEGACY_PRIMARY --reason "start phase 1"'
    )
)

MODES_HELP = ", ".join(m.value for m in DualWriteMode)


@mode_app.command("get")
def get(
    ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="JSON output.")
) -> None:
    """Print the current write mode.

    Examples:

      unistatus mode get
      unistatus mode get --json
    """
    from unistatus.db.control import get_mode

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
    force: bool = typer.Option(
        False,
        "--force",
        help="Enter a unified-read mode although unified may be stale (recorded, with what "
        "was stale).",
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Switch the write mode for every running adapter (waits for in-flight writes).

    DUAL_WRITE_UNIFIED_PRIMARY and UNIFIED_ONLY read from unified: they are refused
    while legacy rows written without unified (LEGACY_ONLY) are newer than the last
    consistent full check. Prefer `unistatus phase advance`, which measures the gates.

    Examples:

      unistatus mode set DUAL_WRITE_LEGACY_PRIMARY --reason "start phase 1"

      unistatus mode set UNIFIED_ONLY --force --reason "incident 42, approved by ops lead"
    """
    from unistatus.db.control import FORCE_RISK, set_mode

    app_state = state(ctx)
    change = set_mode(
        app_state.engine,
        DualWriteMode.parse(mode),
        reason=reason,
        actor=actor,
        force=force,
        settings=app_state.settings,
    )
    forced = (change.metadata or {}).get("forced_over_stale_unified")
    if json_out:
        print_json(change.as_dict())
        return
    console.print(f"mode: {change.old_value or 'LEGACY_ONLY'} -> [bold]{change.new_value}[/]")
    if forced:
        rows = ", ".join(f"{k} {v}" for k, v in sorted(forced["rows"].items()))
        console.print(f"[bold yellow]forced over stale unified[/] ({rows}): {FORCE_RISK}")


def register(app: typer.Typer) -> None:
    app.add_typer(mode_app, name="mode")
