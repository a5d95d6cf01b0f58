"""`unistatus demo`: the whole migration in miniature, on a throwaway database."""

from __future__ import annotations

import io

import typer

from unistatus.cli.context import EXIT_FAILED_CHECK, console, print_json, state

HELP = (
    "Run the end-to-end demo and exit non-zero if any step fails.\n\n"
    "The whole migration, phases 1 to 4, in a temporary SQLite database (or the global "
    "--database-url), with simulated live traffic from several threads throughout: seed "
    "legacy rows, validate the mapping, phase 1 (dual writes, legacy primary), check the "
    "new transactions, phase 2 (backfill under live traffic with progress bars, full check), "
    "phase 3 (unified primary), an emergency rollback drill and the way back, phase 4 "
    "(unified only), archive, reversible cleanup of the legacy status columns, a rollback "
    "drill out of phase 4 and back, the dashboard, and a table of every phase gate. Every "
    "phase change goes through its gates, measured from the live data, never forced.\n\n"
    "With --database-url the demo writes synthetic rows and switches the mode in THAT "
    "database: point it at a scratch database.\n\n"
    "Examples:\n\n"
    "  unistatus demo\n\n"
    "  unistatus demo --rows 20000 --seconds 10 --threads 8\n\n"
    "  unistatus --database-url postgresql://postgres@localhost/unistatus_demo demo"
)


def demo(
    ctx: typer.Context,
    rows: int = typer.Option(2000, "--rows", min=0, help="Synthetic legacy rows to seed."),
    seconds: float = typer.Option(
        4.0, "--seconds", min=0.1, help="How long the main traffic burst runs (others are shorter)."
    ),
    threads: int = typer.Option(4, "--threads", min=1, max=64, help="Traffic threads."),
    json_out: bool = typer.Option(False, "--json", help="JSON report instead of tables."),
) -> None:
    from rich.console import Console

    from unistatus.sim.demo import run_demo

    # Only an explicit --database-url / UNISTATUS_DATABASE_URL: the default file
    # database is never used, the demo gets a temporary one instead.
    url = state(ctx).database_url
    out = Console(file=io.StringIO()) if json_out else console  # a reader that left: 141
    report = run_demo(url, console=out, rows=rows, seconds=seconds, threads=threads)
    if json_out:
        print_json(report.as_dict())
    if not report.ok:
        raise typer.Exit(EXIT_FAILED_CHECK)


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP)(demo)
