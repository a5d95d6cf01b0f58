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

import gc
import logging
import sys

import typer

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
    plan_cmd,
    repair_cmd,
    retire_cmd,
    rollback_cmd,
    serve_cmd,
    tx_cmd,
)
from unistatus.cli.context import (
    DATABASE_URL_OPTION,
    DEBUG_OPTION,
    begin,
    reader_left,
)
from unistatus.cli.errors_shown import ErrorsShownGroup, says_interrupted_while_starting
from unistatus.cli.help_changes import change_rich_help_when_rendered
from unistatus.cli.help_format import hide_flag_value_placeholders
from unistatus.interrupts import terminate_as_interrupt
from unistatus.redact import log_redacted

hide_flag_value_placeholders()
change_rich_help_when_rendered()


app = typer.Typer(
    cls=ErrorsShownGroup,
    name="unistatus",
    help=(
        "Migrate legacy payment statuses (cashouts, escrows, exchanges) to the unified "
        "16-status model with zero downtime.\n\n"
        "Typical order (docs/runbook.md): init -> mapping --validate -> phase advance "
        "(into 1: dual-write) -> check -> phase advance (into 2) -> backfill -> check -> "
        "repair -> phase advance (into 3: unified primary) -> check -> phase advance (into 4: "
        "unified only) -> archive export -> archive verify -> retire legacy-columns. Each "
        "`phase advance` passes only when the gates `phase status` shows pass, and switches "
        "the write mode itself; `phase rollback` and `rollback --emergency` go back.\n\n"
        "Global options go before the command. Exit codes: 0 ok, 1 a check ran and found a "
        "problem, 2 bad input, configuration or database, 3 stopped by --max-duration "
        "(resumable), 130 interrupted by Ctrl-C, SIGTERM or SIGHUP (the live views serve, monitor "
        "and dashboard, once running, stop with 0), 141 the reader of the output left (| head).\n\n"
        "Exit 2 is every refusal and error alike; given --json, a failed command also prints "
        'one object on stdout, {"error": "<the error\'s class>", "detail": "<the message>", '
        '"exit_code": 2}, and a script branches on "error": GateError (the migration\'s '
        "state refuses the step: a gate failing, systems in different phases, retire's "
        "preconditions; `phase status` exits 1 while a gate fails, 0 once all pass: wait on "
        "it), PhaseMovedError (--from-phase found another phase: nothing "
        "changed), StorageError (the database failed or cannot be reached), ConfigError "
        "(settings), InputError or one of its kinds (InvalidTransitionError, ...), "
        "EntityNotFoundError, ModeError, UsageError (the command line); "
        "docs/runbook.md lists them.\n\n"
        "Examples:\n\n"
        "  unistatus init\n"
        "  unistatus phase status\n"
        '  unistatus phase advance --reason "start dual-write (change #1234)"\n'
        "  unistatus --database-url postgresql://user@host/payments backfill --json\n"
        "  unistatus tx --help"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from unistatus.version import SCHEMA_REVISION, VERSION

        # The schema revision too: which release a database needs is then plain to see.
        typer.echo(f"unistatus {VERSION} (schema {SCHEMA_REVISION})")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    database_url: str = DATABASE_URL_OPTION,
    debug: bool = DEBUG_OPTION,
    _version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        expose_value=False,
        help="Print the version and exit.",
    ),
) -> None:
    begin(ctx, database_url, debug)


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
plan_cmd.register(app)
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
    run_program(app)


class _EndedBehindAnError(logging.Filter):
    """psycopg sends batched statements in a pipeline (``executemany``), and when the
    pipeline ends behind a statement the server refused it warns through its logger,
    "error ignored terminating <psycopg.Pipeline [INERROR] ...>: pipeline aborted",
    beside the error it raises. With no handler of the program's, Python printed that
    raw on stderr before the command's own line (a read-only database, a role without
    the privilege: a probe). The error itself is said by the command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error ignored terminating")


_ENDED_BEHIND_AN_ERROR = _EndedBehindAnError()


def run_program(program: typer.Typer) -> None:
    """Run a unistatus program (`unistatus`, scripts/load_test_dual_write.py).

    The command is the program: with no logging set up, warnings would reach stderr raw
    through Python's last-resort handler; send them through the redaction instead.

    SIGTERM (systemd, Kubernetes, `kill`) ends the command as Ctrl-C does, whichever
    command it is: the same cleanup, the same line, the same exit code (130; 0 for the
    live views), instead of Python's default end at once with nothing run or said.
    Before the command's own handling of an interruption is in place (Typer builds the
    command tree, the command line is parsed), an interruption is said as one while
    starting (:func:`unistatus.cli.errors_shown.says_interrupted_while_starting`). No
    KeyboardInterrupt leaves here: one that reaches :func:`unistatus.launch.main` came
    before, and is said there the same way.

    When it ends, so does the process: every object left is moved out of the cyclic
    collector's reach (``gc.freeze``) so that the interpreter's exit does not walk them
    all again (SQLAlchemy's, pydantic's and typer's: 0.15-0.25 s of every command on
    the 2-core test machine, importing what `check` imports and exiting: median 0.90 s
    before, 0.64 s frozen). The command has released what it holds by then (the engine
    is disposed, files closed; logs are flushed at exit as before).
    """
    with says_interrupted_while_starting(sys.argv[1:]):
        if not logging.getLogger().handlers:
            log_redacted()
        logging.getLogger("psycopg").addFilter(_ENDED_BEHIND_AN_ERROR)
        try:
            with terminate_as_interrupt():
                program()
        except BrokenPipeError:  # one not turned into an exit by then (click's own output)
            reader_left()
        finally:
            gc.freeze()
