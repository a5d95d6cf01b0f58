"""How a write in the caller's transaction ends: kept only if the caller's COMMIT is.

A savepoint the caller rolls back (Core or ORM ``begin_nested()``) undoes the writes
made inside it; a Session joined to an external transaction (SQLAlchemy's recipe) commits
nothing until the outer transaction does; a COMMIT the database refuses (a deferred
constraint of the caller's own) keeps nothing. In every such case the observers and the
statistics must count the write as rolled back, never as a success.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from conftest import Database
from support.adapters import adapter_in
from unistatus import DualWriteAdapter, DualWriteMode, OperationEvent, OperationStats
from unistatus.observe.stats import window

M = DualWriteMode

# The caller's own tables: a child whose reference is checked only at COMMIT.
APP = sa.MetaData()
PARENT = sa.Table("test_parent", APP, sa.Column("id", sa.Integer, primary_key=True))
CHILD = sa.Table(
    "test_child",
    APP,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "parent_id",
        sa.Integer,
        sa.ForeignKey("test_parent.id", deferrable=True, initially="DEFERRED"),
    ),
)


@pytest.fixture
def app_db(db: Database) -> Iterator[Database]:
    APP.create_all(db.engine)
    try:
        yield db
    finally:
        APP.drop_all(db.engine)


class Watched:
    """An adapter with its events and a statistics recorder of the test's own."""

    def __init__(self, db: Database, mode: DualWriteMode = M.DUAL_WRITE_LEGACY_PRIMARY) -> None:
        self.db = db
        self.adapter: DualWriteAdapter = adapter_in(db, mode, record_stats=False)
        created = self.adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert created.entity_id is not None
        self.entity_id: str = created.entity_id
        self.events: list[OperationEvent] = []
        self.adapter.observers.append(self.events.append)
        self.stats = OperationStats(db.engine, start=False).attach(self.adapter)

    def change(self, conn: Any, status: str = "PROCESSING") -> None:
        r = self.adapter.update_status(self.entity_id, status, "r", "svc", connection=conn)
        assert r.overall_success and r.changed, r.error

    def outcomes(self) -> list[tuple[bool, bool]]:
        """(success, rolled_back) of each status change, in order."""
        return [(e.success, e.rolled_back) for e in self.events if e.operation == "update_status"]

    def unified_status(self) -> str:
        with self.db.engine.connect() as conn:
            q = sa.text("SELECT status FROM unified_transactions WHERE id = :i")
            return str(conn.execute(q, {"i": self.entity_id}).scalar_one())

    def counted(self) -> tuple[int, int, int]:
        """(completed, errors, rolled back) as the statistics store them."""
        self.stats.flush()
        w = window(self.db.engine, 600)
        return w.count, w.errors, w.rolled_back


KEPT = (True, False)
UNDONE = (False, True)


# --- savepoints -----------------------------------------------------------------------------


def test_a_write_in_a_savepoint_rolled_back_is_counted_as_rolled_back(db: Database) -> None:
    w = Watched(db)
    with db.engine.begin() as conn:
        savepoint = conn.begin_nested()
        w.change(conn)
        savepoint.rollback()
    assert w.unified_status() == "PENDING"
    assert w.outcomes() == [UNDONE]
    assert w.counted() == (0, 0, 1)


def _nested_released_then_outer_rolled_back(w: Watched, conn: sa.Connection) -> None:
    outer = conn.begin_nested()
    inner = conn.begin_nested()
    w.change(conn)
    inner.commit()  # released into the outer savepoint, which is then rolled back
    outer.rollback()


def _write_before_a_savepoint_rolled_back(w: Watched, conn: sa.Connection) -> None:
    w.change(conn)  # kept: made before the savepoint
    savepoint = conn.begin_nested()
    w.change(conn, "AWAITING_RESPONSE")
    savepoint.rollback()


def _savepoint_released(w: Watched, conn: sa.Connection) -> None:
    with conn.begin_nested():
        w.change(conn)
    with conn.begin_nested() as other:
        other.rollback()  # a later savepoint, rolled back, undoes nothing of it


def _written_in_a_rolled_back_savepoint_then_again(w: Watched, conn: sa.Connection) -> None:
    savepoint = conn.begin_nested()
    w.change(conn)
    savepoint.rollback()
    w.change(conn)  # the same change again, outside: kept


def _outer_rolled_back_while_inner_open(w: Watched, conn: sa.Connection) -> None:
    outer = conn.begin_nested()
    w.change(conn)  # in the outer savepoint
    conn.begin_nested()  # an inner one, never ended by the caller
    w.change(conn, "AWAITING_RESPONSE")
    with warnings.catch_warnings():  # SQLAlchemy warns of the inner one left open
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        outer.rollback()  # ROLLBACK TO the outer savepoint undoes both


@pytest.mark.parametrize(
    ("scenario", "expected", "final"),
    [
        (_nested_released_then_outer_rolled_back, [UNDONE], "PENDING"),
        (_outer_rolled_back_while_inner_open, [UNDONE, UNDONE], "PENDING"),
        (_write_before_a_savepoint_rolled_back, [KEPT, UNDONE], "PROCESSING"),
        (_savepoint_released, [KEPT], "PROCESSING"),
        (_written_in_a_rolled_back_savepoint_then_again, [UNDONE, KEPT], "PROCESSING"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_nested_savepoints_decide_per_write(
    db: Database,
    scenario: Callable[[Watched, sa.Connection], None],
    expected: list[tuple[bool, bool]],
    final: str,
) -> None:
    w = Watched(db)
    with db.engine.begin() as conn:
        scenario(w, conn)
    assert w.unified_status() == final
    assert w.outcomes() == expected
    kept = expected.count(KEPT)
    assert w.counted() == (kept, 0, len(expected) - kept)


def test_an_orm_savepoint_rolled_back_is_counted_as_rolled_back(db: Database) -> None:
    w = Watched(db)
    with Session(db.engine) as session, session.begin():
        nested = session.begin_nested()
        w.change(session)
        nested.rollback()
    assert w.unified_status() == "PENDING"
    assert w.outcomes() == [UNDONE]
    assert w.counted() == (0, 0, 1)


@pytest.mark.parametrize("join_mode", ["conditional_savepoint", "create_savepoint"])
def test_a_session_joined_to_an_outer_transaction_rolled_back(db: Database, join_mode: Any) -> None:
    """SQLAlchemy's "join a session into an external transaction" recipe (as test
    suites use it): the Session's commit commits nothing; the outer rollback decides."""
    w = Watched(db)
    with db.engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode=join_mode)
        w.change(session)
        session.commit()
        session.close()
        assert w.outcomes() == []  # nothing has ended yet
        outer.rollback()
    assert w.unified_status() == "PENDING"
    assert w.outcomes() == [UNDONE]
    assert w.counted() == (0, 0, 1)


def test_a_session_joined_to_an_outer_transaction_committed(db: Database) -> None:
    w = Watched(db)
    with db.engine.connect() as conn:
        outer = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as session:
            w.change(session)
            session.commit()
        outer.commit()
    assert w.unified_status() == "PROCESSING"
    assert w.outcomes() == [KEPT]
    assert w.counted() == (1, 0, 0)


# --- the COMMIT itself -------------------------------------------------------------------


def test_a_commit_the_database_refuses_is_counted_as_rolled_back(app_db: Database) -> None:
    w = Watched(app_db)
    with pytest.raises(sa.exc.IntegrityError), app_db.engine.begin() as conn:
        w.change(conn)
        conn.execute(sa.insert(CHILD).values(id=1, parent_id=999))  # checked at COMMIT
    assert w.unified_status() == "PENDING" and app_db.count("test_child") == 0
    assert w.outcomes() == [UNDONE]
    error = w.events[-1].error or ""
    assert "COMMIT failed" in error, error
    assert w.counted() == (0, 0, 1)


def test_a_session_commit_the_database_refuses_is_counted_as_rolled_back(
    app_db: Database,
) -> None:
    w = Watched(app_db)
    with pytest.raises(sa.exc.IntegrityError), Session(app_db.engine) as session:
        w.change(session)
        session.execute(sa.insert(CHILD).values(id=1, parent_id=999))
        session.commit()
    assert w.unified_status() == "PENDING"
    assert w.outcomes() == [UNDONE]
    assert w.counted() == (0, 0, 1)


def test_a_commit_that_succeeds_on_a_connection_kept_open(app_db: Database) -> None:
    """The success is known once the connection goes on (its next transaction) or is
    closed, and counted once."""
    w = Watched(app_db)
    with app_db.engine.connect() as conn:
        conn.begin()
        w.change(conn)
        conn.execute(sa.insert(PARENT).values(id=1))
        conn.execute(sa.insert(CHILD).values(id=1, parent_id=1))
        conn.commit()
        conn.begin()
        w.change(conn, "AWAITING_RESPONSE")
        conn.commit()
    assert w.unified_status() == "AWAITING_RESPONSE"
    assert w.outcomes() == [KEPT, KEPT]
    assert w.counted() == (2, 0, 0)


def test_a_connection_lost_in_the_callers_transaction_undoes_its_writes(pg: Database) -> None:
    w = Watched(pg)
    with pg.engine.connect() as conn:
        conn.begin()
        w.change(conn)
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with pg.engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        with pytest.raises(sa.exc.OperationalError):
            conn.exec_driver_sql("SELECT 1")
        assert w.outcomes() == [UNDONE]
    assert w.unified_status() == "PENDING"
    assert "connection was lost" in (w.events[-1].error or "")
    assert w.counted() == (0, 0, 1)
