"""`unistatus monitor`: evaluate the alert rules in a loop (or once), notify, respond."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from unistatus.cli.context import (
    EXIT_FAILED_CHECK,
    EXIT_OK,
    console,
    err_console,
    print_json,
    state,
)
from unistatus.cli.verify_options import (
    DEFAULT_VERIFY_BUSY_WAIT,
    DEFAULT_VERIFY_ROWS,
    DEFAULT_VERIFY_SECONDS,
    VerifyBusyWait,
    VerifyRows,
    VerifySeconds,
)
from unistatus.shown import as_markup

if TYPE_CHECKING:
    from unistatus.observe.alert_state import AlertState


def monitor(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Evaluate once and exit."),
    interval: float = typer.Option(
        30.0, "--interval", min=0.1, max=86_400.0, help="Seconds between evaluations."
    ),
    count: int = typer.Option(
        0, "--count", min=0, help="Stop after N evaluations (0: until Ctrl-C)."
    ),
    verify_rows: VerifyRows = DEFAULT_VERIFY_ROWS,
    verify_seconds: VerifySeconds = DEFAULT_VERIFY_SECONDS,
    verify_busy_wait: VerifyBusyWait = DEFAULT_VERIFY_BUSY_WAIT,
    json_out: bool = typer.Option(False, "--json", help="One JSON document per evaluation."),
) -> None:
    """Evaluate alerts (state persisted, notifications once, automated responses).

    Each evaluation first verifies the rows changed since the last verified point
    (bounded by --verify-rows and --verify-seconds, watermark stored), so the
    consistency rate the alerts judge stays fresh.

    With --once the exit code is 1 when a critical alert fires.

    Examples:

      unistatus monitor
      unistatus monitor --once --json
      unistatus monitor --interval 10 --count 6
      unistatus monitor --verify-rows 50000
    """
    import sqlalchemy as sa
    from rich.markup import escape

    from unistatus.db.failures import one_line
    from unistatus.observe.alerts import Monitor

    app_state = state(ctx)
    mon = Monitor(
        app_state.engine,
        app_state.settings,
        verify_rows=verify_rows,
        verify_seconds=verify_seconds,
        verify_busy_wait=verify_busy_wait,
    )
    limit = 1 if once else count
    done = 0
    critical = False
    try:
        while True:
            try:
                states = mon.evaluate()
            except sa.exc.DBAPIError as exc:
                if once or not exc.connection_invalidated:
                    raise
                # The server dropped a connection mid-evaluation (a failover, a pooler's
                # restart): the pool is renewed, the next evaluation goes on.
                err_console.print(
                    f"[yellow]warning:[/] evaluation cut short, a connection was lost "
                    f"({escape(one_line(exc))}); the next one tries again",
                    highlight=False,
                )
                time.sleep(interval)
                continue
            done += 1
            critical = any(s.firing and s.level == "critical" for s in states)
            _show(states, json_out)
            if limit and done >= limit:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        if not json_out:
            console.print("monitor stopped")
        raise typer.Exit(EXIT_OK) from None
    raise typer.Exit(EXIT_FAILED_CHECK if once and critical else EXIT_OK)


def _show(states: list[AlertState], json_out: bool) -> None:
    if json_out:
        print_json(
            {
                "firing": [s.as_dict() for s in states if s.firing],
                "alerts": [s.as_dict() for s in states],
            }
        )
        return
    from rich.table import Table

    rules = [s for s in states if s.state != "info"]
    firing = [s for s in rules if s.firing]
    unknown = [s for s in rules if s.state == "unknown"]
    stamp = max((s.evaluated_at for s in states), default=None)
    console.print(
        f"{stamp:%Y-%m-%d %H:%M:%S} UTC  " if stamp else "",
        f"{len(rules)} rules: [bold]{len(firing)} firing[/], {len(unknown)} unknown, "
        f"{len(rules) - len(firing) - len(unknown)} resolved",
        sep="",
    )
    shown = firing + unknown
    if not shown:
        return
    table = Table(show_header=True, box=None, padding=(0, 1))
    table.add_column("alert", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("since", no_wrap=True)
    table.add_column("message / response")
    style = {"critical": "bold red", "warning": "yellow"}
    for s in shown:
        # A writer's name (any client's application_name) is in the message: text.
        text = as_markup(s.message + (f" -> {s.response}" if s.response else ""))
        table.add_row(
            f"[{style.get(s.level, 'dim')}]{s.name}[/]",
            f"{s.level} {s.state}",
            f"{s.since:%H:%M:%S}",
            text,
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
