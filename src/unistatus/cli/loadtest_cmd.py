"""`unistatus loadtest`: many transactions through the adapter; latency and consistency."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from unistatus.cli.context import EXIT_FAILED_CHECK, console, err_console, print_json, state

if TYPE_CHECKING:
    from unistatus.sim.loadtest import LoadTestReport, RunStats


def loadtest(
    ctx: typer.Context,
    transactions: int = typer.Option(10_000, "--transactions", "-n", help="How many."),
    concurrent: int = typer.Option(50, "--concurrent", "-c", help="Threads writing at once."),
    mode: str = typer.Option(
        None, "--mode", help="Write mode for the run (default: the current one); restored after."
    ),
    baseline: bool = typer.Option(
        False, "--baseline", help="Run the same load in LEGACY_ONLY first; report the overhead."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed for the transaction mix."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Create TRANSACTIONS and walk each to a final status, CONCURRENT at a time.

    Writes real rows and switches the mode for the run: use a staging database.
    Exit 1 if any operation failed or the final check found an inconsistency.

    Examples:

      unistatus loadtest --transactions 10000 --concurrent 50 --mode DUAL_WRITE_LEGACY_PRIMARY
      unistatus loadtest -n 2000 -c 8 --baseline --json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from unistatus.sim.loadtest import run_load_test

    app = state(ctx)
    app.engine  # noqa: B018 - the database reachable and installed, before the run starts
    tasks: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=json_out or not err_console.is_terminal,
        transient=False,
    ) as progress:

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        report = run_load_test(
            app.settings.database_url,
            app.settings,
            transactions=transactions,
            concurrent=concurrent,
            mode=mode,
            baseline=baseline,
            seed=seed,
            on_progress=on_progress,
        )
    if json_out:
        print_json(report.as_dict())
    else:
        _print(report)
    run = report.run
    if run.errors or (run.consistency_rate is not None and run.consistency_rate < 1.0):
        raise typer.Exit(EXIT_FAILED_CHECK)


def _print(report: LoadTestReport) -> None:
    from rich.table import Table

    table = Table(title=f"load test on {report.backend}")
    table.add_column("")
    runs: list[RunStats] = [r for r in (report.baseline, report.run) if r is not None]
    for r in runs:
        table.add_column(r.mode.value, justify="right")

    def row(name: str, fn: Any) -> None:
        table.add_row(name, *(fn(r) for r in runs))

    row("transactions / concurrent", lambda r: f"{r.transactions} / {r.concurrent}")
    row("operations", lambda r: str(r.operations))
    row("elapsed", lambda r: f"{r.elapsed_s:.1f} s")
    row("throughput", lambda r: f"{r.throughput_tps:.1f} tx/s ({r.ops_per_second:.0f} op/s)")
    for k in ("mean", "p50", "p95", "p99"):
        row(f"latency {k}", lambda r, k=k: f"{r.latency()[k]:.1f} ms")
    row("errors", lambda r: f"{r.errors} ({r.error_rate:.3%})")
    row(
        "consistency",
        lambda r: (
            "n/a (not a dual mode)"
            if r.consistency_rate is None
            else f"{r.consistency_rate:.3%} of {r.consistency_checked}"
        ),
    )
    console.print(table)
    overhead = report.overhead_pct
    if overhead is not None:
        console.print(
            "dual-write overhead vs LEGACY_ONLY: "
            + ", ".join(f"{k} {v:+.1f}%" for k, v in overhead.items())
        )
    for error in report.run.first_errors:
        err_console.print(f"[red]error:[/] {error}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("loadtest")(loadtest)
