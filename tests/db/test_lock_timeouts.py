"""A lock timeout told by its SQLSTATE, whatever the server's language (lc_messages): the
message said with its holder (db/lock_timeouts.py; the commands behind a held table:
tests/cli/test_lock_wait_named.py)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus.db.engine import create_engine
from unistatus.db.lock_timeouts import rewritten, said_on_a_lock_timeout, with_holders
from unistatus.errors import StorageError

GERMAN = "FEHLER:  Abbruch des Befehls wegen Zeitüberschreitung einer Sperre"


def _said_so(words: str) -> StorageError:
    """A read's StorageError quoting the server's ``words`` (raised ``from None``, as
    the readers do), its lock timeout told only by the error it replaced."""
    orig = psycopg.errors.LockNotAvailable(f"{words}\nZEILE 2: FROM unistatus_control")
    try:
        try:
            raise sa.exc.OperationalError("SELECT", {}, orig)
        except sa.exc.OperationalError as exc:
            raise StorageError(f"cannot read the phase: {exc.orig}") from None
    except StorageError as said:
        return said


def test_a_lock_timeout_in_another_language_is_told_by_its_sqlstate() -> None:
    error = _said_so(GERMAN)
    assert said_on_a_lock_timeout(str(error), error) == GERMAN
    # Without the exception, only the words it is said with in English.
    assert said_on_a_lock_timeout(str(error)) is None
    english = "cannot read the phase: canceling statement due to lock timeout"
    assert said_on_a_lock_timeout(english) == "canceling statement due to lock timeout"
    assert said_on_a_lock_timeout("cannot read the phase: connection refused") is None


@pytest.mark.postgres
def test_the_message_names_the_holder_or_another_transaction(pg: Database) -> None:
    error = _said_so(GERMAN)
    said = with_holders(str(error), GERMAN, pg.engine, 300)
    assert said.startswith("cannot read the phase: gave up waiting 0.3 s (lock_timeout_ms)"), said
    assert "another transaction (a row's or an advisory lock" in said and "ZEILE" not in said
    dba = create_engine(pg.url, application_name="dba-session")
    try:
        with dba.connect() as held:
            held.exec_driver_sql("LOCK TABLE unistatus_control IN ACCESS EXCLUSIVE MODE")
            pid = int(held.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            said = with_holders(str(error), GERMAN, pg.engine, 300)
            held.rollback()
    finally:
        dba.dispose()
    assert f"held by pid {pid} (dba-session, idle in transaction" in said, said
    assert "\n" not in said, said


ENGLISH = "canceling statement due to lock timeout"
HELD = "pid 7 (psql, idle in transaction, transaction open 9 s, holding ...)"
TOLD = f"gave up waiting 5 s (lock_timeout_ms) for a lock held by {HELD}"
TO_DO = (
    ". End that transaction (its application's own, or pg_terminate_backend) or wait for "
    "it to end, then run it again"
)


@pytest.mark.parametrize(
    ("message", "said_so"),
    [
        # A read's: the server's lines, the statement quoted, all replaced.
        (
            f"cannot read the phase: {ENGLISH}\nLINE 2: FROM unistatus_control\n     ^",
            f"cannot read the phase: {TOLD}{TO_DO}",
        ),
        # What it says after them is kept (and its own "run it again" is not doubled).
        (
            f"the replay could not get its locks within 30 s ({ENGLISH}); nothing of the "
            "unfinished round was written: run it again",
            f"the replay could not get its locks within 30 s ({TOLD}); nothing of the "
            "unfinished round was written: run it again",
        ),
        # storage_errors': its own words, then the driver's class and the server's.
        (
            "cannot read x: a lock was not granted within lock_timeout (another session "
            f"holds it): (psycopg.errors.LockNotAvailable) {ENGLISH}\nLINE 2: ...",
            f"cannot read x: {TOLD}{TO_DO}",
        ),
        (ENGLISH, f"G{TOLD[1:]}{TO_DO}"),
    ],
)
def test_the_rewritten_message_keeps_what_failed_and_what_was_kept(
    message: str, said_so: str
) -> None:
    assert rewritten(message, ENGLISH, HELD, 5_000) == said_so
