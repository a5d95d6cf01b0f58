"""A retirement, its undo and `capture enable` behind a long transaction (PostgreSQL).

A DBA's review: `retire legacy-columns` behind one long reader (`begin; select count(*)
from cashouts;` left open) queued its ALTER TABLE for the full lock_timeout (5 s), over
and over for a minute: every writer of cashouts queued behind that ACCESS EXCLUSIVE
request, 5 s at a time, a dozen times; then it gave up telling the operator to run
`unistatus init`, naming no session. `capture enable` behind a writer idle in its
transaction failed with a bare lock timeout. Now each attempt first looks at who holds
the tables; behind a transaction open for a while it does not queue at all (writers go
on), and at its deadline it names the holder and the command to run again. A retirement's
wait for the mode lock inside an attempt is part of that one deadline, and an `init`
waiting meanwhile names the retirement for what it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_retire import freeze_and_archive, seed

from conftest import Database
from support.blocking import write_waited
from unistatus.db import schema
from unistatus.db.ddl_wait import Changes, table_holders
from unistatus.db.dialect import ops_for
from unistatus.db.migration_lock import migration_lock_key
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ModeLockBusyError, StorageError, TableLockBusyError
from unistatus.migration import capture
from unistatus.migration.retire import (
    legacy_columns_dropped,
    retire_legacy_columns,
    undo_cleanup,
)

# A writer of cashouts beside a command that waits for a long transaction: each of its
# updates is held back at most one short attempt of the command (and the machine's
# load), never a whole lock_timeout (5 s) as before.
LONGEST_WRITE_SECONDS = 1.5
# How long the commands go on trying here (the mode_lock_wait_seconds setting).
DEADLINE_SECONDS = 3.0
HOLDER_APP = "nightly-report"
# What a command may take beyond its deadline: the gates before its first attempt and the
# machine's load (a fresh wait of the mode lock inside an attempt took a whole deadline).
LATE_SECONDS = 1.5
# The holder's transaction is this old when the command starts, as the DBA's was: past
# the age (2 s) behind which a command no longer queues. (A younger one is queued
# behind once, for at most ddl_lock_timeout_ms, 500 ms, on top of the command's own
# hold on the writers: test_ddl_wait.py.)
HELD_FOR_SECONDS = 2.2


def _plain_engine(db: Database, application_name: str) -> sa.Engine:
    """An application's own engine: no unistatus session settings, its own name."""
    url = sa.make_url(db.url)
    return sa.create_engine(url, connect_args={"application_name": application_name})


@contextmanager
def _holding(db: Database, sql: str) -> Iterator[int]:
    """A session of another application holding cashouts in an open transaction (after
    ``sql``: a read, a write); its pid."""
    engine = _plain_engine(db, HOLDER_APP)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
            yield int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
            conn.rollback()
    finally:
        engine.dispose()


@contextmanager
def _a_writer(db: Database) -> Iterator[list[float]]:
    """A writer updating one cashout in a loop (its own transactions) while the block
    runs: how long each of its writes waited in the server (support.blocking)."""
    engine = _plain_engine(db, "writer")
    with engine.connect() as conn:
        row = int(conn.execute(sa.text("SELECT min(id) FROM cashouts")).scalar_one())
    took: list[float] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            with engine.begin() as conn:
                update = "UPDATE cashouts SET user_id = user_id WHERE id = :id"
                took.append(write_waited(conn, update, {"id": row}))
            time.sleep(0.02)

    worker = threading.Thread(target=write, daemon=True)
    worker.start()
    try:
        yield took
    finally:
        stop.set()
        worker.join(30)
        engine.dispose()


@pytest.fixture
def hurried(pg: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """``pg`` whose commands give up after DEADLINE_SECONDS."""
    # The deadline of the migration's attempts before it followed the setting.
    monkeypatch.setattr(schema, "LOCK_DEADLINE_SECONDS", DEADLINE_SECONDS)
    settings = pg.settings.model_copy(update={"mode_lock_wait_seconds": DEADLINE_SECONDS})
    return Database(pg.backend, pg.url, pg.engine, settings)


def _assert_named(message: str, pid: int, command: str) -> None:
    assert f"pid {pid} ({HOLDER_APP}" in message, message
    assert f"`{command}`" in message, message
    assert "`unistatus init`" not in message or command == "unistatus init", message
    assert "nothing changed" in message, message


@pytest.mark.postgres
def test_retire_behind_a_long_reader_lets_writers_through_and_names_it(
    hurried: Database, tmp_path: Path
) -> None:
    db = hurried
    seed(db)
    freeze_and_archive(db, tmp_path)
    try:
        with _holding(db, "SELECT count(*) FROM cashouts") as pid, _a_writer(db) as took:
            time.sleep(HELD_FOR_SECONDS)
            with pytest.raises(StorageError) as refused:
                retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")
        _assert_named(str(refused.value), pid, "unistatus retire legacy-columns")
        assert "AccessShareLock on cashouts" in str(refused.value), str(refused.value)
        assert not legacy_columns_dropped(db.engine, db.settings)
        assert len(took) > 10 and max(took) < LONGEST_WRITE_SECONDS, sorted(took)[-5:]
        # Once the reader is gone it goes through.
        assert retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")["dropped"]
    finally:
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_an_undo_behind_a_long_reader_names_it_and_its_own_command(
    hurried: Database, tmp_path: Path
) -> None:
    db = hurried
    seed(db)
    freeze_and_archive(db, tmp_path)
    retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")
    try:
        with _holding(db, "SELECT count(*) FROM cashouts") as pid, _a_writer(db) as took:
            time.sleep(HELD_FOR_SECONDS)
            with pytest.raises(StorageError) as refused:
                undo_cleanup(db.engine, db.settings, actor="t", reason="t")
        _assert_named(str(refused.value), pid, "unistatus retire legacy-columns --undo")
        assert legacy_columns_dropped(db.engine, db.settings)
        assert len(took) > 10 and max(took) < LONGEST_WRITE_SECONDS, sorted(took)[-5:]
    finally:
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_capture_enable_behind_a_writer_idle_in_its_transaction_names_it(
    hurried: Database,
) -> None:
    db = hurried
    seed(db)
    try:
        idle = "UPDATE cashouts SET user_id = user_id WHERE id = (SELECT max(id) FROM cashouts)"
        with _holding(db, idle) as pid, _a_writer(db) as took:
            time.sleep(HELD_FOR_SECONDS)
            with pytest.raises(StorageError) as refused:
                capture.enable(db.engine, db.settings, actor="t", reason="t")
        message = str(refused.value)
        _assert_named(message, pid, "unistatus capture enable")
        assert "idle in transaction" in message and "RowExclusiveLock on cashouts" in message
        with db.engine.connect() as conn:
            assert not [t for t in capture.installed(conn)[0] if t.table == "cashouts"]
        assert len(took) > 10 and max(took) < LONGEST_WRITE_SECONDS, sorted(took)[-5:]
    finally:
        capture.disable(db.engine, db.settings, actor="t", reason="t")


@contextmanager
def _a_write_under_way(db: Database) -> Iterator[int]:
    """A transaction of unistatus's holding the mode lock of escrows shared, as a write
    through it does until it commits (a caller's transaction left open, issue 12), and
    no legacy table; its pid."""
    with db.engine.connect() as writer:
        writer.begin()
        ops_for(db.engine).mode_shared_lock(writer, LegacySystemType.ESCROW)
        yield int(writer.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        writer.rollback()


def _in_a_thread(run: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """``run`` started in a thread; what it returned or raised, once it has."""
    outcome: list[object] = []

    def go() -> None:
        try:
            outcome.append(run())
        except BaseException as exc:  # reported by the test
            outcome.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    return worker, outcome


@pytest.mark.postgres
@pytest.mark.parametrize("undo", [False, True], ids=["retire", "undo"])
def test_a_retirement_behind_a_long_reader_then_the_mode_lock_ends_at_its_deadline(
    hurried: Database, tmp_path: Path, undo: bool
) -> None:
    """Its attempts wait aside for a long reader of cashouts; the reader ends and the next
    attempt meets a write under way holding the mode lock. The attempt's wait for
    the mode lock is what is left of the one deadline: before, it was a fresh
    ``mode_lock_wait_seconds``, and the command ended about a deadline late."""
    db = hurried
    seed(db)
    freeze_and_archive(db, tmp_path)
    if undo:
        retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")
    run = undo_cleanup if undo else retire_legacy_columns
    try:
        with _a_write_under_way(db) as writer:
            with _holding(db, "SELECT count(*) FROM cashouts"):
                time.sleep(HELD_FOR_SECONDS)
                started = time.monotonic()
                worker, outcome = _in_a_thread(
                    lambda: run(db.engine, db.settings, actor="t", reason="t")
                )
                time.sleep(DEADLINE_SECONDS * 2 / 3)  # waiting aside for the reader now
                assert not outcome, outcome
            worker.join(30)
            took = time.monotonic() - started
        assert outcome and isinstance(outcome[0], (ModeLockBusyError, TableLockBusyError))
        assert f"pid {writer} (" in str(outcome[0]), outcome[0]
        assert took < DEADLINE_SECONDS + LATE_SECONDS, f"{took:.1f} s: {outcome[0]}"
        assert legacy_columns_dropped(db.engine, db.settings) is undo
    finally:
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_an_init_behind_a_retirement_names_it_a_retirement(
    hurried: Database, tmp_path: Path
) -> None:
    """A retirement waiting (in its attempt) for the mode lock holds the migration lock: an
    `init` run meanwhile gives up naming it for what it is, not "another `init`"."""
    db = hurried
    seed(db)
    freeze_and_archive(db, tmp_path)
    try:
        with _a_write_under_way(db):
            worker, _ = _in_a_thread(
                lambda: retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")
            )
            with db.engine.connect() as look:
                lock = Changes(advisory=[(migration_lock_key(look), "the migration lock")])
                until = time.monotonic() + 30
                while not table_holders(look, lock) and time.monotonic() < until:
                    look.rollback()
                    time.sleep(0.05)
                assert table_holders(look, lock), "the retirement never took the migration lock"
            with pytest.raises(TableLockBusyError) as refused:
                schema.upgrade(db.engine, db.settings, deadline_seconds=1.0)
        worker.join(30)
        message = str(refused.value)
        assert "a retirement (`unistatus retire legacy-columns`)" in message, message
        assert "another migration (`init`)" not in message, message
    finally:
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_a_retirement_behind_another_migration_names_it(hurried: Database, tmp_path: Path) -> None:
    """Another migration holds the migration lock (an `init`; here an older release's,
    which takes that lock alone): a retirement gives up at its deadline naming it, as an
    `init` does, nothing changed."""
    db = hurried
    seed(db)
    freeze_and_archive(db, tmp_path)
    try:
        with db.engine.connect() as other:
            key = migration_lock_key(other)
            other.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
            pid = int(other.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            started = time.monotonic()
            with pytest.raises(TableLockBusyError) as refused:
                retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")
            took = time.monotonic() - started
            other.rollback()
        message = str(refused.value)
        assert f"pid {pid} (" in message and "holding another migration (`init`)" in message
        assert took < DEADLINE_SECONDS + LATE_SECONDS, f"{took:.1f} s: {message}"
        assert not legacy_columns_dropped(db.engine, db.settings)
    finally:
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_a_retirement_behind_a_lock_on_its_control_table_names_it(
    hurried: Database, tmp_path: Path
) -> None:
    """A retirement's gates read unistatus's control table before its attempts: behind a
    session holding that table ACCESS EXCLUSIVE (another migration's DDL, a LOCK TABLE)
    they failed with the engine's bare lock timeout ("canceling statement due to lock
    timeout"), naming no one, and on an engine with none (a library caller's own, as
    here) waited for ever. Now the command gives up as its attempts do, at its deadline:
    the holder named, and the command to run again, nothing changed."""
    db = hurried
    seed(db)
    freeze_and_archive(db, tmp_path)
    try:
        with _holding(db, "LOCK TABLE unistatus_control IN ACCESS EXCLUSIVE MODE") as pid:
            started = time.monotonic()
            worker, outcome = _in_a_thread(
                lambda: retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")
            )
            worker.join(DEADLINE_SECONDS + LATE_SECONDS + 5)
            took = time.monotonic() - started
            assert not worker.is_alive(), f"still waiting after {took:.0f} s"
        (refused,) = outcome
        assert isinstance(refused, TableLockBusyError), repr(refused)
        _assert_named(str(refused), pid, "unistatus retire legacy-columns")
        assert "AccessExclusiveLock on unistatus_control" in str(refused), str(refused)
        assert not legacy_columns_dropped(db.engine, db.settings)
    finally:
        worker.join(30)
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_a_lock_wait_in_the_retirements_archive_check_waits_as_the_others(
    hurried: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive's re-verification (one of the gates) said a lock timeout as
    "cannot read the database: ... lock timeout", its cause dropped: the gates gave up at
    once, naming no one, instead of reading again until the deadline."""
    from unistatus.migration import retire  # noqa: PLC0415

    db = hurried
    seed(db)
    freeze_and_archive(db, tmp_path)
    # The gates' other reads (before the archive's) past: the lock meets the archive's.
    monkeypatch.setattr(retire, "blockers", lambda conn, settings: [])
    try:
        with _holding(db, "LOCK TABLE escrows IN ACCESS EXCLUSIVE MODE") as pid:
            worker, outcome = _in_a_thread(
                lambda: retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")
            )
            worker.join(DEADLINE_SECONDS + LATE_SECONDS + 5)
            assert not worker.is_alive()
        (refused,) = outcome
        assert isinstance(refused, TableLockBusyError), repr(refused)
        _assert_named(str(refused), pid, "unistatus retire legacy-columns")
        assert "AccessExclusiveLock on escrows" in str(refused), str(refused)
    finally:
        worker.join(30)
        undo_cleanup(db.engine, db.settings)
