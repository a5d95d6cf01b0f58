"""`unistatus serve`: the HTTP service (health, metrics, status, API, dashboard)."""

from __future__ import annotations

from contextlib import suppress
from enum import StrEnum
from typing import Annotated

import typer

from unistatus.cli.context import abort, err_console, state
from unistatus.cli.verify_options import (
    DEFAULT_VERIFY_BUSY_WAIT,
    DEFAULT_VERIFY_ROWS,
    DEFAULT_VERIFY_SECONDS,
    VerifyBusyWait,
    VerifyRows,
    VerifySeconds,
)


class LogLevel(StrEnum):
    """uvicorn's log levels (uvicorn.config.LOG_LEVELS; not imported for --help's sake)."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


def serve(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. Keep the loopback default and put a TLS proxy in front.",
    ),
    port: int = typer.Option(5000, "--port", min=1, max=65535, help="Port to listen on."),
    monitor_interval: float = typer.Option(
        30.0,
        "--monitor-interval",
        min=0.0,
        max=86_400.0,
        help="Evaluate alerts every S seconds in the background (0: off), each evaluation "
        "verifying the rows changed since the last one first (as `monitor` does).",
    ),
    verify_rows: VerifyRows = DEFAULT_VERIFY_ROWS,
    verify_seconds: VerifySeconds = DEFAULT_VERIFY_SECONDS,
    verify_busy_wait: VerifyBusyWait = DEFAULT_VERIFY_BUSY_WAIT,
    request_timeout: float = typer.Option(
        30.0,
        "--request-timeout",
        min=0.0,
        max=3600.0,
        help="Seconds a client has to send a whole request (head and body) once connected "
        "or answered; then 408 and the connection is closed (0: no limit). An answer is "
        "never cut short.",
    ),
    max_connections: int = typer.Option(
        1000,
        "--max-connections",
        min=1,
        max=1_000_000,
        help="Connections open at once; a new one beyond is closed as it comes. Keep it "
        "under the process's open-file limit (ulimit -n).",
    ),
    log_level: Annotated[
        LogLevel,
        typer.Option("--log-level", case_sensitive=False, help="uvicorn's log level."),
    ] = LogLevel.info,
) -> None:
    """Serve /health, /metrics, /api/v1/... and the dashboard at / (Ctrl-C stops).

    Exit 2 when the address cannot be listened on (a port in use, say).

    Examples:

      unistatus serve
      unistatus serve --port 8080 --monitor-interval 0
      unistatus serve --verify-rows 50000 --verify-seconds 1
      UNISTATUS_ADMIN_TOKEN=... unistatus serve --host 0.0.0.0   (behind a TLS proxy)
    """
    import uvicorn

    from unistatus.api.listener import listen
    from unistatus.api.service import create_app

    sock = listen(host, port)  # a busy port: one line, exit 2, before anything started
    app_state = state(ctx)
    # as_is: a service started while its database is down reports it on /health and
    # recovers with it, rather than not starting; a database that answers without the
    # installation (none yet, or in a schema the settings miss) is refused, exit 2
    engine = app_state.open_engine("as_is")
    from unistatus.db.target import check_current_schema, check_installed
    from unistatus.errors import StorageError

    with suppress(StorageError):
        check_installed(engine)
        check_current_schema(engine)  # an older release's, not yet upgraded: refused
    app = create_app(
        app_state.settings,
        engine,
        monitor_interval=monitor_interval or None,
        verify_rows=verify_rows,
        verify_seconds=verify_seconds,
        verify_busy_wait=verify_busy_wait,
    )
    from unistatus.api.access import enabled

    if not enabled(app_state.settings, "writer"):
        err_console.print(
            "transaction writes disabled: set UNISTATUS_WRITER_TOKEN to enable them",
            highlight=False,
        )
    if not enabled(app_state.settings, "admin"):
        err_console.print(
            "control endpoints disabled: set UNISTATUS_ADMIN_TOKEN to enable them", highlight=False
        )
    if host not in ("127.0.0.1", "::1", "localhost"):
        err_console.print(
            f"listening on {host}: bearer tokens cross the network in clear unless a "
            "TLS-terminating proxy sits in front (docs/runbook.md, 'Access')",
            highlight=False,
        )
    from unistatus.api.slow_clients import bounded_protocol

    protocol = bounded_protocol(request_timeout, max_connections)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level.value, http=protocol)
    server = uvicorn.Server(config)
    err_console.print(f"serving on http://{host}:{port} (Ctrl-C stops)", highlight=False)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down cleanly; that is success
        pass
    except SystemExit as exc:  # uvicorn's "startup failed" (its code 3); it logged why
        if exc.code not in (0, None):
            abort("the service did not start (the log above says why)")
        raise
    finally:
        sock.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
