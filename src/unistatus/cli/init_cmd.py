"""`unistatus init`: create or upgrade the schema, optionally seed demo legacy rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from unistatus.cli.context import (
    console,
    err_console,
    print_json,
    says_when_interrupted,
    state,
)

if TYPE_CHECKING:
    import sqlalchemy as sa

    from unistatus.config import Settings

HELP = (
    "Create or upgrade every unistatus table (an Alembic upgrade to the install "
    "revision, safe to re-run). The one later revision, which drops the legacy status "
    "columns, is applied only by `unistatus retire legacy-columns`.\n\n"
    "On PostgreSQL the tables go in the schema the `schema` setting names "
    "(UNISTATUS_SCHEMA; default public), created if missing; the legacy tables stay "
    "where the application keeps them. A database that already holds an installation "
    "in another schema is refused, naming it (set the setting to that schema to use it): "
    "--alongside makes a second, independent installation on purpose (another "
    "application's legacy tables).\n\n"
    "Also creates the reference legacy tables (cashouts, escrows, exchanges) when the "
    "configuration still points at them. --demo-data N seeds N synthetic legacy rows across "
    "the three systems with a realistic status mix, into empty legacy tables only: run again "
    "(or on tables that hold rows: an application's), it seeds nothing and says so.\n\n"
    "Examples:\n\n"
    "  unistatus init\n\n"
    "  unistatus --database-url postgresql://user@host/db init --demo-data 100000 --json\n\n"
    "  UNISTATUS_SCHEMA=unistatus unistatus --database-url postgresql://user@host/db init"
)


def init(
    ctx: typer.Context,
    demo_data: int = typer.Option(
        0,
        "--demo-data",
        min=0,
        metavar="N",
        help="Also seed N synthetic legacy rows (only while the legacy tables are empty).",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the synthetic data, 0 to 2147483647 (same seed, same rows)."
    ),
    alongside: bool = typer.Option(
        False,
        "--alongside",
        help="Make a new installation even though the database holds another, in another "
        "schema (PostgreSQL).",
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    from unistatus.config import DEFAULT_SCHEMA
    from unistatus.db import schema
    from unistatus.db.legacy_kinds import kind_warnings, refuse_unwritable
    from unistatus.db.legacy_reflect import legacy_table_kinds
    from unistatus.sim.seed import check_seed

    check_seed(seed)  # before anything is created or upgraded
    st = state(ctx)
    engine = st.open_engine("creatable")  # creating the tables is init's job
    with engine.connect() as conn:  # before anything is created: nothing to undo
        kinds = legacy_table_kinds(conn, list(st.settings.legacy_tables.values()))
    refuse_unwritable(kinds)
    for warning in kind_warnings(kinds):  # what will not work on them, not a refusal
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    # The main chain's: the retired columns' revision (0006) stands beside it unchanged.
    before = schema.main_revision(engine)
    seeded: dict[str, int] = {}
    detail: str | None = None
    # The upgrade is one transaction (schema._migrate): all of it or nothing.
    with says_when_interrupted(
        "nothing of the upgrade is kept (it is one transaction); run `unistatus init` "
        "again to go on"
    ):
        # What the upgrade found, read in its transaction: another `init` may have
        # upgraded the database while this one waited for it (schema._migrate).
        found: list[str | None] = []
        schema.upgrade(
            engine,
            st.settings,
            alongside=alongside,
            before=lambda conn: found.append(schema.main_revision(conn)),
        )
    revision = schema.main_revision(engine)
    if found:
        before = found[-1]
    if demo_data:
        from unistatus.sim.seed import legacy_row_counts, seed_legacy

        with says_when_interrupted(
            f"the schema is installed (revision {revision}); the demo rows are seeded all "
            "or none: run `unistatus init --demo-data N` again to seed them"
        ):
            seeded = seed_legacy(engine, st.settings, demo_data, seed=seed, only_into_empty=True)
        if not seeded:
            held = ", ".join(f"{t} {n}" for t, n in legacy_row_counts(engine, st.settings).items())
            detail = (
                f"demo rows not seeded: the legacy tables already hold rows ({held}); "
                "--demo-data seeds empty tables only (a re-run adds nothing)"
            )
    capture_note = _capture_note(engine, st.settings)
    if capture_note:
        err_console.print(f"[yellow]warning:[/] {escape(capture_note)}", highlight=False)
    unfit = _unfit_legacy_tables(engine, st.settings)
    if unfit:
        err_console.print(f"[yellow]warning:[/] {escape(unfit)}", highlight=False)
    if json_out:
        print_json(
            {
                "revision": revision,
                "previous_revision": before,
                "schema": st.settings.schema,
                "upgraded": before != revision,
                "seeded": seeded,
                "detail": detail,
                "capture_outdated": capture_note is not None,
                "legacy_tables_problem": unfit,
            }
        )
        return
    where = "" if st.settings.schema == DEFAULT_SCHEMA else f" in schema {st.settings.schema}"
    if before == revision:
        console.print(f"tables{where} already at revision [bold]{revision}[/] (nothing to do)")
    else:
        console.print(f"tables{where} upgraded {before or '(empty)'} -> [bold]{revision}[/]")
    if detail:
        console.print(detail, highlight=False)
    if seeded:
        console.print(
            "seeded "
            + ", ".join(f"{n} {system.lower()}" for system, n in seeded.items())
            + " legacy rows"
        )


def _capture_note(engine: sa.Engine, settings: Settings) -> str | None:
    """What to say when capture is enabled and its triggers are not what this release
    installs (an upgrade changes them; `init` leaves them as they are): a bypass write
    is then captured the earlier release's way, or not at all in a mode it did not
    know. None when there is nothing to say, or nothing could be read."""
    from unistatus.errors import UnistatusError
    from unistatus.migration import capture

    try:
        found = capture.status(engine, settings)
    except UnistatusError:
        return None
    if not found.enabled or found.ok:
        return None
    return (
        "capture is enabled, and its triggers are not what this release and configuration "
        "install (see `unistatus capture status`): run `unistatus capture enable` to "
        "install them again"
    )


def register(app: typer.Typer) -> None:
    app.command("init", help=HELP)(init)


def _unfit_legacy_tables(engine: sa.Engine, settings: Settings) -> str | None:
    """What is wrong with the legacy tables as the settings name them, if anything: a
    database whose ``cashouts`` is another application's table (the wrong database)
    installs quietly, and shows it only at the gate into phase 1. Said, not refused:
    the tables are the application's to fix (or the settings). Nothing once their
    status columns are retired (the judgement wants them); a failure to judge them is
    said too, the installation stands."""
    import sqlalchemy as sa

    from unistatus.errors import UnistatusError
    from unistatus.migration.gates import gate_legacy_tables
    from unistatus.migration.retire import legacy_columns_dropped

    try:
        if legacy_columns_dropped(engine, settings):
            return None  # retired: the tables are judged again by the undo
        gate = gate_legacy_tables(engine, settings, None)
    except (UnistatusError, sa.exc.DBAPIError) as exc:  # init itself has succeeded
        return f"could not judge the legacy tables: {exc}"
    if gate.passed:
        return None
    return (
        f"the legacy tables are not fit for the migration: {gate.detail} (the gate into "
        "phase 1 refuses them: fix the tables, or name yours in the settings' legacy_tables)"
    )
