"""`unistatus demo`: the whole migration in miniature, on a throwaway database."""

from __future__ import annotations

import io

import typer

from unistatus.cli.context import EXIT_FAILED_CHECK, print_json, state

HELP = (
    "Run the end-to-end demo and exit non-zero if any step fails.\n\n"
    "In a temporary SQLite database (or the global --database-url): seed legacy rows, "
    "validate the mapping, switch to DUAL_WRITE_LEGACY_PRIMARY, drive simulated live traffic "
    "across all three systems from several threads, then check that every transaction "
    "touched is consistent on both sides, and print a summary.\n\n"
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
    seconds: float = typer.Option(4.0, "--seconds", min=0.1, help="How long traffic runs."),
    threads: int = typer.Option(4, "--threads", min=1, max=64, help="Traffic threads."),
    json_out: bool = typer.Option(False, "--json", help="JSON report instead of tables."),
) -> None:
    from rich.console import Console

    from unistatus.demo import run_demo

    # Only an explicit --database-url / UNISTATUS_DATABASE_URL: the default file
    # database is never used, the demo gets a temporary one instead.
    url = state(ctx).database_url
    out = Console(file=io.StringIO()) if json_out else None
    report = run_demo(url, console=out, rows=rows, seconds=seconds, threads=threads)
    if json_out:
        print_json(report.as_dict())
    if not report.ok:
        raise typer.Exit(EXIT_FAILED_CHECK)


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP)(demo)
