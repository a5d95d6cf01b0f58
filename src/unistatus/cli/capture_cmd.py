"""`unistatus capture enable|disable|status`: writes that bypass the adapter, captured."""

from __future__ import annotations

from typing import Any

import typer

from unistatus.cli.context import EXIT_FAILED_CHECK, console, err_console, print_json, state

capture_app = typer.Typer(
    help=(
        "Capture writes that bypass the adapter (raw SQL, cron jobs, other services) "
        "with database triggers: unified kept in step, the writers named and counted.\n\n"
        "Examples:\n\n"
        '  unistatus capture enable --reason "cron jobs still write cashouts directly"\n'
        "  unistatus capture status --json\n"
        '  unistatus capture disable --reason "every code path goes through the adapter"'
    )
)

ACTOR_HELP = "Who (recorded in the control log)."


@capture_app.command("enable")
def enable(
    ctx: typer.Context,
    reason: str = typer.Option(
        "capture writes that bypass the adapter", "--reason", help="Why (recorded)."
    ),
    actor: str = typer.Option("cli", "--actor", help=ACTOR_HELP),
    json_out: bool = typer.Option(False, "--json", help="JSON output (the status)."),
) -> None:
    """Install the capture triggers on the configured legacy tables (idempotent).

    While the mode maintains unified (every mode but LEGACY_ONLY), an INSERT, UPDATE or
    DELETE on a legacy table that did not come from unistatus brings the unified row in
    step in the same transaction, with a history row naming the writer. In LEGACY_ONLY
    the changed entities are logged and brought in step when a dual-write mode is
    entered. Direct writes to unified_transactions are counted. See docs/capture.md.

    Examples:

      unistatus capture enable

      unistatus capture enable --actor alice --reason "cron jobs not converted yet" --json
    """
    from unistatus.migration.capture import enable as enable_capture

    app = state(ctx)
    result = enable_capture(app.engine, app.settings, actor=actor, reason=reason)
    _show(result.as_dict(), json_out)


@capture_app.command("disable")
def disable(
    ctx: typer.Context,
    reason: str = typer.Option(
        "stop capturing writes that bypass the adapter", "--reason", help="Why (recorded)."
    ),
    actor: str = typer.Option("cli", "--actor", help=ACTOR_HELP),
    json_out: bool = typer.Option(False, "--json", help="JSON output (the status)."),
) -> None:
    """Drop every capture trigger and function (the writer counts are kept).

    Examples:

      unistatus capture disable --reason "every code path goes through the adapter"

      unistatus capture disable --json
    """
    from unistatus.migration.capture import disable as disable_capture

    app = state(ctx)
    result = disable_capture(app.engine, app.settings, actor=actor, reason=reason)
    _show(result.as_dict(), json_out)


@capture_app.command("status")
def status(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """The installed triggers and the writers seen bypassing the adapter.

    Exit 1 when the installed triggers are not what `enable` / `disable` asked for (a
    trigger dropped by hand, a table renamed, the mapping configured differently since:
    run `unistatus capture enable` again).

    Examples:

      unistatus capture status

      unistatus capture status --json | jq '.writers[] | select(.flagged > 0)'
    """
    from unistatus.migration.capture import status as capture_status

    app = state(ctx)
    result = capture_status(app.engine, app.settings).as_dict()
    _show(result, json_out)
    if not result["ok"]:
        raise typer.Exit(EXIT_FAILED_CHECK)


def _show(result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(result)
        return
    state_text = "enabled" if result["enabled"] else "disabled"
    console.print(
        f"capture {state_text}: {len(result['triggers'])} trigger(s) installed", highlight=False
    )
    for trigger in result["triggers"]:
        console.print(f"  {trigger['table']}: {trigger['name']}", highlight=False)
    for missing in result["missing"]:
        err_console.print(
            f"[red]missing:[/] {missing['table']}: {missing['name']} "
            "(run `unistatus capture enable` again)",
            highlight=False,
        )
    if result["mapping_changed"]:
        err_console.print(
            "[red]mapping changed:[/] the triggers map the legacy values as they were "
            "configured at enable (run `unistatus capture enable` again)",
            highlight=False,
        )
    if result["suspended"]:
        console.print(
            "suspended while their status column is retired: " + ", ".join(result["suspended"]),
            highlight=False,
        )
    if result["changed_while_legacy_only"]:
        console.print(
            f"{result['changed_while_legacy_only']} entities changed while LEGACY_ONLY, "
            "brought in step when a dual-write mode is entered",
            highlight=False,
        )
    if not result["writers"]:
        console.print("no writer seen bypassing the adapter")
        return
    console.print("writers seen bypassing the adapter:")
    for w in result["writers"]:
        console.print(
            f"  {w['writer']}  {w['system']}: {w['writes']} write(s), {w['flagged']} flagged, "
            f"{w['unmappable']} unmappable; last seen {w['last_seen_at']} ({w['last_mode']})",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(capture_app, name="capture")
