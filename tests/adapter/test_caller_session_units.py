"""The caller's Session as a unit of work (a review of the fixes in
test_caller_session_edges.py found each of these):

- a Session without autoflush whose legacy row pointed at a new parent, not flushed
  yet: the legacy rows were flushed alone, the foreign key written NULL for good;
- a ``scoped_session``'s rows were not expired after the adapter wrote them (a plain
  Session's are): the application read the old status;
- a Session whose own flush had failed (its transaction dead) was counted a database
  failure, in the error rate the gates and alerts read; on a Connection it is a refusal;
- the adapter's own update (its fast path), a status the column cannot hold, a pool of
  one: the tables were looked up again on a second connection of the pool, and the
  refusal came out as a pool timeout, a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    scoped_session,
    sessionmaker,
)

from conftest import Database
from support.adapters import adapter_on
from support.legacy_columns import legacy_columns, narrow_payouts
from unistatus import DualWriteMode, WriteRefusedError
from unistatus.adapter.model import OperationEvent
from unistatus.db.control import set_mode
from unistatus.errors import CallerTransactionError

pytestmark = pytest.mark.postgres

MODE = DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY


class Base(DeclarativeBase):
    pass


class Owner(Base):
    __tablename__ = "probe_owner"
    id: Mapped[int] = mapped_column(primary_key=True)


class Cashout(Base):
    __tablename__ = "cashouts"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str]
    owner_ref: Mapped[int | None] = mapped_column(sa.ForeignKey("probe_owner.id"))
    owner: Mapped[Owner | None] = relationship()


class LedgerEntry(Base):
    __tablename__ = "probe_ledger"
    id: Mapped[int] = mapped_column(primary_key=True)
    transaction_id: Mapped[str] = mapped_column(nullable=False)


@pytest.fixture
def owners(pg: Database) -> Iterator[Database]:
    """cashouts.owner_ref referencing a table of the application's own."""
    set_mode(pg.engine, MODE, reason="test", actor="test", force=True)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE probe_owner (id SERIAL PRIMARY KEY)")
    try:
        with legacy_columns(pg, {"owner_ref": "INTEGER REFERENCES probe_owner(id)"}):
            yield pg
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS probe_owner CASCADE")


@pytest.fixture
def ledger(pg: Database) -> Iterator[Database]:
    """A ledger table of the application's own (a NOT NULL transaction id)."""
    set_mode(pg.engine, MODE, reason="test", actor="test", force=True)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE probe_ledger (id SERIAL PRIMARY KEY, transaction_id TEXT NOT NULL)"
        )
    try:
        yield pg
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE probe_ledger")


def test_a_legacy_row_pointing_at_a_pending_parent_keeps_its_foreign_key(
    owners: Database,
) -> None:
    pg = owners
    a = adapter_on(pg, pg.engine)
    try:
        first = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
        other = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
        no_autoflush = sessionmaker(pg.app_engine, autoflush=False)
        with no_autoflush() as s, s.begin():
            row = s.get(Cashout, first.legacy_entity_id)
            assert row is not None
            row.owner = Owner()  # a new parent, pending; the legacy row dirty
            done = a.update_status(other.entity_id, "PROCESSING", "r", "t", connection=s)
            assert done.overall_success, done.as_dict()
        ref = pg.scalar("SELECT owner_ref FROM cashouts WHERE id = :i", i=first.legacy_entity_id)
        assert ref is not None and ref == pg.scalar("SELECT max(id) FROM probe_owner")
    finally:
        a.close()


def test_a_scoped_sessions_rows_are_expired_as_a_sessions(owners: Database) -> None:
    pg = owners
    a = adapter_on(pg, pg.engine)
    try:
        seen = {}
        for kind in ("session", "scoped"):
            made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
            s: Any = (
                Session(pg.app_engine)
                if kind == "session"
                else scoped_session(sessionmaker(pg.app_engine))
            )
            row = s.get(Cashout, made.legacy_entity_id)
            assert row is not None and row.status == "PENDING"
            done = a.update_status(made.entity_id, "PROCESSING", "r", "t", connection=s)
            assert done.overall_success, done.as_dict()
            seen[kind] = s.get(Cashout, made.legacy_entity_id).status
            s.commit()
            s.close()
        assert seen == {"session": "EXECUTING", "scoped": "EXECUTING"}, seen
    finally:
        a.close()


def test_a_session_whose_own_flush_failed_is_a_refusal(ledger: Database) -> None:
    pg = ledger
    a = adapter_on(pg, pg.engine)
    try:
        made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
        events: list[OperationEvent] = []
        a.observers.append(events.append)
        for autoflush in (True, False):
            with sessionmaker(pg.app_engine, autoflush=autoflush)() as s:
                s.add(LedgerEntry())
                with pytest.raises(sa.exc.IntegrityError):
                    s.flush()  # the application's own failure: its transaction is dead
                with pytest.raises(CallerTransactionError):
                    a.update_status(made.entity_id, "PROCESSING", "r", "t", connection=s)
                s.rollback()
        assert [(e.success, e.refused) for e in events] == [(True, True), (True, True)], events
    finally:
        a.close()


def test_a_refused_status_on_the_adapters_own_update_with_a_pool_of_one(pg: Database) -> None:
    with narrow_payouts(pg, status="VARCHAR(20)") as settings:
        set_mode(pg.engine, MODE, reason="test", actor="test", force=True)
        engine = sa.create_engine(pg.url, pool_size=1, max_overflow=0, pool_timeout=1)
        try:
            a = adapter_on(pg, engine, settings=settings)
            assert a.fast is not None  # the fast path is the one under test
            made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
            assert made.overall_success, made.as_dict()
            with pytest.raises(WriteRefusedError, match="20 characters"):
                a.update_status(made.entity_id, "PENDING_ADDRESS_CONFIG", "r", "t")
            a.close()
        finally:
            engine.dispose()


def test_a_pending_object_the_legacy_rows_do_not_need_is_left_unflushed(
    owners: Database, ledger: Database
) -> None:
    """Without autoflush an application completes a ledger row from the adapter's
    result: flushing the whole Session for a pending legacy change failed on it (NOT
    NULL), where only the legacy rows and what they need are flushed (a second review)."""
    pg = owners
    a = adapter_on(pg, pg.engine)
    try:
        first = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
        other = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
        with sessionmaker(pg.app_engine, autoflush=False)() as s, s.begin():
            entry = LedgerEntry()  # its transaction_id comes from the adapter's result
            s.add(entry)
            row = s.get(Cashout, first.legacy_entity_id)
            assert row is not None
            row.owner = Owner()
            done = a.update_status(other.entity_id, "PROCESSING", "r", "t", connection=s)
            assert done.overall_success, done.as_dict()
            assert entry in s.new  # not flushed by the adapter
            entry.transaction_id = str(done.entity_id)
        assert pg.scalar("SELECT count(*) FROM probe_ledger") == 1
        ref = pg.scalar("SELECT owner_ref FROM cashouts WHERE id = :i", i=first.legacy_entity_id)
        assert ref is not None
    finally:
        a.close()
