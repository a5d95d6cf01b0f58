"""`unistatus backfill`: copy history into unified_transactions; status, pause, resume, undo."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from unistatus.cli.context import (
    REASON_HELP,
    console,
    err_console,
    print_json,
    require_reason,
    state,
)

if TYPE_CHECKING:
    from unistatus.domain.statuses import LegacySystemType

backfill_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
)

SystemOption = Annotated[
    list[str] | None,
    typer.Option("--system", help="cashout, escrow, exchange or all (repeatable). Default: all."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON output.")]


def _systems(values: list[str] | None) -> list[LegacySystemType] | None:
    from unistatus.domain.statuses import LegacySystemType

    if not values or any(v.strip().lower() == "all" for v in values):
        return None
    chosen: list[LegacySystemType] = []
    for v in values:
        system = LegacySystemType.parse(v)
        if system not in chosen:
            chosen.append(system)
    return chosen


@backfill_app.callback()
def run(
    ctx: typer.Context,
    system: SystemOption = None,
    batch_size: int = typer.Option(
        1000, "--batch-size", min=1, help="Legacy rows per batch (one INSERT ... SELECT)."
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Worker processes sharing the chunks (PostgreSQL; SQLite runs one).",
    ),
    max_rows_per_second: float = typer.Option(
        None, "--max-rows-per-second", min=0.001, help="Throttle (rows/s, all workers)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Count what would be inserted and what is unmappable."
    ),
    retry_quarantine: bool = typer.Option(
        False,
        "--retry-quarantine",
        help="Migrate quarantined rows that the mapping now covers, then exit.",
    ),
    json_out: JsonOption = False,
) -> None:
    """Backfill unified_transactions from every legacy row up to the high-water mark.

    Each batch is one INSERT ... SELECT over a key range, committed with its checkpoint: kill it at any moment and run the same command again to resume. Existing unified rows are never overwritten; unmappable rows are quarantined.

    Examples:

      unistatus backfill --dry-run

      unistatus backfill --batch-size 1000 --max-rows-per-second 20000

      unistatus backfill --workers 4 --json     (PostgreSQL; other hosts may join)

      unistatus backfill status --json

      unistatus backfill pause --reason "peak hours"; unistatus backfill resume

      unistatus backfill --retry-quarantine

      unistatus backfill undo --dry-run; unistatus backfill undo --reason "restart from scratch"
    """
    if ctx.invoked_subcommand is not None:
        return
    from unistatus.backfill import retry_quarantine as retry
    from unistatus.backfill import run_backfill

    app = state(ctx)
    chosen = _systems(system)
    if retry_quarantine:
        result = retry(app.engine, app.settings, systems=chosen)
        if json_out:
            print_json(result)
        else:
            console.print(
                f"quarantine: {result['migrated']:,} migrated ({result['inserted']:,} inserted), "
                f"{result['legacy_row_gone']:,} gone from legacy, "
                f"{result['still_unmappable']:,} still unmappable"
            )
        return
    show_bars = not json_out and not dry_run and err_console.is_terminal
    if show_bars:
        report = _run_with_bars(app, chosen, batch_size, workers, max_rows_per_second, run_backfill)
    else:
        report = run_backfill(
            app.engine,
            app.settings,
            systems=chosen,
            batch_size=batch_size,
            workers=workers,
            max_rows_per_second=max_rows_per_second,
            dry_run=dry_run,
        )
    if json_out:
        print_json(report.as_dict())
    else:
        _print_report(report.as_dict())


def _run_with_bars(
    app: Any,
    chosen: list[LegacySystemType] | None,
    batch_size: int,
    workers: int,
    rate: float | None,
    run_backfill: Any,
) -> Any:
    from unistatus.backfill.bars import backfill_bars

    bars, on_progress = backfill_bars(err_console)
    with bars:
        return run_backfill(
            app.engine,
            app.settings,
            systems=chosen,
            batch_size=batch_size,
            workers=workers,
            max_rows_per_second=rate,
            progress=on_progress,
        )


def _print_report(data: dict[str, Any]) -> None:
    from rich.table import Table

    title = "backfill dry run (nothing written)" if data["dry_run"] else "backfill"
    table = Table(title=title)
    table.add_column("system")
    table.add_column("rows", justify="right")
    table.add_column("would insert" if data["dry_run"] else "inserted", justify="right")
    table.add_column("already present", justify="right")
    table.add_column("unmappable" if data["dry_run"] else "quarantined", justify="right")
    table.add_column("state")
    for name, s in data["systems"].items():
        table.add_row(
            name.lower(),
            f"{s['total']:,}",
            f"{s['inserted']:,}",
            f"{s['already_present']:,}",
            f"{s['quarantined']:,}",
            s["state"],
            style="yellow" if s["quarantined"] else None,
        )
    console.print(table)
    if not data["dry_run"]:
        console.print(
            f"{data['rows_this_run']:,} rows in {data['duration_seconds']:.2f} s "
            f"({data['rows_per_second']:,.0f} rows/s, {data['workers']} worker(s))"
        )
    if data["quarantined"]:
        console.print(
            f"[yellow]{data['quarantined']:,} unmappable legacy rows are quarantined; fix "
            "them or map their values (the config's \\[mapping.<SYSTEM>]), then run "
            "`unistatus backfill --retry-quarantine`.[/]"
        )


@backfill_app.command("status")
def status(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Progress per system, read from the database (works while a run is going).

    Examples:

      unistatus backfill status
      unistatus backfill status --json
    """
    from unistatus.backfill import progress, quarantine_count

    app = state(ctx)
    data = progress(app.engine, app.settings)
    if json_out:
        print_json({"systems": data, "quarantined": quarantine_count(app.engine)})
        return
    from rich.table import Table

    table = Table(title="backfill status")
    for col in ("system", "state", "done", "total", "percent", "rows/s", "eta", "updated"):
        table.add_column(col, justify="right" if col not in ("system", "state") else "left")
    for name, p in data.items():
        eta = f"{p['eta_seconds']:.0f} s" if p["eta_seconds"] else "-"
        table.add_row(
            name.lower(),
            p["state"],
            f"{p['done']:,}",
            f"{p['total']:,}",
            f"{p['percent']:.1f}%",
            f"{p['rows_per_second']:,.0f}",
            eta,
            p["updated_at"] or "-",
        )
    console.print(table)
    console.print(f"quarantined (unresolved): {quarantine_count(app.engine):,}")


@backfill_app.command("pause")
def pause(
    ctx: typer.Context,
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the control log)."),
    actor: str = typer.Option("cli", "--actor", help="Who (recorded)."),
    json_out: JsonOption = False,
) -> None:
    """Hold running backfill workers before their next batch (they wait).

    Examples:

      unistatus backfill pause --reason "peak hours"
      unistatus backfill pause --reason "DB maintenance" --actor alice --json
    """
    from unistatus.backfill import pause as do_pause

    result = do_pause(state(ctx).engine, actor=actor, reason=reason)
    if json_out:
        print_json(result)
    else:
        console.print("backfill paused: workers hold before their next batch")


@backfill_app.command("resume")
def resume(
    ctx: typer.Context,
    reason: str = typer.Option("resume", "--reason", help="Why (recorded in the control log)."),
    actor: str = typer.Option("cli", "--actor", help="Who (recorded)."),
    json_out: JsonOption = False,
) -> None:
    """Let paused backfill workers continue.

    Examples:

      unistatus backfill resume
      unistatus backfill resume --reason "peak over" --actor alice
    """
    from unistatus.backfill import resume as do_resume

    result = do_resume(state(ctx).engine, actor=actor, reason=reason)
    if json_out:
        print_json(result)
    else:
        console.print("backfill resumed")


@backfill_app.command("undo")
def undo(
    ctx: typer.Context,
    system: SystemOption = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; change nothing."),
    reason: str = typer.Option(None, "--reason", help=f"{REASON_HELP} Not for --dry-run."),
    actor: str = typer.Option("cli", "--actor", help="Who (recorded)."),
    json_out: JsonOption = False,
) -> None:
    """Remove unified rows the backfill created that no live write has touched since.

    Rows created or updated by the adapter are kept. Resets the backfill's progress.
    Recorded in the control log (key backfill_undo) with the actor and the reason.

    Examples:

      unistatus backfill undo --dry-run

      unistatus backfill undo --system escrow --reason "mapping fix, backfill again"
    """
    from unistatus.backfill import undo as do_undo

    if not dry_run:
        reason = require_reason(reason, "backfill undo", dry_run=True)
    app = state(ctx)
    result = do_undo(
        app.engine,
        app.settings,
        systems=_systems(system),
        dry_run=dry_run,
        actor=actor,
        reason=reason,
    )
    if json_out:
        print_json(result)
    else:
        kept = (
            f"{result['kept_touched_since']:,} touched by live writes since and "
            f"{result['kept_live_rows']:,} written by the adapter"
        )
        if dry_run:
            console.print(
                f"backfill undo (dry run, nothing changed): would remove "
                f"{result['removed']:,} unified rows; would keep {kept}"
            )
        else:
            console.print(
                f"backfill undone: {result['removed']:,} unified rows removed; kept {kept}"
            )


def register(app: typer.Typer) -> None:
    app.add_typer(backfill_app, name="backfill")
