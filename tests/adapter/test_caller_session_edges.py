"""The adapter in a real application's transaction, where the application's engine and
Session are its own (found by a probe of the library as services embed it):

- a pool of one connection, held by the caller: a value of a type the adapter cannot
  judge (``real``, ``inet``) was cast on a second connection of that pool, and a status
  the column could not hold made it reflect the tables on one: both waited out the
  pool's timeout, then a raw ``sqlalchemy.exc.TimeoutError`` left the adapter (or the
  refusal came out as a failure);
- a Session whose connection cannot be had (the database down), or whose own pending
  rows fail to flush, let SQLAlchemy's exception out, and no observer heard of it;
- a Session with ``autoflush=False`` holding an unflushed change to a legacy row's
  status: the adapter judged the change from the stored status, wrote both sides, and
  the caller's commit flushed its own status over the legacy side (inconsistent,
  silently);
- a ``scoped_session`` (Flask-SQLAlchemy's ``db.session``) was refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    scoped_session,
    sessionmaker,
)

from conftest import Database
from support.adapters import adapter_on, snapshot
from support.legacy_columns import legacy_columns, narrow_payouts
from unistatus import DualWriteMode, InputError, WriteRefusedError
from unistatus.adapter.model import OperationEvent
from unistatus.db.control import set_mode
from unistatus.errors import CallerTransactionError

pytestmark = pytest.mark.postgres

MODE = DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY


class Base(DeclarativeBase):
    pass


class Cashout(Base):
    """The application's model of its legacy table."""

    __tablename__ = "cashouts"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str]


class LedgerEntry(Base):
    """A table of the application's own, with a NOT NULL column."""

    __tablename__ = "probe_ledger"
    id: Mapped[int] = mapped_column(primary_key=True)
    transaction_id: Mapped[str] = mapped_column(nullable=False)


@pytest.fixture
def one_connection(pg: Database) -> Iterator[sa.Engine]:
    """The application's engine: a pool of one connection, given up on after 1 s."""
    set_mode(pg.engine, MODE, reason="test", actor="test", force=True)
    engine = sa.create_engine(pg.url, pool_size=1, max_overflow=0, pool_timeout=1)
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_value_the_database_judges_is_cast_on_the_callers_connection(
    pg: Database, one_connection: sa.Engine
) -> None:
    with legacy_columns(pg, {"fee": "REAL", "client_ip": "INET"}):
        a = adapter_on(pg, one_connection)
        with Session(one_connection) as s, s.begin():
            made = a.create_transaction(
                "WALLET_CASHOUT", 7, "1", "USD", legacy_values={"fee": 1.5}, connection=s
            )
            with pytest.raises(InputError, match="client_ip"):
                a.create_transaction(
                    "WALLET_CASHOUT",
                    7,
                    "1",
                    "USD",
                    legacy_values={"client_ip": "not-an-ip"},
                    connection=s,
                )
            assert s.execute(sa.text("SELECT 1")).scalar_one() == 1  # still usable
        assert made.overall_success, made.as_dict()
        # The adapter's own transaction: one connection of the pool, no second one.
        own = a.create_transaction(
            "WALLET_CASHOUT", 7, "1", "USD", legacy_values={"client_ip": "10.0.0.2"}
        )
        assert own.overall_success, own.as_dict()
        a.close()


def test_a_status_the_column_cannot_hold_is_refused_on_the_callers_connection(
    pg: Database,
) -> None:
    with narrow_payouts(pg, status="VARCHAR(20)") as settings:
        set_mode(pg.engine, MODE, reason="test", actor="test", force=True)
        engine = sa.create_engine(pg.url, pool_size=1, max_overflow=0, pool_timeout=1)
        try:
            a = adapter_on(pg, engine, settings=settings)
            made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
            assert made.overall_success, made.as_dict()
            with engine.connect() as conn, conn.begin():
                with pytest.raises(WriteRefusedError, match="20 characters"):
                    a.update_status(
                        made.entity_id, "PENDING_ADDRESS_CONFIG", "r", "t", connection=conn
                    )
                assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            a.close()
        finally:
            engine.dispose()


def test_a_session_whose_database_is_down_is_a_typed_failure_observed(
    pg: Database,
) -> None:
    set_mode(pg.engine, MODE, reason="test", actor="test", force=True)
    a = adapter_on(pg, pg.engine)
    made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    down = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    try:
        for call in (
            lambda s: a.update_status(made.entity_id, "PROCESSING", "r", "t", connection=s),
            lambda s: a.create_transaction("WALLET_CASHOUT", 7, "1", "USD", connection=s),
        ):
            with Session(down) as s, s.begin():
                with pytest.raises(CallerTransactionError) as failed:
                    call(s)
            assert failed.value.result is not None and not failed.value.result.overall_success
        with Session(down) as s, s.begin():
            with pytest.raises(CallerTransactionError):
                a.get_transaction_status(made.entity_id, connection=s)
    finally:
        down.dispose()
        a.close()
    writes = [e for e in events if e.operation in ("update_status", "create_transaction")]
    assert len(writes) == 2 and all(not e.success and not e.refused for e in writes), writes


def test_the_callers_own_rows_that_fail_to_flush_are_refused_not_a_failure(
    pg: Database,
) -> None:
    set_mode(pg.engine, MODE, reason="test", actor="test", force=True)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE probe_ledger (id SERIAL PRIMARY KEY, transaction_id TEXT NOT NULL)"
        )
    a = adapter_on(pg, pg.engine)
    try:
        made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
        events: list[OperationEvent] = []
        a.observers.append(events.append)
        before = snapshot(pg)
        with Session(pg.app_engine) as s, s.begin():
            s.add(LedgerEntry())  # its NOT NULL transaction_id left out
            with pytest.raises(CallerTransactionError, match="the caller's own") as refused:
                a.update_status(made.entity_id, "PROCESSING", "r", "t", connection=s)
            assert not isinstance(refused.value.__cause__, sa.exc.SQLAlchemyError)
            s.rollback()
        assert snapshot(pg) == before
        assert len(events) == 1 and events[0].refused, events
    finally:
        a.close()
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE probe_ledger")


def test_an_unflushed_status_change_is_flushed_before_the_adapter_judges(
    pg: Database,
) -> None:
    set_mode(pg.engine, MODE, reason="test", actor="test", force=True)
    a = adapter_on(pg, pg.engine)
    try:
        made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
        assert made.overall_success
        no_autoflush = sessionmaker(pg.app_engine, autoflush=False)
        with no_autoflush() as s, s.begin():
            row = s.get(Cashout, made.legacy_entity_id)
            assert row is not None and row.status == "PENDING"
            row.status = "EXECUTING"  # the application's own change, not flushed
            done = a.update_status(made.entity_id, "FAILED", "r", "t", connection=s)
            assert done.overall_success, done.as_dict()
        assert a.check_consistency(made.entity_id)["consistent"]
        history = pg.scalar(
            "SELECT string_agg(from_status || '>' || to_status, ',' ORDER BY id) "
            f"FROM {pg.table('unified_status_history')} WHERE transaction_id = :t",
            t=made.entity_id,
        )
        assert history.endswith("PROCESSING>FAILED"), history
    finally:
        a.close()


def test_a_scoped_session_is_its_current_session(pg: Database) -> None:
    set_mode(pg.engine, MODE, reason="test", actor="test", force=True)
    a = adapter_on(pg, pg.engine)
    registry = scoped_session(sessionmaker(pg.app_engine))
    try:
        made = a.create_transaction("WALLET_CASHOUT", 7, "1", "USD")
        done = a.update_status(made.entity_id, "PROCESSING", "r", "t", connection=registry)
        assert done.overall_success, done.as_dict()
        registry.commit()
        assert a.get_transaction_status(made.entity_id)[0] == "PROCESSING"
    finally:
        registry.remove()
        a.close()


def test_nothing_of_sqlalchemy_leaves(pg: Database, one_connection: sa.Engine) -> None:
    """The pool held by another: the adapter's own transaction cannot have a connection
    either; a failed result, not SQLAlchemy's TimeoutError."""
    with legacy_columns(pg, {"fee": "REAL"}):
        a = adapter_on(pg, one_connection)
        try:
            with one_connection.connect() as held:
                held.execute(sa.text("SELECT 1"))
                got = a.create_transaction(
                    "WALLET_CASHOUT", 7, "1", "USD", legacy_values={"fee": 2.5}
                )
            assert not got.overall_success and "TimeoutError" in str(got.error), got.as_dict()
        finally:
            a.close()
