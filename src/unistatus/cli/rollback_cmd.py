"""`unistatus rollback --emergency`: the fastest safe path back to legacy."""

from __future__ import annotations

import typer

from unistatus.cli.context import REASON_HELP, abort, console, print_json, require_reason, state


def rollback(
    ctx: typer.Context,
    emergency: bool = typer.Option(
        False, "--emergency", help="Required: replay where legacy is stale, then LEGACY_ONLY."
    ),
    reason: str = typer.Option(None, "--reason", help=REASON_HELP),
    actor: str = typer.Option("cli", "--actor", help="Who is rolling back (recorded)."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Emergency rollback to LEGACY_ONLY; every running adapter follows within ~1 s.

    Example: unistatus rollback --emergency --reason "consistency 97%" --actor oncall
    """
    if not emergency:
        abort(
            "this is the emergency rollback to LEGACY_ONLY: pass --emergency to confirm. "
            "To go back one phase by its own procedure, use `unistatus phase rollback`."
        )
    reason = require_reason(reason, "rollback --emergency")
    from unistatus.rollback import emergency_rollback

    app_state = state(ctx)
    result = emergency_rollback(app_state.engine, app_state.settings, actor=actor, reason=reason)
    if json_out:
        print_json(result)
        return
    replayed = result["replay"].get("replayed", 0)
    console.print(
        f"[bold red]emergency rollback[/]: phase {result['from_phase']} -> 0, "
        f"mode {result['from_mode']} -> [bold]{result['to_mode']}[/] "
        f"in {result['duration_ms']:.0f} ms"
        + (f"; replayed {replayed} change(s) to legacy first" if replayed else "")
    )
    for note in result["notes"]:
        console.print(f"- {note}")
    console.print("next: `unistatus diagnose` to collect the investigation report")


def register(app: typer.Typer) -> None:
    app.command("rollback")(rollback)
