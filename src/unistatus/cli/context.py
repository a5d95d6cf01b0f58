"""What every command shares: settings, the engine, JSON output, and abort().

SQLAlchemy and the settings (pydantic) load when a command first asks for them, not at
import: ``--help`` must not pay for them (see :mod:`unistatus.cli`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from unistatus.domain.inputs import check_reason
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ConfigError, InputError, UnistatusError
from unistatus.redact import redact

if TYPE_CHECKING:
    import sqlalchemy as sa

    from unistatus.config import Settings


def reader_left() -> NoReturn:
    """`unistatus ... | head`: the reader of the output left (a broken pipe). Nothing
    more to say: exit 141 (128 + SIGPIPE), as a shell reports any program its reader
    left; not 0 (the command did not say its verdict: a check cut short that found a
    problem would read as a good one), nor 1 (which says it found one). Both outputs
    go to /dev/null from here, so that what is still buffered is not written to the
    closed pipe as the process ends (Python then exits 120)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)
    raise SystemExit(EXIT_READER_LEFT)


class _Console(Console):
    """Rich's console, but a broken pipe is :func:`reader_left` (exit 141): Rich's own
    exit is 1, which the exit codes reserve for a check that found a problem."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        reader_left()


console: Console = _Console()
err_console: Console = _Console(stderr=True)

EXIT_OK = 0
EXIT_FAILED_CHECK = 1  # the command ran; what it checked is not fine
EXIT_ERROR = 2  # bad input, bad config, database unreachable
EXIT_INCOMPLETE = 3  # stopped by --max-duration before covering everything (resumable)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: 128 + SIGINT, as a shell reports Ctrl-C
EXIT_READER_LEFT = 141  # a broken pipe (`... | head`): 128 + SIGPIPE, as a shell reports it
# A database error for a privilege the role lacks (PostgreSQL's SQLSTATE), and where the
# privileges each command needs are listed.
INSUFFICIENT_PRIVILEGE = "42501"
PRIVILEGES_HINT = 'the role lacks a privilege this command needs: README.md, "Privileges"'

# How far a command needs its database checked before it starts:
# "installed": reachable, with unistatus's tables at this release's revision (almost
#              every command);
# "reachable": an existing database, tables or not (diagnose, archive verify);
# "creatable": reachable, and a missing SQLite file is created (init);
# "as_is": only that a SQLite file exists (live views that report the database's state
#          themselves; connecting to a missing file would create it, and only init may).
Need = Literal["installed", "reachable", "creatable", "as_is"]

DEFAULT_DATABASE_NOTE = (
    "the default: no --database-url, UNISTATUS_DATABASE_URL or config file names a database"
)


@dataclass
class AppState:
    database_url: str | None = None
    debug: bool = False
    command: str | None = None  # the top-level command: names the sessions
    _settings: Settings | None = field(default=None, repr=False)
    _engine: sa.Engine | None = field(default=None, repr=False)
    _installed: bool = field(default=False, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from unistatus.config import load_settings  # lazy: pydantic-settings

            self._settings = load_settings(database_url=self.database_url)
        return self._settings

    def close(self) -> None:
        """Release pooled connections when the command ends (PG holds them otherwise)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            _LOCKS_READ_ON.set(None)

    @property
    def engine(self) -> sa.Engine:
        """The database, reachable and with unistatus installed (else one line, exit 2,
        naming the database: not "no such table" from the first query)."""
        return self.open_engine("installed")

    def engine_seeing_every_row(self, what: str, need: Need = "installed") -> sa.Engine:
        """:attr:`engine` (or the database as ``need`` checks it), refused for ``what`` (a
        command whose answer counts rows) where row-level security hides rows from this
        role: its answer would be about the rows it sees only
        (:mod:`unistatus.db.row_security`)."""
        from unistatus.db.row_security import require_every_row  # lazy: SQLAlchemy

        engine = self.open_engine(need)
        require_every_row(engine, self.settings, what)
        return engine

    def open_engine(self, need: Need) -> sa.Engine:
        """The database, checked as far as the command needs (:data:`Need`).

        When no --database-url, UNISTATUS_DATABASE_URL or config file names a database,
        the default file is said on stderr whatever the need.
        """
        from unistatus.db import target  # lazy: SQLAlchemy

        if self._engine is None:
            from unistatus.db.engine import create_engine

            url = self.settings.database_url
            default = "database_url" not in self.settings.model_fields_set
            if need != "creatable" and target.missing_sqlite_file(url):
                unnamed = f" ({DEFAULT_DATABASE_NOTE})" if default else ""
                raise ConfigError(
                    f"no database at {target.describe(url)}{unnamed}: run `unistatus init` to "
                    "create it, or name your database with --database-url"
                )
            if default:
                err_console.print(
                    f"using {target.describe(url)} in {Path.cwd()} ({DEFAULT_DATABASE_NOTE})",
                    style="dim",
                    highlight=False,
                    soft_wrap=True,
                )
            engine = create_engine(url, schema=self.settings.schema, **self._connecting())
            if need != "as_is":
                target.check_reachable(engine)
            self._engine = engine
            # Before any statement that may wait for a lock: a lock timeout of any is
            # said naming the holder (cleared by close; never an unreachable engine).
            _LOCKS_READ_ON.set(engine)
        if need == "installed" and not self._installed:
            target.check_installed(self._engine)
            # Before the command acts: an older release's database (not yet upgraded by
            # `unistatus init`) would be misread, its mode and phase under older keys.
            target.check_current_schema(self._engine)
            self._installed = True
        return self._engine

    def engine_for(self, url: str) -> sa.Engine:
        """An engine for another database than the settings' (a restore's target),
        connecting as :attr:`engine` does: its sessions named for the command, bounded
        by the ``network`` settings. Not bound to the settings' schema (the database is
        not where unistatus's tables are), not checked, not kept: the caller disposes
        of it."""
        from unistatus.db.engine import create_engine  # lazy: SQLAlchemy

        return create_engine(url, **self._connecting())

    def _connecting(self) -> dict[str, Any]:
        """How every engine of the command connects (``create_engine``'s arguments)."""
        from unistatus.db.engine import session_name  # lazy: SQLAlchemy

        return {
            "application_name": session_name(self.command or "cli"),
            "prepared_statements": self.settings.prepared_statements,
            "network": self.settings.network,
            "lock_timeout_ms": self.settings.lock_timeout_ms,
            "pool_size": self.settings.pool_size,
            "max_overflow": self.settings.max_overflow,
        }


def begin(
    ctx: typer.Context, database_url: str | None, debug: bool, command: str | None = None
) -> AppState:
    """The program's state from its global options, released when the command ends;
    ``command`` names the sessions (default: the subcommand invoked)."""
    command = command or ctx.invoked_subcommand
    app_state = AppState(database_url=database_url, debug=debug, command=command)
    ctx.obj = app_state
    ctx.call_on_close(app_state.close)
    return app_state


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    if not isinstance(obj, AppState):
        obj = AppState()
        ctx.find_root().obj = obj
    return obj


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, Enum):
        return o.value
    if hasattr(o, "as_dict"):
        return o.as_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def print_json(data: Any) -> None:
    """Machine output: JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, default=_default, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


@contextmanager
def says_when_interrupted(
    what_next: str | Callable[[KeyboardInterrupt], str],
) -> Iterator[None]:
    """Ctrl-C (or SIGTERM: :func:`unistatus.interrupts.terminate_as_interrupt`) in the block:
    one line on stderr saying what is kept and how to go on (``what_next``, or what it
    makes of the interrupt raised), exit 130, instead of a silent end. Under ``--json``
    also one JSON object on stdout, ``{"interrupted": true, "detail": ..., "exit_code":
    130}`` (the shape of an error's), so that a script parsing stdout is not left with
    nothing."""
    try:
        yield
    except KeyboardInterrupt as stop:
        say_interrupted(what_next if isinstance(what_next, str) else what_next(stop))


# What a command interrupted before its work (or one with no more to say) leaves: each
# of its changes is one transaction, committed whole or rolled back.
INTERRUPTED_BEFORE_DONE = (
    "it stopped before it was done; a change it had not committed is rolled back: run it again"
)


def say_interrupted(said: str) -> NoReturn:
    """The end of an interrupted command (:func:`says_when_interrupted`): ``said`` on
    stderr (and stdout under ``--json``), exit 130."""
    tell_interrupted(said)
    raise typer.Exit(EXIT_INTERRUPTED) from None


def tell_interrupted(said: str) -> None:
    """What :func:`say_interrupted` says, without the exit (typer.Exit ends a command
    inside click only: the start-up's end is SystemExit)."""
    err_console.print(f"interrupted: {said}", style="yellow", highlight=False, soft_wrap=True)
    if _JSON_ASKED.get():
        with suppress(BrokenPipeError):
            print_json({"interrupted": True, "detail": said, "exit_code": EXIT_INTERRUPTED})


# What a rollback stopped by Ctrl-C leaves (rollback --emergency, phase rollback).
ROLLBACK_INTERRUPTED = (
    "the changes replayed so far are kept, the rest still pending; the switch of the mode "
    "and phase commits last, so they are as they were unless it had committed "
    "(`unistatus mode get` says): run it again to go on"
)


# Whether the command line being run asks for ``--json`` (:func:`note_json`, as the
# group or the one-command program parses it): an error is then also one JSON object
# on stdout. Typer's click is its own copy, whose current context is not public.
_JSON_ASKED: ContextVar[bool] = ContextVar("unistatus_json_asked", default=False)


def note_json(args: Sequence[str]) -> None:
    """Remember whether ``args`` (the whole command line a group or a command parses,
    before ``--``) ask for ``--json``."""
    given = list(args)
    if "--" in given:
        given = given[: given.index("--")]
    _JSON_ASKED.set("--json" in given)


# The command's engine, reachable (:meth:`AppState.open_engine`): a statement given up
# on a lock timeout is said naming who holds the lock (:func:`abort`).
_LOCKS_READ_ON: ContextVar[sa.Engine | None] = ContextVar("unistatus_locks_read_on", default=None)


def abort(
    message: str,
    code: int = EXIT_ERROR,
    *,
    error: str = "InputError",
    cause: BaseException | None = None,
) -> NoReturn:
    """The error as one line on stderr, and exit ``code``. Under ``--json`` also one JSON
    object on stdout, ``{"error": error, "detail": message, "exit_code": code}``:
    ``error`` names the error's class (the exception's, from :func:`abort_from`). A lock
    timeout (told by ``cause``'s SQLSTATE: the exception said) is said as one line naming
    the lock's holder (:func:`unistatus.db.lock_timeouts.with_holders`)."""
    message = _holders_named(message, cause)
    # The message is text, not Rich markup: "[auto_responses]" of a config error is kept;
    # nor the terminal's orders: a control character of a config key is shown escaped.
    shown = escape(_CONTROL.sub(lambda m: repr(m.group())[1:-1], message))
    err_console.print(f"[bold red]error:[/] {shown}", highlight=False, soft_wrap=True)
    say_error_as_json(message, code, error=error)
    raise typer.Exit(code)


# C0 (but a line break or a tab), DEL and C1: what a terminal takes for an order.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _holders_named(message: str, cause: BaseException | None) -> str:
    reading = _LOCKS_READ_ON.get()
    if reading is None:
        return message
    from unistatus.db.lock_timeouts import lock_timeout_of, with_holders  # lazy: SQLAlchemy

    timeout = lock_timeout_of(message, cause)
    return message if timeout is None else with_holders(message, timeout, reading)


def say_error_as_json(message: str, code: int, *, error: str) -> None:
    """Under ``--json``: the error as one JSON object on stdout (nothing otherwise)."""
    if _JSON_ASKED.get():
        said = {"error": error, "detail": message, "exit_code": code}
        with suppress(BrokenPipeError):
            sys.stdout.write(json.dumps(said) + "\n")
            sys.stdout.flush()


# The global options, written once: `unistatus`'s own, and a one-command program's
# (scripts/load_test_dual_write.py) among its options.
DATABASE_URL_OPTION: Any = typer.Option(
    None,
    "--database-url",
    envvar="UNISTATUS_DATABASE_URL",
    help="SQLAlchemy URL (sqlite:///unistatus.db, postgresql://user@host/db). "
    "Default: sqlite:///unistatus.db in the working directory.",
    show_envvar=True,
)
DEBUG_OPTION: Any = typer.Option(False, "--debug", help="Show tracebacks on errors.")

REASON_HELP = "Why (required, non-empty; recorded with --actor)."


def require_reason(reason: str | None, command: str, *, dry_run: bool = False) -> str:
    """The reason of a command that changes the mode, the phase or data, stripped.

    A missing or blank reason is refused (exit 2) before anything is read or written:
    every such change is recorded with who made it and why. ``dry_run``: the command
    has a --dry-run that needs none, and the message says so.
    """
    if reason is None or not reason.strip():
        alternative = ", or --dry-run to only look" if dry_run else ""
        abort(
            f"`unistatus {command}` changes the system: pass --reason TEXT "
            f"(why; recorded){alternative}"
        )
    try:
        return check_reason(reason)
    except InputError as exc:
        abort(f"`unistatus {command}`: --reason: {exc}")


def abort_from(exc: BaseException, *, debug: bool = False) -> NoReturn:
    """Turn any exception into one line and an exit code (2), or a traceback with --debug."""
    if isinstance(exc, BrokenPipeError):
        reader_left()
    if debug:
        sys.stderr.write(redact("".join(traceback.format_exception(exc))))
    error = type(exc).__name__
    if isinstance(exc, UnistatusError):
        abort(redact(str(exc)), error=error, cause=exc)
    import sqlalchemy as sa  # lazy: only an error that reached here needs it

    from unistatus.db.failures import read_only_refusal
    from unistatus.db.retry import is_read_only, sqlstate_of

    if isinstance(exc, sa.exc.SQLAlchemyError):
        # The name scripts branch on for the database (`unistatus --help`), not
        # SQLAlchemy's class (ProgrammingError, OperationalError, ...).
        error = "StorageError"
    if is_read_only(exc):
        abort(redact(read_only_refusal(exc)), error=error, cause=exc)
    if isinstance(exc, sa.exc.OperationalError):
        abort(
            redact(f"database error: {str(exc.orig).strip().splitlines()[0]}"),
            error=error,
            cause=exc,
        )
    if isinstance(exc, sa.exc.SQLAlchemyError):
        text = f"database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        if sqlstate_of(exc) == INSUFFICIENT_PRIVILEGE:
            text += f" ({PRIVILEGES_HINT})"
        abort(redact(text), error=error, cause=exc)
    hint = " (the traceback above)" if debug else " (re-run with --debug for details)"
    text = f"unexpected {exc.__class__.__name__}: {exc}{hint}"
    abort(redact(text), error=error, cause=exc)


SYSTEM_HELP = "One legacy system: cashout, escrow or exchange (default: every system)."
# ``--system`` of a command that acts on one system or on all: a list, so that one given
# twice is seen (and refused by :func:`parse_system`), not its last value taken.
SystemOption = Annotated[list[str] | None, typer.Option("--system", help=SYSTEM_HELP)]


def parse_system(value: str | Sequence[str] | None) -> LegacySystemType | None:
    """``--system cashout|escrow|exchange`` (any case; ``all`` or absent: None, every
    system). A bad value is an InputError (exit 2), and so is the option given more than
    once to a command that acts on one system (its last value alone was taken: an
    emergency rollback of one of the two systems named)."""
    if value is not None and not isinstance(value, str):
        if len(value) > 1:
            times = "twice" if len(value) == 2 else f"{len(value)} times"
            raise InputError(
                f"--system given {times} ({', '.join(value)}): this command acts on one "
                "system, or on every system without --system; run it once per system"
            )
        value = value[0] if value else None
    if value is None or value.strip().lower() == "all":
        return None
    return LegacySystemType.parse(value)


def parse_systems(values: Sequence[str] | None) -> list[LegacySystemType] | None:
    """A repeatable ``--system`` (each value as :func:`parse_system` reads it): the
    systems named, or None (every system) when none is or one of them is ``all``."""
    chosen = [parse_system(value) for value in values or []]
    if not chosen or None in chosen:
        return None
    return [system for system in chosen if system is not None]
