"""A command run as a process and interrupted while one of its statements is in flight.

:func:`slow_inserts` makes a table's inserts past a count sleep in the server (once),
:func:`in_statement` tells when a command's session is inside that sleep: a signal
sent then lands while psycopg waits for the result of a statement it has sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import unistatus

SRC = str(Path(unistatus.__file__).parents[1])


def start(
    url: str, *args: str, env_extra: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """``python -m unistatus --database-url URL ARGS...`` as a process of its own
    (``env_extra``: settings of its environment beside the test's)."""
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "unistatus", "--database-url", url, *args],
        text=True,
        env=env,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen},
    )


# Run in the child: SIGINT raised in the process right after psycopg has sent the
# ``nth`` statement containing ``text``, before it reads the result: where an operator's
# Ctrl-C lands now and then under load (psycopg then leaves the connection mid-command).
_INTERRUPT_AFTER_SEND = """
import runpy, signal, sys
from psycopg._cursor_base import BaseCursor
text, nth = sys.argv.pop(1), int(sys.argv.pop(1))
seen = 0
def interrupting(send):
    def sending(self, *args, **kwargs):
        global seen
        send(self, *args, **kwargs)
        query = args[-1] if args[-1:] and hasattr(args[-1], "query") else args[0]
        if text.encode() in bytes(query.query):
            seen += 1
            if seen == nth:
                signal.raise_signal(signal.SIGINT)
    return sending
BaseCursor._execute_send = interrupting(BaseCursor._execute_send)
BaseCursor._send_query_prepared = interrupting(BaseCursor._send_query_prepared)
runpy.run_module("unistatus", run_name="__main__", alter_sys=True)
"""


def start_interrupted_after_send(
    url: str, text: str, nth: int, *args: str
) -> subprocess.Popen[str]:
    """:func:`start`, the process sending itself SIGINT as soon as psycopg has sent the
    ``nth`` statement containing ``text`` (before its result is read)."""
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-c", _INTERRUPT_AFTER_SEND, text, str(nth)]
        + ["--database-url", url, *args],
        text=True,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.02)


@contextmanager
def slow_inserts(engine: sa.Engine, table: str, after: int, seconds: int = 20) -> Iterator[None]:
    """The first insert into ``table`` once it holds ``after`` rows sleeps ``seconds``
    in the server (one insert only: the run goes on at its pace after). Dropped after."""
    ddl = [
        "CREATE SEQUENCE t_slow_once",
        "CREATE FUNCTION t_slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF (SELECT count(*) FROM {table}) >= {after} AND nextval('t_slow_once') = 1 "
        f"THEN PERFORM pg_sleep({seconds}); END IF; RETURN NEW; END $$",
        f"CREATE TRIGGER t_slow_insert BEFORE INSERT ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION t_slow_insert()",
    ]
    with engine.begin() as conn:
        for statement in ddl:
            conn.exec_driver_sql(statement)
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS t_slow_insert ON {table}")
            conn.exec_driver_sql("DROP FUNCTION IF EXISTS t_slow_insert()")
            conn.exec_driver_sql("DROP SEQUENCE IF EXISTS t_slow_once")


def in_statement(engine: sa.Engine, command: str) -> Callable[[], bool]:
    """Whether a session of ``unistatus <command>`` is inside a pg_sleep now."""

    def sleeping() -> bool:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                        "AND state = 'active' AND wait_event = 'PgSleep'"
                    ),
                    {"name": f"unistatus/{command}"},
                ).scalar_one()
            )

    return sleeping


def the_interruption_line(proc: subprocess.Popen[str], out: str, err: str) -> str:
    """The command ``proc`` ended as an interruption: exit 130 and one line saying so
    on stderr; that line."""
    assert proc.returncode == 130, (proc.returncode, out, err)
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, err
    return lines[0]
