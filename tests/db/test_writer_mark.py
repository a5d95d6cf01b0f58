"""The writer mark: unistatus's write transactions tell the capture triggers who they are."""

from __future__ import annotations

import sqlalchemy as sa

from conftest import Database
from unistatus.db.dialect import ops_for
from unistatus.db.tables_capture import writer_marks
from unistatus.db.writer_mark import current_mark, mark_row


def mark(db: Database, conn: sa.Connection) -> object:
    if db.backend == "postgres":
        return conn.execute(sa.select(current_mark())).scalar()
    return conn.execute(sa.select(writer_marks.c.writer)).scalars().all()


def test_a_write_transaction_is_marked_while_it_writes(db: Database) -> None:
    ops = ops_for(db.engine)
    with ops.write_transaction() as conn:
        assert mark(db, conn) in ("on", ["unistatus"])
    with db.engine.connect() as conn:  # nothing outlives the transaction
        assert mark(db, conn) in (None, "", [])


def test_the_mode_lock_marks_where_it_can(db: Database) -> None:
    ops = ops_for(db.engine)
    with ops.write_transaction(mode_locked=True) as conn:
        if db.backend == "postgres":
            assert mark(db, conn) in (None, "")  # no round trip of its own
            ops.mode_shared_lock(conn)
            assert mark(db, conn) == "on"
            mode = conn.execute(sa.select(sa.func.unistatus_locked_mode())).scalar()
            assert mode == "LEGACY_ONLY" and mark(db, conn) == mode
            ops.unmark_writer(conn)
            assert mark(db, conn) == ""
        else:
            assert mark(db, conn) == ["unistatus"]  # SQLite has no mode lock to mark


def test_sqlite_a_mark_left_committed_is_removed_by_the_next_write(sqlite_db: Database) -> None:
    with sqlite_db.engine.begin() as conn:
        conn.execute(mark_row())
    with ops_for(sqlite_db.engine).write_transaction():
        pass
    assert sqlite_db.count("unistatus_writer_marks") == 0
