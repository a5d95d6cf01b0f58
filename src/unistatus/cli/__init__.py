"""The `unistatus` command: a thin layer over the library API.

Each command group lives in its own module here and only maps options onto library
functions. Errors derived from :class:`unistatus.UnistatusError` become one line on
stderr and exit code 2 (``--debug`` shows the traceback).

Startup stays fast: the command modules import only typer, rich and the stdlib-only
parts of the package at module top, and import the library (SQLAlchemy, settings, the
adapter) inside the command bodies that use it - the documented exception to "imports at
module top", so ``unistatus --help`` loads none of it (tests/cli/test_startup.py).
"""

from __future__ import annotations

import logging
from typing import Any

import typer
from typer.core import TyperGroup

from unistatus.cli import (
    archive_cmd,
    backfill_cmd,
    capture_cmd,
    check_cmd,
    dashboard_cmd,
    demo_cmd,
    diagnose_cmd,
    export_cmd,
    init_cmd,
    loadtest_cmd,
    mapping_cmd,
    mode_cmd,
    monitor_cmd,
    phase_cmd,
    repair_cmd,
    retire_cmd,
    rollback_cmd,
    serve_cmd,
    tx_cmd,
)
from unistatus.cli.context import AppState, abort_from
from unistatus.redact import log_redacted


class _Group(TyperGroup):
    """Turns any error escaping a command into one line and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("click", "typer")):
                raise  # usage errors: click prints them with exit code 2 itself
            debug = isinstance(ctx.obj, AppState) and ctx.obj.debug
            abort_from(exc, debug=debug)


app = typer.Typer(
    cls=_Group,
    name="unistatus",
    help=(
        "Migrate legacy payment statuses (cashouts, escrows, exchanges) to the unified "
        "16-status model with zero downtime.\n\n"
        "Typical order: init -> mode set DUAL_WRITE_LEGACY_PRIMARY -> backfill -> check -> "
        "phase advance ... Global options go before the command: "
        "unistatus --database-url URL backfill --json"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    database_url: str = typer.Option(
        None,
        "--database-url",
        envvar="UNISTATUS_DATABASE_URL",
        help="SQLAlchemy URL (sqlite:///unistatus.db, postgresql://user@host/db). "
        "Default: sqlite:///unistatus.db in the working directory.",
        show_envvar=True,
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    ctx.obj = AppState(database_url=database_url, debug=debug)
    ctx.call_on_close(ctx.obj.close)


# The command groups, in the order `--help` lists them; each module's `register(app)` adds
# its commands. They import heavy modules inside their command bodies so `--help` stays fast.
init_cmd.register(app)
mapping_cmd.register(app)
mode_cmd.register(app)
tx_cmd.register(app)
demo_cmd.register(app)
backfill_cmd.register(app)
check_cmd.register(app)
repair_cmd.register(app)
phase_cmd.register(app)
rollback_cmd.register(app)
monitor_cmd.register(app)
serve_cmd.register(app)
export_cmd.register(app)
dashboard_cmd.register(app)
diagnose_cmd.register(app)
loadtest_cmd.register(app)
archive_cmd.register(app)
retire_cmd.register(app)
capture_cmd.register(app)


def main() -> None:
    # The command is the program: with no logging set up, warnings would reach stderr raw
    # through Python's last-resort handler; send them through the redaction instead.
    if not logging.getLogger().handlers:
        log_redacted()
    app()
