"""`unistatus phase status|advance|rollback`: the migration's phases and their gates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from unistatus.cli.context import (
    EXIT_FAILED_CHECK,
    REASON_HELP,
    ROLLBACK_INTERRUPTED,
    SystemOption,
    console,
    parse_system,
    print_json,
    require_reason,
    says_when_interrupted,
    state,
)

if TYPE_CHECKING:
    from unistatus.migration.phases import Gate, PhaseChange, PhaseStatus

phase_app = typer.Typer(
    help=(
        "Show the phase and the next phase's gates, per legacy system; advance (gated) or "
        "roll back one phase. Each system has its own phase, its gates measured on its own "
        "data; without --system every system moves together (they must be in one phase)."
        "\n\n"
        "Examples:\n\n"
        "  unistatus phase status\n"
        "  unistatus phase status --system escrow\n"
        '  unistatus phase advance --reason "start dual-write (change #1234)"\n'
        '  unistatus phase advance --system cashout --reason "week 3: cashouts first"\n'
        '  unistatus phase rollback --reason "p95 over 200 ms"\n'
        '  unistatus phase rollback --system escrow --reason "escrow p95 over 200 ms"'
    )
)


def gate_table(gates: list[Gate], title: str) -> object:
    """The gates as a Rich table (value / threshold / pass or FAIL), each detail below it.

    The details (often the command that satisfies a gate) are lines of their own, at the
    console's full width: in a column they were squeezed to nothing at 80 columns. The
    table has no outer edge, so the longest row (a 27-character gate name, a 26-character
    mode) still fits in 80 columns.
    """
    from rich import box
    from rich.console import Group
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    from unistatus.shown import as_markup, as_text

    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    table.add_column("gate", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("threshold", justify="right", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for g in gates:
        result = "[green]pass[/]" if g.passed else "[bold red]FAIL[/]"
        table.add_row(g.name, as_markup(g.value), as_markup(g.threshold), result)
    details = [
        # A detail names bypass writers (any client's application_name): as text.
        Padding(Text.assemble((f"{g.name}: ", "bold"), as_text(g.detail)), (0, 0, 0, 2))
        for g in gates
        if g.detail
    ]
    return Group(table, *details)


def _print_change(change: PhaseChange, verb: str) -> None:
    who = change.system.value if change.system is not None else "every system"
    console.print(
        f"{verb} ({who}): phase {change.from_phase} -> [bold]{change.to_phase}[/], "
        f"mode {change.from_mode.value} -> [bold]{change.to_mode.value}[/] "
        + escape(f"(by {change.actor}: {change.reason})")
    )
    if change.forced:
        console.print(f"[yellow]forced gates (recorded):[/] {', '.join(change.forced)}")
    for note in change.notes:
        console.print(f"- {note}")


def _print_verification(verification: dict[str, Any]) -> None:
    if verification["watermark"] is not None:
        console.print(
            f"continuous verification: every change before {verification['watermark']} "
            f"verified (lag {verification['lag_seconds']:,.0f} s)"
        )
    else:
        console.print("continuous verification: no pass completed yet (`unistatus monitor`)")


def _print_status(st: PhaseStatus) -> None:
    from unistatus.migration.phases import PHASES

    who = f"{st.system.value}: " if st.system is not None else ""
    console.print(
        f"{who}phase [bold]{st.phase}[/] ({st.name}), mode [bold]{st.mode.value}[/]"
        + (f", since {st.since:%Y-%m-%d %H:%M:%S} UTC" if st.since else "")
    )
    if st.mode is not st.expected_mode:
        console.print(
            f"[yellow]the mode was changed by hand: phase {st.phase} runs "
            f"{st.expected_mode.value}[/]"
        )
    if st.next_phase is None:
        console.print("last phase: nothing further to advance to")
        return
    nxt = PHASES[st.next_phase]
    console.print(gate_table(st.gates, f"gates into phase {nxt.number} ({nxt.name})"))
    flag = f" --system {st.system.value.lower()}" if st.system is not None else ""
    console.print(
        f"[green]ready: `unistatus phase advance{flag}`[/]"
        if st.ready
        else "[red]not ready[/] (fix the failing gates, or --force --reason)"
    )


def _systems_table(statuses: dict[str, PhaseStatus]) -> object:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("system", "phase", "mode", "next", "ready"):
        table.add_column(column, no_wrap=True)
    for name, st in statuses.items():
        table.add_row(
            name,
            f"{st.phase} ({st.name})",
            st.mode.value,
            str(st.next_phase) if st.next_phase is not None else "-",
            "-" if st.next_phase is None else ("[green]yes[/]" if st.ready else "[red]no[/]"),
        )
    return table


@phase_app.command("status")
def status(
    ctx: typer.Context,
    system: SystemOption = None,
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Phase, mode and the next phase's gates, measured now (exit 1 if any gate fails).

    Without --system: each system's phase and mode, and the gates of every system
    together while they are in one phase (each system's gates while they differ).
    --json: the status of every system together ("phase" and "mode" are "mixed" while
    the systems differ) with "systems": {"CASHOUT": {...}, ...}; with --system, that
    system's status.

    Examples:

      unistatus phase status
      unistatus phase status --system escrow --json
    """
    from unistatus.migration.phases import phase_status, phase_statuses, together_status
    from unistatus.migration.verify import verification_status

    app_state = state(ctx)
    verification = verification_status(app_state.engine)
    chosen = parse_system(system)
    if chosen is not None:
        st = phase_status(app_state.engine, app_state.settings, chosen)
        if json_out:
            print_json({**st.as_dict(), "verification": verification})
        else:
            _print_status(st)
            _print_verification(verification)
        if st.next_phase is not None and not st.ready:
            raise typer.Exit(EXIT_FAILED_CHECK)
        return
    each = {s.value: st for s, st in phase_statuses(app_state.engine, app_state.settings).items()}
    together = together_status(
        app_state.engine, app_state.settings, {st.system: st for st in each.values() if st.system}
    )
    if json_out:
        out = (
            together.as_dict()
            if together is not None
            else {"system": None, "phase": "mixed", "mode": "mixed", "ready": False, "gates": []}
        )
        out["systems"] = {name: st.as_dict() for name, st in each.items()}
        out["verification"] = verification
        print_json(out)
    else:
        console.print(_systems_table(each))
        if together is not None:
            _print_status(together)
        else:
            console.print(
                "[yellow]the systems are in different phases or modes: each one's gates[/]"
            )
            for st in each.values():
                _print_status(st)
        _print_verification(verification)
    statuses = [together] if together is not None else list(each.values())
    if any(st.next_phase is not None and not st.ready for st in statuses):
        raise typer.Exit(EXIT_FAILED_CHECK)


# `--from-phase N` of both steps (unistatus.migration.phase_from).
FromPhaseOption = Annotated[
    int | None,
    typer.Option(
        "--from-phase",
        min=0,
        max=4,
        help="Only from this phase: refused (PhaseMovedError, exit 2, nothing changed) if "
        "the phase is another, checked in the transaction that changes it. For automation "
        "that retries a step: a retry then never moves a second phase.",
    ),
]


# What a `phase advance` stopped by Ctrl-C leaves.
ADVANCE_INTERRUPTED = (
    "the phase and its write mode switch in one transaction, last: they are as they were "
    "unless it had committed (`unistatus phase status` says); run it again to go on"
)


@phase_app.command("advance")
def advance(
    ctx: typer.Context,
    force: bool = typer.Option(
        False, "--force", help="Pass failing gates (needs --reason; recorded)."
    ),
    reason: str = typer.Option(..., "--reason", help=REASON_HELP),
    actor: str = typer.Option("cli", "--actor", help="Who is advancing (recorded)."),
    system: SystemOption = None,
    from_phase: FromPhaseOption = None,
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Enter the next phase (and its write mode) if every gate passes.

    --system: that system only, its gates measured on its own data (the other systems
    are untouched). Without it every system advances, if they are all in one phase.

    --from-phase N: only from phase N (exit 2 otherwise, nothing changed): a step that
    automation retries, or runs twice, moves one phase, not two (docs/phases.md).

    Examples:

      unistatus phase advance --reason "phase 1 gates green" --actor alice

      unistatus phase advance --system cashout --reason "week 3: cashouts first"

      unistatus phase advance --force --reason "drill: error_rate gate has no data yet"

      unistatus phase advance --from-phase 2 --reason "CI: phase 3" --json
    """
    from unistatus.errors import GateError
    from unistatus.migration.phases import advance as do_advance
    from unistatus.migration.phases import phase_status

    reason = require_reason(reason, "phase advance")
    chosen = parse_system(system)
    app_state = state(ctx)
    if not force:  # --force overrides the gates whose counts a policy would skew
        app_state.engine_seeing_every_row("phase advance (its gates count rows)")
    with says_when_interrupted(ADVANCE_INTERRUPTED):
        try:
            change = do_advance(
                app_state.engine,
                app_state.settings,
                actor=actor,
                reason=reason,
                force=force,
                system=chosen,
                from_phase=from_phase,
            )
        except GateError:
            if not json_out:
                try:
                    st = phase_status(app_state.engine, app_state.settings, chosen)
                except GateError:
                    st = None  # the systems are in different phases: the error says so
                if st is not None and st.gates:
                    console.print(gate_table(st.gates, f"gates into phase {st.next_phase}"))
            raise
    if json_out:
        print_json(change.as_dict())
        return
    _print_change(change, "advanced")
    console.print(gate_table(change.gates, "gates at the time"))


@phase_app.command("rollback")
def rollback(
    ctx: typer.Context,
    reason: str = typer.Option(..., "--reason", help=REASON_HELP),
    actor: str = typer.Option("cli", "--actor", help="Who is rolling back (recorded)."),
    system: SystemOption = None,
    from_phase: FromPhaseOption = None,
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Go back one phase by its rollback procedure (from 4: replay to legacy first).

    --system: that system only, by its own phase's procedure (from 4 only its pending
    changes are replayed; from 2 only its backfill is paused); the other systems' phase
    and mode are untouched. Without it every system steps back, if they are all in one
    phase (refused, naming each system's phase, while they differ). Exit 2 when refused
    (phase 0, phases that differ, an unknown system, or --from-phase N while the phase
    is not N: a retried step is refused instead of rolling back a second phase).

    Examples:

      unistatus phase rollback --reason "p95 over 200 ms" --actor oncall

      unistatus phase rollback --system escrow --reason "escrow p95 over 200 ms"

      unistatus phase rollback --reason "backfill too slow" --json

      unistatus phase rollback --from-phase 3 --reason "CI: back to 2" --json
    """
    from unistatus.migration.rollback import rollback_current_phase

    reason = require_reason(reason, "phase rollback")
    chosen = parse_system(system)
    app_state = state(ctx)
    with says_when_interrupted(ROLLBACK_INTERRUPTED):
        change = rollback_current_phase(
            app_state.engine,
            app_state.settings,
            actor=actor,
            reason=reason,
            system=chosen,
            from_phase=from_phase,
        )
    if json_out:
        print_json(change.as_dict())
    else:
        _print_change(change, "rolled back")


def register(app: typer.Typer) -> None:
    app.add_typer(phase_app, name="phase")
