"""A retirement, its undo and `capture enable` behind a long transaction (PostgreSQL).

A DBA's review: `retire legacy-columns` behind one long reader (`begin; select count(*)
from cashouts;` left open) queued its ALTER TABLE for the full lock_timeout (5 s), over
and over for a minute: every writer of cashouts queued behind that ACCESS EXCLUSIVE
request, 5 s at a time, a dozen times; then it gave up telling the operator to run
`unistatus init`, naming no session. `capture enable` behind a writer idle in its
transaction failed with a bare lock timeout. Now each attempt first looks at who holds
the tables; behind a transaction open for a while it does not queue at all (writers go
on), and at its deadline it names the holder and the command to run again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_retire import freeze_and_archive, seed

from conftest import Database
from unistatus.db import schema
from unistatus.errors import StorageError
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
    runs: the durations of its writes."""
    engine = _plain_engine(db, "writer")
    with engine.connect() as conn:
        row = int(conn.execute(sa.text("SELECT min(id) FROM cashouts")).scalar_one())
    took: list[float] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            started = time.monotonic()
            with engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE cashouts SET user_id = user_id WHERE id = :id"), {"id": row}
                )
            took.append(time.monotonic() - started)
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
