"""`unistatus archive export|verify|restore`: the legacy tables, kept before retirement."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from unistatus.cli.context import (
    EXIT_FAILED_CHECK,
    console,
    err_console,
    print_json,
    says_when_interrupted,
    state,
)
from unistatus.shown import as_markup

archive_app = typer.Typer(
    help=(
        "Archive the legacy tables (gzip JSON lines + manifest), verify, restore.\n\n"
        "In phase 4, after the freeze: the retirement of the legacy status columns needs a "
        "verified archive.\n\n"
        "Examples:\n\n"
        "  unistatus archive export --out /backups/legacy-2026-11-23\n"
        "  unistatus archive verify /backups/legacy-2026-11-23\n"
        "  unistatus archive restore /backups/legacy-2026-11-23 "
        "--database-url postgresql://user@restore-host/scratch"
    )
)


@archive_app.command("export")
def export(
    ctx: typer.Context,
    out: str = typer.Option(..., "--out", help="New or empty directory for the archive."),
    actor: str = typer.Option("cli", "--actor", help="Who made it (in the manifest)."),
    json_out: bool = typer.Option(False, "--json", help="JSON output (the manifest)."),
) -> None:
    """Write every legacy table to OUT, from one consistent snapshot, with a manifest.

    Progress goes to stderr: the rows written, live on a terminal, a line every 10 s in a
    log, none with --json.

    Examples:

      unistatus archive export --out /backups/legacy-2026-11-23
      unistatus archive export --out /backups/legacy-2026-11-23 --actor alice --json
    """
    from unistatus.cli.progress_view import item_progress
    from unistatus.migration.archive import export_archive

    app = state(ctx)
    app.engine_seeing_every_row("archive export")
    with (
        says_when_interrupted(
            "nothing is kept (an export that does not finish removes what it wrote); run "
            "`unistatus archive export` again as it was"
        ),
        item_progress("archive export", "rows", json_out=json_out) as shown,
    ):
        manifest = export_archive(
            app.engine, app.settings, out, actor=actor, on_rows=lambda rows: shown(rows, None)
        )
    if json_out:
        print_json(
            {"directory": str(out), "manifest_sha256": manifest.sha256, **manifest.as_dict()}
        )
        return
    for t in manifest.tables:
        console.print(
            as_markup(f"{t.name}: {t.rows} rows -> {Path(out) / t.file}  sha256 {t.sha256[:16]}…")
        )
    console.print(as_markup(f"manifest {Path(out) / 'manifest.json'}  sha256 {manifest.sha256}"))
    console.print(as_markup(f"next: unistatus archive verify {shlex.quote(str(out))}"))


@archive_app.command("verify")
def verify(
    ctx: typer.Context,
    directory: str = typer.Argument(..., help="The archive directory."),
    record: bool = typer.Option(
        True, "--record/--no-record", help="Record a verified archive (retirement needs one)."
    ),
    actor: str = typer.Option("cli", "--actor", help="Who verified it (recorded)."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Check the files against the manifest and the live tables. Exit 1 on any mismatch.

    Once the legacy status columns are retired (nothing live to compare the statuses
    with), the archive is checked against the one recorded before the retirement
    instead, and no other archive can be recorded.

    Examples:

      unistatus archive verify /backups/legacy-2026-11-23
      unistatus archive verify /backups/legacy-2026-11-23 --no-record --json
    """
    import sqlalchemy as sa

    from unistatus.db.binding import schema_of
    from unistatus.db.tables import migration_control
    from unistatus.migration.archive import (
        RETIRED_NOT_RECORDED,
        read_manifest,
        record_verified,
        status_gaps,
        verify_archive,
    )

    app = state(ctx)
    # e.g. a restore drill's scratch database
    engine = app.engine_seeing_every_row("archive verify", "reachable")
    report = verify_archive(engine, directory)
    recorded = False
    gaps: list[str] = []
    if report.columns_retired:
        # the genuine archive is recorded already; any other may not be
        if record and not report.matches_recorded:
            gaps = [RETIRED_NOT_RECORDED]
    elif (
        report.ok
        and record
        and sa.inspect(engine).has_table(migration_control.name, schema=schema_of(engine))
    ):
        gaps = status_gaps(read_manifest(directory), app.settings)
        if not gaps:
            record_verified(engine, report, actor=actor, settings=app.settings)
            recorded = True
    if json_out:
        print_json({**report.as_dict(), "recorded": recorded, "not_recorded_because": gaps})
    else:
        for t in report.tables:
            live = (
                "live status retired, not compared"
                if report.columns_retired
                else f"live {t['live_rows']}"
            )
            console.print(
                as_markup(f"{t['table']}: archived {t['archived_rows']}, {live}"), highlight=False
            )
        for problem in report.problems:
            err_console.print(f"[red]mismatch:[/] {as_markup(problem)}", highlight=False)
        if report.columns_retired and report.ok:
            console.print(
                "[green]archive intact:[/] it matches the archive recorded before the "
                f"retirement (manifest sha256 {report.manifest_sha256}); the live legacy "
                "status columns are retired, so its statuses cannot be compared with live ones",
                highlight=False,
            )
        elif report.ok:
            console.print(
                "[green]archive verified[/]" + (" and recorded" if recorded else ""),
            )
        for gap in gaps:
            err_console.print(f"[red]not recorded:[/] {as_markup(gap)}", highlight=False)
    if not report.ok or gaps:
        raise typer.Exit(EXIT_FAILED_CHECK)


@archive_app.command("restore")
def restore(
    ctx: typer.Context,
    directory: str = typer.Argument(..., help="The archive directory."),
    database_url: str = typer.Option(
        None, "--database-url", help="Where to load it (default: the global --database-url)."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Overwrite tables that already have rows."
    ),
    overwrite_live: bool = typer.Option(
        False,
        "--overwrite-live",
        help="With --replace, also into a database unistatus runs on (refused without it: "
        "the rows written since the export would be lost).",
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Load an archive into a database (creates missing tables; one transaction).

    Examples:

      unistatus archive restore /backups/legacy-2026-11-23 --database-url postgresql://user@restore-host/scratch
      unistatus archive restore /backups/legacy-2026-11-23 --database-url sqlite:///drill.db --replace
    """
    from unistatus.migration.archive import restore_archive

    app_state = state(ctx)
    # Connected as the command's other sessions are (named, bounded by network.*).
    engine = app_state.engine_for(database_url or app_state.settings.database_url)
    try:
        report = restore_archive(engine, directory, replace=replace, overwrite_live=overwrite_live)
    finally:
        engine.dispose()
    if json_out:
        print_json(report.as_dict())
    else:
        for t in report.tables:
            created = " (created)" if t["created"] else ""
            console.print(as_markup(f"{t['table']}: {t['rows']} rows restored{created}"))
        for problem in report.verify.problems:
            err_console.print(f"[red]mismatch:[/] {as_markup(problem)}", highlight=False)
        if report.verify.ok:
            console.print(f"[green]restored and verified[/] into {as_markup(report.database)}")
    if not report.verify.ok:
        raise typer.Exit(EXIT_FAILED_CHECK)


def register(app: typer.Typer) -> None:
    app.add_typer(archive_app, name="archive")
