"""A lock timeout told by its SQLSTATE, whatever the server's language (lc_messages): the
message said with its holder (db/lock_timeouts.py; the commands behind a held table:
tests/cli/test_lock_wait_named.py)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine
from unistatus.db.lock_timeouts import LockTimeout, lock_timeout_of, rewritten, with_holders
from unistatus.domain.statuses import DualWriteMode
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
    assert lock_timeout_of(str(error), error) == LockTimeout(GERMAN)
    # Without the exception, only the words it is said with in English.
    assert lock_timeout_of(str(error)) is None
    english = "cannot read the phase: canceling statement due to lock timeout"
    assert lock_timeout_of(english) == LockTimeout("canceling statement due to lock timeout")
    assert lock_timeout_of("cannot read the phase: connection refused") is None


@pytest.mark.postgres
def test_the_message_names_the_holder_or_another_transaction(pg: Database) -> None:
    error = _said_so(GERMAN)
    said = with_holders(str(error), LockTimeout(GERMAN), pg.engine)
    assert said.startswith("cannot read the phase: gave up waiting (lock_timeout) for a lock"), said
    assert "another transaction (an advisory lock, or a row's" in said and "ZEILE" not in said
    dba = create_engine(pg.url, application_name="dba-session")
    try:
        with dba.connect() as held:
            held.exec_driver_sql("LOCK TABLE unistatus_control IN ACCESS EXCLUSIVE MODE")
            pid = int(held.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            said = with_holders(str(error), LockTimeout(GERMAN), pg.engine)
            held.rollback()
    finally:
        dba.dispose()
    assert f"held by pid {pid} (dba-session, idle in transaction" in said, said
    assert "\n" not in said, said


ENGLISH = "canceling statement due to lock timeout"
HELD = "pid 7 (psql, idle in transaction, transaction open 9 s, holding ...)"
TOLD = f"gave up waiting (lock_timeout) for a lock held by {HELD}"
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
    assert rewritten(message, ENGLISH, HELD) == said_so


@pytest.mark.postgres
def test_a_rows_lock_is_named_by_its_table_not_by_another_tables_holder(pg: Database) -> None:
    """A wait for a row (an UPDATE behind a transaction holding it) named whoever held
    some other table ACCESS EXCLUSIVE (found by review: a backfill's wait for its job's
    row named a session holding unistatus_alert_state). The server's CONTEXT names the
    row's table: that is said."""
    for there_and_back in (DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, DualWriteMode.LEGACY_ONLY):
        set_mode(pg.engine, there_and_back, reason="t")  # the control rows
    bounded = create_engine(pg.url, lock_timeout_ms=300)
    dba = create_engine(pg.url, application_name="dba-session")
    try:
        with dba.connect() as rows, dba.connect() as other:
            rows.exec_driver_sql("SELECT key FROM unistatus_control FOR UPDATE")
            other.exec_driver_sql("LOCK TABLE unistatus_alert_state IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(sa.exc.OperationalError) as caught, bounded.begin() as conn:
                conn.exec_driver_sql("UPDATE unistatus_control SET value = value")
            message = f"cannot switch: {caught.value.orig}"
            timeout = lock_timeout_of(message, caught.value)
            said = with_holders(message, timeout, pg.engine) if timeout else message
            rows.rollback()
            other.rollback()
    finally:
        dba.dispose()
        bounded.dispose()
    assert timeout is not None and timeout.row_of == "unistatus_control", timeout
    assert "a row of unistatus_control" in said and "alert_state" not in said, said


def test_a_lock_timeout_said_in_an_unknown_language_without_its_exception() -> None:
    """Told by the driver's class alone, the server's words after it (in a language not
    known) are cut with their line, not left after the holder (found by review)."""
    message = f"cannot read x: (psycopg.errors.LockNotAvailable) {GERMAN}\nZEILE 2: ..."
    timeout = lock_timeout_of(message)
    assert timeout is not None
    assert rewritten(message, timeout.said, HELD) == f"cannot read x: {TOLD}{TO_DO}"


@pytest.mark.postgres
def test_a_unique_keys_wait_is_named_by_the_table_not_its_index(pg: Database) -> None:
    """An insert of a key another transaction is inserting waits on the index's tuple:
    the server names the index ("while inserting index tuple ... in relation
    \\"..._pkey\\""); its table is said."""
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE keyed (id integer PRIMARY KEY)")
    bounded = create_engine(pg.url, lock_timeout_ms=200)
    try:
        with pg.engine.connect() as first:
            first.begin()
            first.exec_driver_sql("INSERT INTO keyed VALUES (1)")
            with pytest.raises(sa.exc.OperationalError) as caught, bounded.begin() as conn:
                conn.exec_driver_sql("INSERT INTO keyed VALUES (1)")
            first.rollback()
        message = f"cannot insert: {caught.value.orig}"
        timeout = lock_timeout_of(message, caught.value)
        said = with_holders(message, timeout, pg.engine) if timeout else message
    finally:
        bounded.dispose()
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE keyed")
    assert timeout is not None and timeout.row_of == "keyed_pkey", timeout
    assert "holding a row of keyed (see pg_locks)" in said, said
