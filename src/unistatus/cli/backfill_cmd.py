"""`unistatus backfill`: copy history into unified_transactions; status, pause, resume,
tune, undo."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from unistatus.cli.context import (
    REASON_HELP,
    SYSTEM_HELP,
    SystemOption,
    console,
    err_console,
    parse_system,
    print_json,
    require_reason,
    says_when_interrupted,
    state,
)
from unistatus.errors import InputError

if TYPE_CHECKING:
    from unistatus.domain.statuses import LegacySystemType

backfill_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
)

SystemsOption = Annotated[
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
    system: SystemsOption = None,
    batch_size: int = typer.Option(
        1000,
        "--batch-size",
        min=1,
        help="Rows of the first batch; of every batch with --target-batch-ms 0.",
    ),
    target_batch_ms: float = typer.Option(
        None,
        "--target-batch-ms",
        min=0,
        help="Size batches to take about this long (ms); 0: fixed --batch-size. "
        "Default: settings backfill.target_batch_ms (200).",
    ),
    min_batch_rows: int = typer.Option(
        None,
        "--min-batch-rows",
        min=1,
        help="Smallest adaptive batch (default 1000; never above --batch-size).",
    ),
    max_batch_rows: int = typer.Option(
        None, "--max-batch-rows", min=1, help="Largest adaptive batch (default 100000)."
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        min=1,
        max=64,
        help="Worker threads sharing the chunks, one connection each (PostgreSQL; SQLite "
        "runs one). Default: settings backfill.workers (2).",
    ),
    # Its floor is the library's (control.MIN_ROWS_PER_SECOND), the same as `tune`'s.
    max_rows_per_second: float = typer.Option(
        None, "--max-rows-per-second", help="Throttle (rows/s, all workers)."
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

    Batches start at --batch-size rows and are sized to take --target-batch-ms (200 ms by default; 0 keeps every batch at --batch-size). Between batches each worker holds back while the adapter's p95, a replica's lag or lock waits are above their limits (see `backfill status`), and `backfill tune` changes a running backfill.

    Examples:

      unistatus backfill --dry-run

      unistatus backfill --batch-size 1000 --max-rows-per-second 20000

      unistatus backfill --target-batch-ms 0 --batch-size 5000     (fixed batches)

      unistatus backfill --workers 4 --json     (PostgreSQL; other hosts may join)

      unistatus backfill --workers 1     (one connection: the gentlest on a busy server)

      unistatus backfill status --json

      unistatus backfill tune --max-rows-per-second 5000 --reason "peak hours"

      unistatus backfill pause --reason "peak hours"; unistatus backfill resume

      unistatus backfill --retry-quarantine

      unistatus backfill undo --dry-run; unistatus backfill undo --reason "restart from scratch"
    """
    if ctx.invoked_subcommand is not None:
        return
    from unistatus.backfill import run_backfill
    from unistatus.migration.quarantine_retry import retry_quarantine as retry

    app = state(ctx)
    app.engine_seeing_every_row("backfill")
    chosen = _systems(system)
    if retry_quarantine:
        with says_when_interrupted(
            "what each system's finished retry migrated is kept (one transaction per "
            "system); run `unistatus backfill --retry-quarantine` again for the rest"
        ):
            result = retry(app.engine, app.settings, systems=chosen)
        if json_out:
            print_json(result)
        else:
            console.print(
                f"quarantine: {result['migrated']:,} migrated ({result['inserted']:,} inserted, "
                f"{result['in_step']:,} brought in step), "
                f"{result['legacy_row_gone']:,} gone from legacy, "
                f"{result['still_unmappable']:,} still unmappable"
                + (
                    f", {result['in_step_needed']:,} waiting for a mode that maintains unified"
                    if result["in_step_needed"]
                    else ""
                )
            )
        return
    options: dict[str, Any] = {
        "systems": chosen,
        "batch_size": batch_size,
        "workers": workers,
        "max_rows_per_second": max_rows_per_second,
        "target_batch_ms": target_batch_ms,
        "min_batch_rows": min_batch_rows,
        "max_batch_rows": max_batch_rows,
    }
    if not dry_run:
        from unistatus.backfill.control import active_pauses

        for paused in active_pauses(app.engine, chosen):
            # On stderr, whatever the output: a wait nobody is told of looks like a hang.
            err_console.print(paused.describe(), style="yellow", highlight=False, soft_wrap=True)
        _warn_before_dual_write(app.engine, chosen)
    show_bars = not json_out and not dry_run and err_console.is_terminal
    with says_when_interrupted(
        "every batch committed so far is kept; run `unistatus backfill` again to resume"
    ):
        if show_bars:
            report = _run_with_bars(app, options, run_backfill)
        else:
            report = run_backfill(app.engine, app.settings, dry_run=dry_run, **options)
    if json_out:
        print_json(report.as_dict())
    else:
        _print_report(report.as_dict())


def _run_with_bars(app: Any, options: dict[str, Any], run_backfill: Any) -> Any:
    from unistatus.backfill.bars import backfill_bars

    bars, on_progress = backfill_bars(err_console)
    with bars:
        return run_backfill(app.engine, app.settings, progress=on_progress, **options)


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
            f"({data['rows_per_second']:,.0f} rows/s, {data['workers']} worker(s), "
            f"{data['batches_this_run']:,} batches)"
        )
    if data["quarantined"]:
        console.print(
            f"[yellow]{data['quarantined']:,} legacy rows are quarantined, each with its "
            "reason (`unistatus diagnose` lists them): an unmappable status (fix the row or "
            "map its value: the config's \\[mapping.<SYSTEM>]), or an id or shared field a "
            "unified row cannot take (fix the row); then run "
            "`unistatus backfill --retry-quarantine`.[/]"
        )


@backfill_app.command("status")
def status(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Progress per system, each running worker's batch size and throttle, the tuning.

    Read from the database (works while a run is going, from any host). A worker that holds back says why (p95_latency, replication_lag, lock_waits, or live_traffic for a second worker), since when, and the reading against its limit.

    Examples:

      unistatus backfill status
      unistatus backfill status --json
    """
    from unistatus.backfill import current_tuning, progress, quarantine_count, read_workers

    app = state(ctx)
    data = progress(app.engine, app.settings)
    workers = read_workers(app.engine)
    tuning = current_tuning(app.engine, app.settings)
    if json_out:
        print_json(
            {
                "systems": data,
                "quarantined": quarantine_count(app.engine),
                "workers": workers,
                "tuning": tuning,
            }
        )
        return
    from rich.table import Table

    table = Table(title="backfill status")
    for col in ("system", "state", "done", "total", "percent", "rows/s", "eta", "updated"):
        table.add_column(col, justify="right" if col not in ("system", "state") else "left")
    for name, p in data.items():
        eta = f"{p['eta_seconds']:.0f} s" if p["eta_seconds"] else "-"
        rate = "-" if p["rows_per_second"] is None else f"{p['rows_per_second']:,.0f}"
        table.add_row(
            name.lower(),
            p["state"],
            f"{p['done']:,}",
            f"{p['total']:,}",
            f"{p['percent']:.1f}%",
            rate,
            eta,
            p["updated_at"] or "-",
        )
    console.print(table)
    _print_no_rate(data)
    if workers:
        _print_workers(workers)
    _print_tuning(tuning)
    console.print(f"quarantined (unresolved): {quarantine_count(app.engine):,}")


def _print_no_rate(data: dict[str, dict[str, Any]]) -> None:
    """Say why a system has no rate and no ETA: a "-" alone read as a measurement
    missing, not as a job that goes nowhere until someone runs it again."""
    idle = {name.lower(): p for name, p in data.items() if p["rows_per_second"] is None}
    if not idle:
        return
    paused = any(p["state"] == "paused" for p in idle.values())
    again = (
        "paused: run `unistatus backfill resume`, then `unistatus backfill`"
        if paused  # the next backfill waits until the pause is lifted
        else "run `unistatus backfill` again to go on"
    )
    console.print(f"{', '.join(idle)}: no current rate or ETA: no worker running ({again})")


def _print_workers(workers: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="workers")
    for col in ("worker", "state", "next batch", "last batch", "rows"):
        table.add_column(col, justify="left" if col in ("worker", "state") else "right")
    for w in workers:
        last = (
            f"{w['last_batch_rows']:,} in {w['last_batch_ms']:.0f} ms"
            if w["last_batch_rows"] is not None
            else "-"
        )
        held = w["throttle"]["reason"] is not None
        table.add_row(
            w["worker"],
            w["state"],
            f"{w['batch_rows']:,}",
            last,
            f"{w['rows']:,}",
            style="yellow" if held else None,
        )
    console.print(table)
    for w in workers:
        t = w["throttle"]
        if t["reason"]:
            console.print(
                f"[yellow]{w['worker']} holds back: {t['reason']}: {t['reading']:g} > "
                f"{t['limit']:g} since {t['since']} ({t['seconds']:.0f} s)[/]"
            )


# What `status` calls the tuning it shows, by whose it is (control.current_tuning's "of").
_TUNING_OF = {
    "running workers": "tuning (the running workers')",
    "next run": "tuning (no worker running: the unfinished job's next run, without options)",
    "new job": "tuning (no unfinished job: a new one's, without options)",
}


def _print_tuning(tuning: dict[str, Any]) -> None:
    values, sources = tuning["values"], tuning["sources"]
    parts = [
        f"{name}={'off' if value is None else value}"
        + ("" if sources[name] == "settings" else f" ({sources[name]})")
        for name, value in values.items()
    ]
    label = _TUNING_OF.get(tuning.get("of", ""), "tuning")
    console.print(f"{label}: " + ", ".join(parts))


@backfill_app.command("tune")
def tune(
    ctx: typer.Context,
    max_rows_per_second: str = typer.Option(
        None, "--max-rows-per-second", help="Rows/s for the whole backfill; 0 or off: no limit."
    ),
    target_batch_ms: float = typer.Option(
        None, "--target-batch-ms", min=0, help="Target batch duration (ms); 0: fixed batches."
    ),
    min_batch_rows: int = typer.Option(None, "--min-batch-rows", min=1, help="Smallest batch."),
    max_batch_rows: int = typer.Option(None, "--max-batch-rows", min=1, help="Largest batch."),
    max_p95_ms: str = typer.Option(
        None, "--max-p95-ms", help="Hold back above this adapter p95 (ms); off: no limit."
    ),
    p95_over_baseline: str = typer.Option(
        None,
        "--p95-over-baseline",
        help="Hold back above this times the p95 before the backfill (e.g. 1.2); off.",
    ),
    max_replication_lag: str = typer.Option(
        None, "--max-replication-lag", help="Hold back above this replica lag (s); off."
    ),
    max_lock_waits: str = typer.Option(
        None, "--max-lock-waits", help="Hold back above this many lock waits; off."
    ),
    reason: str = typer.Option("tune", "--reason", help="Why (recorded in the control log)."),
    actor: str = typer.Option("cli", "--actor", help="Who (recorded)."),
    json_out: JsonOption = False,
) -> None:
    """Change a running backfill: every worker on every host, from its next batch.

    Stored in the database (control keys backfill.<name>, each change in the control log); workers re-read them between batches (and during a wait for the rate), nothing restarts. A tune belongs to the job running now: with no worker running, the unfinished job's next run takes it (except what that run is given as options); with no unfinished job it is refused, nothing stored (a new job starts from the settings and its own options).

    Examples:

      unistatus backfill tune --max-rows-per-second 5000 --reason "peak hours"

      unistatus backfill tune --max-rows-per-second off --target-batch-ms 500

      unistatus backfill tune --target-batch-ms 0     (fixed batches of --batch-size)

      unistatus backfill tune --max-p95-ms 150 --max-lock-waits 0 --json
    """
    from unistatus.backfill import tune as do_tune

    changes = {
        "max_rows_per_second": max_rows_per_second,
        "target_batch_ms": target_batch_ms,
        "min_batch_rows": min_batch_rows,
        "max_batch_rows": max_batch_rows,
        "max_p95_ms": max_p95_ms,
        "p95_over_baseline": p95_over_baseline,
        "max_replication_lag_seconds": max_replication_lag,
        "max_lock_waits": max_lock_waits,
    }
    if all(value is None for value in changes.values()):
        flags = "--max-rows-per-second, --target-batch-ms, --min-batch-rows, --max-batch-rows, "
        flags += "--max-p95-ms, --p95-over-baseline, --max-replication-lag, --max-lock-waits"
        raise InputError(f"nothing to tune: give at least one of {flags}")
    app = state(ctx)
    result = do_tune(app.engine, actor=actor, reason=reason, settings=app.settings, **changes)
    if json_out:
        print_json(result)
        return
    done = ", ".join(
        f"{name}={'off' if value is None else value}" for name, value in result["tuned"].items()
    )
    if result["of"] == "running workers":
        console.print(f"backfill tuned: {done} (running workers apply it before their next batch)")
    else:
        console.print(
            f"backfill tuned: {done}; no worker is running now: the unfinished job's next run "
            "(`unistatus backfill`) takes it, except what that run is given as options."
        )


@backfill_app.command("pause")
def pause(
    ctx: typer.Context,
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the control log)."),
    actor: str = typer.Option("cli", "--actor", help="Who (recorded)."),
    system: SystemOption = None,
    json_out: JsonOption = False,
) -> None:
    """Hold running backfill workers before their next batch (they wait). The pause is
    kept: a backfill started later waits too, until `unistatus backfill resume`.

    Examples:

      unistatus backfill pause --reason "peak hours"
      unistatus backfill pause --system escrow --reason "escrow team's freeze"
      unistatus backfill pause --reason "DB maintenance" --actor alice --json
    """
    from unistatus.backfill import pause as do_pause

    chosen = parse_system(system)
    result = do_pause(state(ctx).engine, actor=actor, reason=reason, system=chosen)
    if json_out:
        print_json(result)
    else:
        which = f"{chosen.value}'s " if chosen is not None else ""
        if result["running"]:
            console.print(f"backfill paused: {which}workers hold before their next batch")
        else:
            of = f" of {chosen.value}" if chosen is not None else ""
            console.print(
                f"backfill paused: no backfill{of} is running now; the next "
                "`unistatus backfill` waits until `unistatus backfill resume`"
            )


def _warn_before_dual_write(engine: Any, chosen: list[Any] | None) -> None:
    """A backfill of a system in LEGACY_ONLY without capture: nothing keeps a copied row
    in step with the legacy writes after its copy (found by a probe: no word of it)."""
    from unistatus.db.control import get_modes
    from unistatus.domain.statuses import DualWriteMode, LegacySystemType
    from unistatus.migration.capture_intent import is_enabled

    modes = get_modes(engine)
    idle = [
        s.value.lower() for s in chosen or LegacySystemType if modes[s] is DualWriteMode.LEGACY_ONLY
    ]
    if not idle:
        return
    with engine.connect() as conn:
        captured = is_enabled(conn)
    if not captured:
        err_console.print(
            f"[yellow]warning:[/] {', '.join(idle)} in LEGACY_ONLY: nothing writes unified, "
            "so a row the application changes after its copy goes stale (the full check "
            "of the gate into phase 3 finds it); the backfill belongs to phase 2, after "
            "`unistatus phase advance` turned dual write on",
            highlight=False,
            soft_wrap=True,
        )


@backfill_app.command("resume")
def resume(
    ctx: typer.Context,
    reason: str = typer.Option("resume", "--reason", help="Why (recorded in the control log)."),
    actor: str = typer.Option("cli", "--actor", help="Who (recorded)."),
    system: Annotated[
        list[str] | None,
        typer.Option("--system", help=f"{SYSTEM_HELP} Without it every system resumes."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Let paused backfill workers continue.

    Examples:

      unistatus backfill resume
      unistatus backfill resume --system escrow
      unistatus backfill resume --reason "peak over" --actor alice
    """
    from unistatus.backfill import resume as do_resume

    result = do_resume(state(ctx).engine, actor=actor, reason=reason, system=parse_system(system))
    if json_out:
        print_json(result)
    else:
        console.print("backfill resumed")


@backfill_app.command("undo")
def undo(
    ctx: typer.Context,
    system: SystemsOption = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; change nothing."),
    reason: str = typer.Option(None, "--reason", help=f"{REASON_HELP} Not for --dry-run."),
    actor: str = typer.Option("cli", "--actor", help="Who (recorded)."),
    json_out: JsonOption = False,
) -> None:
    """Remove unified rows the backfill created that no live write has touched since.

    Rows created or updated by the adapter are kept. Resets the backfill's progress.
    Recorded in the control log (key backfill_undo) with the actor and the reason. Only
    where legacy is authoritative (LEGACY_ONLY, DUAL_WRITE_LEGACY_PRIMARY: rolling back
    from phase 2); refused, exit 2, for a system whose mode reads unified.

    Examples:

      unistatus backfill undo --dry-run

      unistatus backfill undo --system escrow --reason "mapping fix, backfill again"
    """
    from unistatus.backfill import undo as do_undo

    if not dry_run:
        reason = require_reason(reason, "backfill undo", dry_run=True)
    app = state(ctx)
    with says_when_interrupted(
        "the rows removed so far stay removed (each batch committed on its own); run "
        "`unistatus backfill undo` again to finish (it is idempotent)"
    ):
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
