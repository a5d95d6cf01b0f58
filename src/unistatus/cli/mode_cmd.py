"""`unistatus mode get|set`: the write mode every adapter follows, per legacy system."""

from __future__ import annotations

import typer

from unistatus.cli.context import SystemOption, console, parse_system, print_json, state
from unistatus.domain.statuses import DualWriteMode

mode_app = typer.Typer(
    help=(
        "Show or switch the dual-write mode, per legacy system (takes effect in ~1 s "
        "everywhere).\n\n"
        "During the migration, `unistatus phase advance` switches it through the gates; "
        "`mode set` is the manual override.\n\n"
        "Examples:\n\n"
        "  unistatus mode get\n"
        '  unistatus mode set DUAL_WRITE_LEGACY_PRIMARY --reason "start phase 1"\n'
        '  unistatus mode set DUAL_WRITE_UNIFIED_PRIMARY --system cashout --reason "week 3"'
    )
)

MODES_HELP = ", ".join(m.value for m in DualWriteMode)


@mode_app.command("get")
def get(
    ctx: typer.Context,
    system: SystemOption = None,
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Print the write mode: of every system (one line while they agree, else "mixed"
    and a line per system), or of the one named by --system.

    --json: {"mode": ..., "systems": {"CASHOUT": ..., "ESCROW": ..., "EXCHANGE": ...}}.
    "mode" is the mode every system is in, or "mixed" while they differ (then read
    "systems"); with --system it is that system's mode.

    Examples:

      unistatus mode get
      unistatus mode get --system escrow
      unistatus mode get --json
    """
    from unistatus.db.control import get_modes
    from unistatus.db.mode_reads import mode_summary

    chosen = parse_system(system)
    modes = get_modes(state(ctx).engine)
    if chosen is not None:
        modes = {chosen: modes[chosen]}
    shown = mode_summary(modes)
    if json_out:
        print_json({"mode": shown, "systems": {s.value: m.value for s, m in modes.items()}})
        return
    console.print(shown)
    if len(set(modes.values())) > 1:
        for s, m in modes.items():
            console.print(f"  {s.value:<9} {m.value}")


@mode_app.command("set")
def set_(
    ctx: typer.Context,
    mode: str = typer.Argument(..., help=f"One of: {MODES_HELP}."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the control log)."),
    system: SystemOption = None,
    actor: str = typer.Option("cli", "--actor", help="Who is switching (recorded)."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Enter a unified-read mode although unified may be stale, or a mode that "
        "writes unified although the capture's triggers are stale (recorded, with what "
        "was stale).",
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Switch the write mode of one system (--system) or of every system, for every
    running adapter (waits for that system's in-flight writes; the other systems'
    writers never wait).

    DUAL_WRITE_UNIFIED_PRIMARY and UNIFIED_ONLY read from unified: they are refused
    while legacy rows of the system written without unified (LEGACY_ONLY) are newer
    than the last consistent full check. Leaving UNIFIED_ONLY is refused while the
    system has changes not replayed over legacy (`unistatus rollback --emergency`
    replays them), and a mode that writes legacy is refused while the legacy status
    columns are retired (`retire legacy-columns --undo` restores them). Every mode but
    LEGACY_ONLY is refused while the capture is enabled and its triggers are not what
    this release installs (`unistatus capture enable` generates them again). Prefer
    `unistatus phase advance`, which measures the gates.

    Examples:

      unistatus mode set DUAL_WRITE_LEGACY_PRIMARY --reason "start phase 1"

      unistatus phase advance --system cashout --reason "week 3: cashouts first"
      (the gated way: into the next phase and its mode once the gates pass)

      unistatus mode set DUAL_WRITE_UNIFIED_PRIMARY --system cashout --reason "INC-7"
      (one mode on from DUAL_WRITE_LEGACY_PRIMARY, bypassing the gates)

      unistatus mode set UNIFIED_ONLY --force --reason "incident 42, approved by ops lead"
    """
    from unistatus.db.control import FORCE_RISK, switch_as_dict
    from unistatus.migration.mode_switch import FORCED_OVER_CAPTURE, switch_mode

    app_state = state(ctx)
    chosen = parse_system(system)
    new = DualWriteMode.parse(mode)
    changes = switch_mode(
        app_state.engine,
        new,
        system=chosen,
        reason=reason,
        actor=actor,
        force=force,
        settings=app_state.settings,
    )
    summary = switch_as_dict(new, chosen, changes)
    if json_out:
        print_json(summary)
        return
    scope = chosen.value if chosen is not None else "every system"
    if not changes:
        console.print(f"mode of {scope}: already [bold]{new.value}[/] (nothing changed)")
        return
    for change in changes:
        system_name = change.key.partition(".")[2]
        console.print(
            f"mode {system_name}: {change.old_value or 'LEGACY_ONLY'} -> [bold]{change.new_value}[/]"
        )
    forced = (summary["metadata"] or {}).get("forced_over_stale_unified")
    if forced:
        rows = ", ".join(f"{k} {v}" for k, v in sorted(forced["rows"].items()))
        console.print(f"[bold yellow]forced over stale unified[/] ({rows}): {FORCE_RISK}")
    stale_capture = (summary["metadata"] or {}).get(FORCED_OVER_CAPTURE)
    if stale_capture:
        console.print(f"[bold yellow]forced over stale capture[/]: {stale_capture}")


def register(app: typer.Typer) -> None:
    app.add_typer(mode_app, name="mode")
