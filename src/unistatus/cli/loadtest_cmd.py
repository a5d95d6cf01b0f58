"""`unistatus loadtest`: many transactions through the adapter; latency and consistency,
judged against the migration strategy's targets.

The same command is scripts/load_test_dual_write.py (:func:`script_app`): one function,
its options, plus the global ones a program of its own needs.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from unistatus.cli.context import (
    DATABASE_URL_OPTION,
    DEBUG_OPTION,
    EXIT_FAILED_CHECK,
    AppState,
    begin,
    console,
    err_console,
    print_json,
    say_interrupted,
    state,
)
from unistatus.cli.errors_shown import ErrorsShownCommand
from unistatus.errors import UnistatusError
from unistatus.shown import as_markup

if TYPE_CHECKING:
    from unistatus.sim.loadtest import LoadTestReport, RunStats

ProgressFn = Callable[[str, int, int], None]

SCRIPT_MODE = "DUAL_WRITE_LEGACY_PRIMARY"
SCRIPT_HELP = (
    "The migration strategy's load test: create TRANSACTIONS and walk each to a final "
    "status through the dual-write adapter, CONCURRENT at a time, then say PASS or FAIL "
    "against the strategy's targets (mean and p95 latency < 200 ms, error rate < 0.1%, "
    "consistency > 99.9%).\n\n"
    "The same as `unistatus loadtest --mode DUAL_WRITE_LEGACY_PRIMARY`. Writes real rows "
    "and switches the mode for the run (restored after): use a staging database. Exit 1 "
    "when a target is missed, an operation failed or the check found an inconsistency.\n\n"
    "Examples:\n\n"
    "  python scripts/load_test_dual_write.py --transactions=10000 --concurrent=50\n"
    "  python scripts/load_test_dual_write.py --database-url postgresql://user@staging/payments "
    "--baseline\n"
    "  python scripts/load_test_dual_write.py -n 2000 -c 8 --json > loadtest.json"
)


def loadtest(
    ctx: typer.Context,
    transactions: int = typer.Option(10_000, "--transactions", "-n", help="How many."),
    concurrent: int = typer.Option(50, "--concurrent", "-c", help="Threads writing at once."),
    mode: str = typer.Option(
        None, "--mode", help="Write mode for the run (default: the current one); restored after."
    ),
    baseline: bool = typer.Option(
        False,
        "--baseline",
        help="Run the same load in LEGACY_ONLY first; report the overhead. Its rows have no "
        "unified row: on a migrated database a watching monitor reads them as inconsistent "
        "and rolls back (backfill and check after it; use a staging copy).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed for the transaction mix."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Create TRANSACTIONS and walk each to a final status, CONCURRENT at a time.

    Then PASS or FAIL against the migration strategy's targets (mean and p95 latency
    < 200 ms, error rate < 0.1%, consistency > 99.9%). Writes real rows and switches the
    mode for the run: use a staging database. Exit 1 when a target is missed, an
    operation failed or the final check found an inconsistency. Progress goes to
    stderr: a bar on a terminal, a line per tenth of the run otherwise (none with --json).

    One load test at a time holds the mode: while one given --mode or --baseline runs,
    another is refused (exit 2); without them, they share it with each other only.

    Ctrl-C or SIGTERM stops the run (exit 130) and puts the previous mode back. If the
    database is unreachable, that is retried for a minute; failing that, exit 2 with the
    mode left behind and the `unistatus mode set` command that puts it back. A system
    someone else switched during the run (an emergency rollback) is left as it is, with
    a warning (`mode_left_alone` in --json).

    Examples:

      unistatus loadtest --transactions 10000 --concurrent 50 --mode DUAL_WRITE_LEGACY_PRIMARY
      unistatus loadtest -n 2000 -c 8 --baseline --json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from unistatus.sim.loadtest import run_load_test

    app = state(ctx)
    app.engine  # noqa: B018 - the database reachable and installed, before the run starts
    tasks: dict[str, Any] = {}
    with (
        _says_mode_when_interrupted(app),
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=json_out or not err_console.is_terminal,
            transient=False,
        ) as progress,
    ):

        def on_bar(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        on_progress: ProgressFn | None = on_bar
        if not err_console.is_terminal:
            on_progress = None if json_out else _progress_lines()
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
    if (
        not run.targets_met
        or run.errors
        or (run.consistency_rate is not None and run.consistency_rate < 1.0)
    ):
        raise typer.Exit(EXIT_FAILED_CHECK)


@contextmanager
def _says_mode_when_interrupted(app: AppState) -> Iterator[None]:
    """Ctrl-C (or SIGTERM): the run stopped, its mode put back (else the run raised
    ModeNotRestoredError, shown as any error); said as every command says it
    (:func:`say_interrupted`: one line, exit 130, under --json one JSON object, which
    the line printed here alone left empty), naming the mode now."""
    from unistatus.db.control import get_modes
    from unistatus.db.mode_reads import mode_summary

    try:
        yield
    except KeyboardInterrupt:
        try:
            now = f"the write mode is back to {mode_summary(get_modes(app.engine))}"
        except UnistatusError as exc:
            now = f"the write mode was put back (cannot read it now: {exc})"
        say_interrupted(f"the load test stopped early; {now}")


def _progress_lines() -> ProgressFn:
    """Progress for a log (output not a terminal): one line per tenth of each run."""
    started: dict[str, float] = {}

    def on_progress(label: str, done: int, total: int) -> None:
        first = started.setdefault(label, time.monotonic())
        if done == total or done % max(1, total // 10) == 0:
            err_console.print(
                f"{label}: {done:,}/{total:,} transactions ({done / total:.0%}), "
                f"{time.monotonic() - first:.1f} s",
                highlight=False,
            )

    return on_progress


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
        err_console.print(f"[red]error:[/] {as_markup(error)}", highlight=False)
    for system, mode in report.mode_left_alone.items():
        err_console.print(
            f"[yellow]warning:[/] {system} was switched to {mode} by someone else during "
            "the run (a rollback?): the mode was left as it is, not put back",
            highlight=False,
        )
    _print_verdict(report.run)


def _print_verdict(run: RunStats) -> None:
    from rich.table import Table

    table = Table(title=f"targets of the migration strategy ({run.mode.value})")
    for column in ("target", "value", "bound", "result"):
        table.add_column(column, justify="left" if column == "target" else "right")
    result = {True: "[green]pass[/]", False: "[bold red]FAIL[/]", None: "[dim]n/a[/]"}
    for t in run.targets():
        table.add_row(t.name, t.value, t.target, result[t.passed])
    console.print(table)
    missed = [f"{t.name} {t.value} (target {t.target})" for t in run.targets() if t.passed is False]
    if missed:
        console.print(f"[bold red]FAIL[/]: {'; '.join(missed)}", highlight=False)
    else:
        console.print("[bold green]PASS[/]: every target of the migration strategy met")


def script_app() -> typer.Typer:
    """scripts/load_test_dual_write.py: this command as a program of its own.

    Its options are :func:`loadtest`'s (read from its signature, so the two cannot
    drift), with --mode defaulting to DUAL_WRITE_LEGACY_PRIMARY as the strategy runs
    it, and the global --database-url and --debug among them; --help shows the
    program's own name.
    """
    signature = inspect.signature(loadtest, eval_str=True)
    context, *options = signature.parameters.values()
    script_mode = typer.Option(
        SCRIPT_MODE, "--mode", help="Write mode for the run; the previous one is restored after."
    )
    options = [p.replace(default=script_mode) if p.name == "mode" else p for p in options]
    globals_ = [
        inspect.Parameter(
            "database_url", inspect.Parameter.KEYWORD_ONLY, default=DATABASE_URL_OPTION,
            annotation=str,
        ),
        inspect.Parameter(
            "debug", inspect.Parameter.KEYWORD_ONLY, default=DEBUG_OPTION, annotation=bool
        ),
    ]  # fmt: skip

    def program(ctx: typer.Context, database_url: str | None, debug: bool, **values: Any) -> None:
        begin(ctx, database_url, debug, command="loadtest")
        loadtest(ctx, **values)

    parameters = [context, *globals_, *(p.replace(kind=p.KEYWORD_ONLY) for p in options)]
    program.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    program.__annotations__ = {p.name: p.annotation for p in parameters}
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(cls=ErrorsShownCommand, help=SCRIPT_HELP)(program)
    return app


def register(app: typer.Typer) -> None:
    app.command("loadtest")(loadtest)
