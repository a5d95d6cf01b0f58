"""`unistatus rollback --emergency`: the fastest safe path back to legacy.

`unistatus rollback conflicts` and `rollback resolve` handle what the replay to legacy
did not apply (a legacy row that moved on, or stayed locked): nothing is overwritten,
an operator decides each one with a reason.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from unistatus.cli.context import (
    EXIT_FAILED_CHECK,
    REASON_HELP,
    ROLLBACK_INTERRUPTED,
    abort,
    console,
    parse_system,
    print_json,
    require_reason,
    says_when_interrupted,
    state,
)

rollback_app = typer.Typer(
    help="Emergency rollback to LEGACY_ONLY, and the replay's conflict list.\n\n"
    "Examples:\n\n"
    "  unistatus rollback --emergency --reason 'consistency critical'\n\n"
    "  unistatus rollback --emergency --system escrow --reason 'escrow consistency 97%'\n\n"
    "  unistatus rollback conflicts --json\n\n"
    "  unistatus rollback resolve 3 --keep-legacy --reason 'payout was confirmed'",
    invoke_without_command=True,
)


@rollback_app.callback()
def rollback(
    ctx: typer.Context,
    emergency: bool = typer.Option(
        False, "--emergency", help="Required: replay where legacy is stale, then LEGACY_ONLY."
    ),
    reason: str = typer.Option(None, "--reason", help=REASON_HELP),
    system: Annotated[
        list[str] | None,
        typer.Option(
            "--system",
            help="One legacy system: cashout, escrow or exchange. Only its pending changes "
            "are replayed and only its mode goes to LEGACY_ONLY (its phase to 0); the "
            "others' writers never wait. Default: every system.",
        ),
    ] = None,
    actor: str = typer.Option("cli", "--actor", help="Who is rolling back (recorded)."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Emergency rollback to LEGACY_ONLY; every running adapter follows within ~1 s.

    It wins over a concurrent `phase advance`: the phase is read under the exclusive
    mode lock and left for phase 0 from wherever it is. Changes the replay could not
    apply are listed (`rollback conflicts`), never overwritten. With --system only that
    system rolls back (its pending changes replayed, its mode LEGACY_ONLY and its phase
    0, its backfill paused); the other systems' phases, modes and writers are untouched.
    One phase back instead: `unistatus phase rollback [--system S]`.

    Examples:

      unistatus rollback --emergency --reason "consistency 97%" --actor oncall

      unistatus rollback --emergency --system escrow --reason "escrow consistency 97%"
    """
    if ctx.invoked_subcommand is not None:
        return
    if not emergency:
        abort(
            "this is the emergency rollback to LEGACY_ONLY: pass --emergency to confirm. "
            "To go back one phase by its own procedure, use `unistatus phase rollback`."
        )
    reason = require_reason(reason, "rollback --emergency")
    chosen = parse_system(system)
    from unistatus.migration.rollback import emergency_rollback, mixed_origin

    app_state = state(ctx)
    with says_when_interrupted(ROLLBACK_INTERRUPTED):
        result = emergency_rollback(
            app_state.engine, app_state.settings, actor=actor, reason=reason, system=chosen
        )
    if json_out:
        print_json(result)
        return
    replayed = result["replay"].get("replayed", 0)
    # Out of a retired phase 4 the columns are restored first, refilled from the unified
    # rows: the changes that refill wrote are marked replayed without a replay of theirs.
    restored = result["replay"].get("undo_cleanup") or {}
    covered = int(restored.get("pending_covered") or 0)
    who = f"{result['system']}: " if chosen is not None else ""
    came = mixed_origin(result["from_systems"])
    if came is not None:
        what = f"{came} -> phase 0, mode "
    else:
        what = f"{who}phase {result['from_phase']} -> 0, mode {result['from_mode']} -> "
    console.print(
        f"[bold red]emergency rollback[/]: {what}"
        f"[bold]{result['to_mode']}[/] "
        f"in {result['duration_ms']:.0f} ms"
        + (f"; replayed {replayed} change(s) to legacy first" if replayed else "")
    )
    if restored.get("undone"):
        console.print(
            "legacy status columns restored first"
            + (
                f": {covered} change(s) awaiting replay written to legacy by restoring them "
                "(marked replayed)"
                if covered
                else ""
            )
        )
    if result["conflicts"]:
        console.print(
            f"[bold yellow]{result['conflicts']} replay conflict(s)[/]: not applied, "
            "nothing overwritten"
        )
    if held := result["replay"].get("legacy_held", 0):
        console.print(
            f"[bold yellow]{held} replayed status(es) changed by the application's trigger[/]"
            ": left to `unistatus check` and `unistatus repair --strategy legacy_wins`"
        )
    for note in result["notes"]:
        console.print(f"- {note}")
    console.print("next: `unistatus diagnose` to collect the investigation report")


@rollback_app.command("conflicts")
def conflicts(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Include resolved conflicts."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """List changes the replay to legacy did not apply (exit 1 while any is open).

    Examples:

      unistatus rollback conflicts
      unistatus rollback conflicts --all --json
    """
    from unistatus.migration.replay_conflicts import list_conflicts

    found = list_conflicts(state(ctx).engine, include_resolved=all_, limit=limit)
    open_ = [c for c in found if c.resolved_at is None]
    if json_out:
        print_json({"open": len(open_), "conflicts": [c.as_dict() for c in found]})
    elif not found:
        console.print("no replay conflicts")
    else:
        for c in found:
            state_text = "[yellow]open[/]" if c.resolved_at is None else f"resolved: {c.resolution}"
            # Legacy holds whatever a writer put there: text, never markup.
            console.print(
                f"#{c.id} {escape(str(c.entity))} ({c.transaction_id}) {state_text}: "
                + escape(
                    f"legacy holds {c.legacy_actual!r}, the replay expected "
                    f"{c.legacy_expected!r} and would write {c.replay_status!r} "
                    f"({c.changes} change(s); {c.cause})"
                )
            )
        if open_:
            console.print(
                "decide each: `unistatus rollback resolve ID --keep-legacy --reason ...` "
                "(legacy stays, unified follows it) or `--apply` (legacy takes the "
                "replayed status)"
            )
    if open_:
        raise typer.Exit(EXIT_FAILED_CHECK)


@rollback_app.command("resolve")
def resolve(
    ctx: typer.Context,
    conflict_id: int = typer.Argument(..., help="The conflict's id (`rollback conflicts`)."),
    keep_legacy: bool = typer.Option(
        False, "--keep-legacy", help="Legacy keeps its status; unified takes it too."
    ),
    apply: bool = typer.Option(
        False, "--apply", help="Write the replayed status to legacy (if legacy is unchanged)."
    ),
    reason: str = typer.Option(None, "--reason", help=REASON_HELP),
    actor: str = typer.Option("cli", "--actor", help="Who decides (recorded)."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Close a replay conflict with a reason: --keep-legacy or --apply.

    Examples:

      unistatus rollback resolve 3 --keep-legacy --reason "payout confirmed by the bank"
      unistatus rollback resolve 4 --apply --reason "late failure confirmed by the PSP"
    """
    if keep_legacy == apply:
        abort("pass exactly one of --keep-legacy or --apply")
    reason = require_reason(reason, "rollback resolve")
    from unistatus.migration.replay_resolve import resolve as resolve_conflict

    app_state = state(ctx)
    done = resolve_conflict(
        app_state.engine,
        app_state.settings,
        conflict_id,
        action="keep_legacy" if keep_legacy else "apply",
        actor=actor,
        reason=reason,
    )
    if json_out:
        print_json(done.as_dict())
        return
    if done.resolution == "apply":
        console.print(escape(f"#{done.id} {done.entity}: legacy now holds {done.replay_status!r}"))
    elif done.cause == "legacy_missing":
        console.print(
            f"#{done.id} {done.entity}: the legacy row is gone and stays gone; the unified "
            "row is kept as it is, an orphan (`check` reports it; its history records the "
            "decision)"
        )
    else:
        console.print(
            f"#{done.id} {done.entity}: legacy keeps {done.legacy_actual!r}, and unified "
            "now says the same (its history records the decision)"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(rollback_app, name="rollback")
