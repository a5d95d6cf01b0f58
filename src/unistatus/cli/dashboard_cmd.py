"""`unistatus dashboard`: the migration dashboard in the terminal (Rich live view)."""

from __future__ import annotations

from contextlib import suppress

import typer

from unistatus.cli.context import abort, console, state


def dashboard(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Render one frame and exit."),
    interval: float = typer.Option(5.0, "--interval", min=0.2, help="Seconds between refreshes."),
) -> None:
    """Performance, data quality, progress per phase and system, alerts (Ctrl-C stops).

    With --once: exit 2 when the database could not be read (the frame says why).

    Examples:

      unistatus dashboard
      unistatus dashboard --interval 2
      unistatus dashboard --once
    """
    from unistatus.db.target import check_current_schema
    from unistatus.errors import StorageError
    from unistatus.observe.terminal_dashboard import run

    app_state = state(ctx)
    try:
        # as_is: the dashboard shows "database unreachable" itself, and keeps refreshing
        # (a missing SQLite file is still refused: connecting would create it)
        engine = app_state.open_engine("as_is")
        with suppress(StorageError):  # down: the frame says it; an older schema: refused
            check_current_schema(engine)
        health = run(engine, app_state.settings, once=once, interval=interval, console=console)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    if health in ("down", "unknown"):  # --once: the frame says why; so does the exit code
        abort(f"the database could not be read (the dashboard says {health})")


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
