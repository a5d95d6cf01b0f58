"""`unistatus retire legacy-columns [--undo]`: the reversible phase 4 schema cleanup."""

from __future__ import annotations

import typer

from unistatus.cli.context import (
    REASON_HELP,
    console,
    err_console,
    print_json,
    require_reason,
    says_when_interrupted,
    state,
)

retire_app = typer.Typer(
    help=(
        "Retire legacy schema (phase 4), reversibly.\n\n"
        "Examples:\n\n"
        '  unistatus retire legacy-columns --reason "phase 4 cleanup (change #1260)"\n'
        '  unistatus retire legacy-columns --compat-views --reason "phase 4, readers on views"\n'
        '  unistatus retire legacy-columns --undo --reason "rollback drill"'
    )
)


@retire_app.command("legacy-columns")
def legacy_columns(
    ctx: typer.Context,
    undo: bool = typer.Option(
        False, "--undo", help="Restore the columns, refilled from unified_transactions."
    ),
    compat: bool = typer.Option(
        False,
        "--compat-views",
        help="PostgreSQL: also leave a view per legacy table in schema unistatus_compat, "
        "its status from unified_transactions.legacy_status (with --undo: drop only them).",
    ),
    reason: str = typer.Option(..., "--reason", help=REASON_HELP),
    actor: str = typer.Option("cli", "--actor", help="Who (recorded)."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Drop the legacy status columns (Alembic revision 0006), or restore them (--undo).

    Dropping needs UNIFIED_ONLY, a verified archive (`unistatus archive verify`) and
    every legacy status equal to its unified row's legacy_status (no
    legacy_status_drift); otherwise it is refused with every reason (exit 2) and
    nothing changes.

    --compat-views (PostgreSQL; refused on SQLite, exit 2): readers that still select
    the legacy status put schema unistatus_compat first in their search_path and keep
    working (docs/retire.md). --undo restores the columns and drops the views;
    --compat-views --undo drops only the views.

    Examples:

      unistatus retire legacy-columns --reason "phase 4 cleanup" --actor alice

      unistatus retire legacy-columns --compat-views --reason "phase 4, old reports"

      unistatus retire legacy-columns --compat-views --undo --reason "reports converted"

      unistatus retire legacy-columns --undo --reason "rollback drill"
    """
    from unistatus.migration.retire import (
        drop_compat_views,
        retire_legacy_columns,
        undo_cleanup,
    )

    command = "retire legacy-columns" + (" --compat-views" if compat else "")
    reason = require_reason(reason, command + (" --undo" if undo else ""))
    app = state(ctx)
    app.engine_seeing_every_row(command + (" --undo" if undo else ""))
    if undo and compat:
        dropped = drop_compat_views(app.engine, app.settings, actor=actor, reason=reason)
        if json_out:
            print_json(dropped)
        else:
            names = ", ".join(dropped["dropped"]) or "none were there"
            console.print(f"dropped the views in {dropped['schema']}: {names}")
        return
    if undo:
        with says_when_interrupted(
            "the undo may not have committed: run it again (it says `nothing to undo` if it had)"
        ):
            result = undo_cleanup(app.engine, app.settings, actor=actor, reason=reason)
        if json_out:
            print_json(result)
        elif result["undone"]:
            console.print(
                f"restored {', '.join(result['tables'])} from unified_transactions.legacy_status "
                f"({result['checksum_after']['rows']} rows, status sha256 "
                f"{result['checksum_after']['sha256'][:16]}…); schema at {result['revision']}"
                + (
                    f"; compatibility views dropped: {', '.join(result['compat_views_dropped'])}"
                    if result["compat_views_dropped"]
                    else ""
                )
            )
            if result["pending_covered"]:
                console.print(
                    f"{result['pending_covered']} change(s) awaiting replay are now in legacy "
                    "(the refill wrote their result): marked replayed"
                )
            for note in result["notes"]:
                err_console.print(f"[yellow]note:[/] {note}", highlight=False)
        else:
            console.print(f"nothing to undo: {result['detail']}")
        return
    with says_when_interrupted(
        "the retirement may not have committed: run it again (it says the columns "
        "are already dropped if it had)"
    ):
        result = retire_legacy_columns(
            app.engine, app.settings, actor=actor, reason=reason, compat=compat
        )
    if json_out:
        print_json(result)
    elif result["already_dropped"]:
        more = "" if result.get("compat_views") else "; nothing to do"
        console.print(f"the legacy status columns are already dropped{more}")
    else:
        before = result["checksum_before"]
        console.print(
            f"dropped {', '.join(result['tables'])}; schema at {result['revision']}. "
            f"Status checksum before the drop ({before['rows']} rows): {before['sha256']}. "
            'Undo: unistatus retire legacy-columns --undo --reason "..."'
        )
    views = result.get("compat_views")
    if views and not json_out:
        console.print(
            f"views in schema {views['schema']}: {', '.join(views['views'])} (status from "
            f"unified_transactions.legacy_status); readers: SET search_path = "
            f"{views['schema']}, public"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(retire_app, name="retire")
