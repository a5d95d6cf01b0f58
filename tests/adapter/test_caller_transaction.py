"""The adapter inside the caller's transaction (``connection=``, issue 12 section 1).

The status change and the application's own rows (a ledger of the test's own) commit
together or not at all; the adapter never commits or rolls back; the observers hear of a
write once the caller's transaction has ended; a mode switch waits for the caller.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from conftest import IN_EVERY_LAYOUT, PG_IN_EVERY_LAYOUT, Database
from support.adapters import TABLES as ALL_TABLES
from support.adapters import adapter_in, snapshot
from unistatus import (
    CallerTransactionError,
    DualWriteAdapter,
    DualWriteMode,
    InputError,
    InvalidTransitionError,
    OperationEvent,
    OperationStats,
    UnifiedTransactionStatus,
    WriteRefusedError,
)
from unistatus.db.control import set_mode
from unistatus.db.mode_reads import read_mode
from unistatus.observe.stats import window

M = DualWriteMode
ALL_MODES = list(DualWriteMode)


class Base(DeclarativeBase):
    pass


class Ledger(Base):
    """The application's own table: one row per money movement."""

    __tablename__ = "test_ledger"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    entity_id: Mapped[str] = mapped_column(sa.String(64))
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(18, 2))


LEDGER = Ledger.__table__
TABLES = [
    "cashouts",
    "unified_transactions",
    "unified_status_history",
    "unistatus_pending_legacy",
    "unistatus_repair_queue",
    "test_ledger",
]


@contextmanager
def application_tables(db: Database, base: Any = Base) -> Iterator[Database]:
    """The application's tables (``base``'s, those not there already) for the block,
    dropped after: the PostgreSQL database is shared by the whole run."""
    there = set(sa.inspect(db.app_engine).get_table_names())
    made = [t for t in base.metadata.sorted_tables if t.name not in there]
    base.metadata.create_all(db.app_engine, tables=made)
    try:
        yield db
    finally:
        base.metadata.drop_all(db.app_engine, tables=made)


@pytest.fixture
def ledger(db: Database) -> Iterator[Database]:
    with application_tables(db):  # the application's table
        yield db


def adapter(db: Database, mode: DualWriteMode, **kw: Any) -> tuple[DualWriteAdapter, list[Any]]:
    a = adapter_in(db, mode, **kw)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    return a, events


def counts(db: Database) -> dict[str, int]:
    return {t: db.count(t) for t in TABLES}


def everything(db: Database) -> dict[str, list[str]]:
    state = snapshot(db)
    with db.app_engine.connect() as conn:
        state["test_ledger"] = sorted(repr(tuple(r)) for r in conn.execute(sa.select(LEDGER)))
    return state


def pay_out(a: DualWriteAdapter, conn: Any, user: int = 1) -> str:
    """A service step: create a cashout, move it on, write the ledger row."""
    created = a.create_transaction("WALLET_CASHOUT", user, "5", "USD", connection=conn)
    assert created.overall_success and created.entity_id is not None
    changed = a.update_status(created.entity_id, "PROCESSING", "paid out", "svc", connection=conn)
    assert changed.overall_success, changed.error
    entity_id = created.entity_id
    conn.execute(sa.insert(LEDGER).values(entity_id=entity_id, amount=Decimal("-5")))
    return entity_id


# --- commit and rollback, in every mode ---------------------------------------------------


@IN_EVERY_LAYOUT
@pytest.mark.parametrize("mode", ALL_MODES, ids=lambda m: m.value)
def test_commit_writes_every_side_with_history(ledger: Database, mode: DualWriteMode) -> None:
    a, events = adapter(ledger, mode)
    with ledger.app_engine.connect() as conn, conn.begin():
        entity_id = pay_out(a, conn)
        # Inside the transaction the caller reads its own writes.
        status, meta = a.get_transaction_status(entity_id, connection=conn)
        assert status is UnifiedTransactionStatus.PROCESSING, meta
        report = a.check_consistency(entity_id, connection=conn)
        assert report["consistent"] is mode.writes_unified, report
        # Nothing is visible outside, and nothing is observed, before the commit.
        assert ledger.count("test_ledger") == 0 and ledger.count("cashouts") == 0
        assert [e.operation for e in events] == ["get_transaction_status"]
    writes = [e for e in events if e.operation != "get_transaction_status"]
    assert [(e.operation, e.success, e.rolled_back) for e in writes] == [
        ("create_transaction", True, False),
        ("update_status", True, False),
    ]
    assert all(e.mode is mode for e in writes)
    c = counts(ledger)
    assert c["test_ledger"] == 1 and c["unistatus_repair_queue"] == 0
    assert c["cashouts"] == (1 if mode.writes_legacy else 0)
    assert c["unified_transactions"] == (1 if mode.writes_unified else 0)
    assert c["unified_status_history"] == (2 if mode.writes_unified else 0)
    assert c["unistatus_pending_legacy"] == (2 if mode is M.UNIFIED_ONLY else 0)
    status, _ = a.get_transaction_status(entity_id)
    assert status is UnifiedTransactionStatus.PROCESSING
    assert a.check_consistency(entity_id)["consistent"] is mode.writes_unified


@IN_EVERY_LAYOUT
@pytest.mark.parametrize("mode", ALL_MODES, ids=lambda m: m.value)
def test_caller_rollback_leaves_nothing_and_is_observed_as_rolled_back(
    ledger: Database, mode: DualWriteMode
) -> None:
    a, events = adapter(ledger, mode)
    with ledger.app_engine.begin() as conn:  # a transaction that already holds an entity
        existing = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", connection=conn)
    before = everything(ledger)
    events.clear()
    with ledger.app_engine.connect() as conn:
        tx = conn.begin()
        pay_out(a, conn)
        assert existing.entity_id is not None
        a.update_status(existing.entity_id, "FAILED", "declined", "svc", connection=conn)
        tx.rollback()
    assert everything(ledger) == before
    assert [(e.operation, e.success, e.rolled_back, e.error) for e in events] == [
        (op, False, True, "rolled back by the caller")
        for op in ("create_transaction", "update_status", "update_status")
    ]


def test_statistics_count_a_rolled_back_write_as_rolled_back(ledger: Database) -> None:
    """Neither a success nor an error: counted apart (revision 0010), out of the error rate."""
    a, _ = adapter(ledger, M.DUAL_WRITE_LEGACY_PRIMARY)
    stats = OperationStats(ledger.engine, start=False).attach(a)
    with ledger.app_engine.connect() as conn:
        tx = conn.begin()
        pay_out(a, conn)
        tx.rollback()
    with ledger.app_engine.begin() as conn:
        pay_out(a, conn)
    assert stats.flush() > 0
    seen = window(ledger.engine, 600)
    assert (seen.count, seen.errors, seen.rolled_back) == (2, 0, 2)
    assert seen.error_rate == 0.0 and sum(seen.buckets) == 2


def test_an_exception_in_the_callers_code_leaves_nothing(ledger: Database) -> None:
    a, events = adapter(ledger, M.DUAL_WRITE_LEGACY_PRIMARY)
    before = everything(ledger)
    with pytest.raises(ZeroDivisionError), ledger.app_engine.begin() as conn:
        pay_out(a, conn)
        _ = 1 / 0  # the service fails after the adapter's calls
    assert everything(ledger) == before
    assert [e.rolled_back for e in events] == [True, True]


# --- errors ----------------------------------------------------------------------------------


def test_bad_input_raises_typed_and_leaves_the_transaction_usable(ledger: Database) -> None:
    a, events = adapter(ledger, M.DUAL_WRITE_LEGACY_PRIMARY)
    done = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="SUCCESS")
    assert done.entity_id is not None
    before = everything(ledger)
    with ledger.app_engine.connect() as conn, conn.begin():
        with pytest.raises(InputError):
            a.create_transaction("WALLET_CASHOUT", 1, "-5", "USD", connection=conn)
        with pytest.raises(InvalidTransitionError):
            a.update_status(done.entity_id, "PENDING", "back", "svc", connection=conn)
        assert everything_in(conn) == before
        # The caller's transaction still works: its own write and an adapter write.
        entity_id = pay_out(a, conn)
    assert ledger.count("test_ledger") == 1
    assert a.check_consistency(entity_id)["consistent"]
    assert [e.refused for e in events if e.operation == "update_status"][:1] == [True]


def everything_in(conn: sa.Connection) -> dict[str, list[str]]:
    """every table as ``conn`` sees it (inside the caller's transaction)."""
    out = {
        t: sorted(repr(tuple(r)) for r in conn.execute(sa.text(f"SELECT * FROM {t}")))
        for t in ALL_TABLES
    }
    out["test_ledger"] = sorted(repr(tuple(r)) for r in conn.execute(sa.select(LEDGER)))
    return out


def test_connection_not_in_a_transaction_is_refused(ledger: Database) -> None:
    a, _ = adapter(ledger, M.DUAL_WRITE_LEGACY_PRIMARY)
    with ledger.app_engine.connect() as conn, pytest.raises(InputError, match="in a transaction"):
        a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", connection=conn)
    with pytest.raises(InputError, match="Connection or ORM Session"):
        a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", connection="conn")  # type: ignore[arg-type]


def refuse_unified(db: Database, status: str) -> tuple[str, str]:
    """DDL that makes the database refuse ``status`` on the unified side, and its undo."""
    name = f"t_no_{status.lower()}"
    if db.backend == "postgres":
        return (
            f"ALTER TABLE unified_transactions ADD CONSTRAINT {name} "
            f"CHECK (status <> '{status}') NOT VALID",
            f"ALTER TABLE unified_transactions DROP CONSTRAINT IF EXISTS {name}",
        )
    body = f"WHEN NEW.status = '{status}' BEGIN SELECT RAISE(ABORT, '{name}'); END"
    return (
        f"CREATE TRIGGER {name} BEFORE UPDATE ON unified_transactions {body}",
        f"DROP TRIGGER IF EXISTS {name}",
    )


@pytest.fixture
def refused_failed(ledger: Database) -> Iterator[Database]:
    ddl, undo = refuse_unified(ledger, "FAILED")
    with ledger.app_engine.begin() as conn:
        conn.exec_driver_sql(ddl)
    try:
        yield ledger
    finally:
        with ledger.app_engine.begin() as conn:
            conn.exec_driver_sql(undo)


@pytest.fixture
def failing_failed(ledger: Database) -> Iterator[tuple[Database, str]]:
    """The database failing (not refusing: test_refused_by_the_application.py) a write of
    FAILED on the unified side: a CHECK constraint of unistatus's own table on
    PostgreSQL (its failure, never the caller's refusal), a trigger that overflows an
    integer on SQLite (a trigger's RAISE would be a rule's refusal). What it says."""
    if ledger.backend == "postgres":
        ddl, undo = refuse_unified(ledger, "FAILED")
        says = "t_no_failed"
    else:
        ddl = (
            "CREATE TRIGGER t_fail_failed BEFORE UPDATE ON unified_transactions "
            "WHEN NEW.status = 'FAILED' BEGIN SELECT abs(-9223372036854775808); END"
        )
        undo, says = "DROP TRIGGER IF EXISTS t_fail_failed", "integer overflow"
    with ledger.app_engine.begin() as conn:
        conn.exec_driver_sql(ddl)
    try:
        yield ledger, says
    finally:
        with ledger.app_engine.begin() as conn:
            conn.exec_driver_sql(undo)


def test_database_failure_raises_with_the_result(failing_failed: tuple[Database, str]) -> None:
    db, says = failing_failed
    a, events = adapter(db, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="strict")
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    before = everything(db)
    with db.engine.connect() as conn:
        tx = conn.begin()
        conn.execute(sa.insert(LEDGER).values(entity_id=created.entity_id, amount=-5))
        with pytest.raises(CallerTransactionError, match=says) as caught:
            a.update_status(created.entity_id, "FAILED", "declined", "svc", connection=conn)
        tx.rollback()  # only the caller may, and must
    assert not isinstance(caught.value, WriteRefusedError)
    result = caught.value.result
    assert result is not None and not result.overall_success and not result.changed
    assert says in (result.error or "")
    assert everything(db) == before
    last = events[-1]
    assert last.operation == "update_status" and not last.success and not last.rolled_back


def test_primary_wins_keeps_the_primary_and_queues_a_repair(refused_failed: Database) -> None:
    db = refused_failed
    a, events = adapter(db, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    with db.engine.begin() as conn:
        r = a.update_status(created.entity_id, "FAILED", "declined", "svc", connection=conn)
        # The savepoint rolled back the secondary side only: the transaction goes on.
        conn.execute(sa.insert(LEDGER).values(entity_id=created.entity_id, amount=5))
    assert r.primary_success and not r.secondary_success and r.has_inconsistency
    with db.engine.connect() as conn:
        legacy = conn.execute(sa.text("SELECT status FROM cashouts")).scalar_one()
        unified = conn.execute(sa.text("SELECT status FROM unified_transactions")).scalar_one()
        repair = conn.execute(sa.text("SELECT transaction_id FROM unistatus_repair_queue")).all()
    assert (legacy, unified) == ("FAILED", "PENDING")
    assert [row[0] for row in repair] == [created.entity_id]
    assert db.count("test_ledger") == 1
    assert not a.check_consistency(created.entity_id)["consistent"]
    assert events[-1].operation == "update_status" and events[-1].success


def test_a_rolled_back_change_leaves_no_stale_guess(ledger: Database) -> None:
    """The fast path remembers what it wrote; the caller's rollback makes that a wrong
    guess, which the guarded write must catch (PostgreSQL; SQLite has no fast path)."""
    a, _ = adapter(ledger, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert a.update_status(c.entity_id, "PROCESSING", "r", "t").changed
    with ledger.app_engine.connect() as conn:
        tx = conn.begin()
        a.update_status(c.entity_id, "AWAITING_RESPONSE", "r", "t", connection=conn)
        tx.rollback()
    for target in ("AWAITING_RESPONSE", "SUCCESS"):
        with ledger.app_engine.begin() as conn:
            r = a.update_status(c.entity_id, target, "r", "t", connection=conn)
        assert r.overall_success and r.changed, r.error
    assert a.check_consistency(c.entity_id)["consistent"]
    with ledger.app_engine.connect() as conn:
        chain = conn.execute(
            sa.text("SELECT from_status, to_status FROM unified_status_history ORDER BY id")
        ).all()
    assert [tuple(row) for row in chain] == [
        (None, "PENDING"),
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "AWAITING_RESPONSE"),
        ("AWAITING_RESPONSE", "SUCCESS"),
    ]


def test_idempotency_key_in_the_callers_transaction(ledger: Database) -> None:
    a, _ = adapter(ledger, M.DUAL_WRITE_LEGACY_PRIMARY)
    with ledger.app_engine.connect() as conn:
        tx = conn.begin()
        a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key="k1", connection=conn)
        tx.rollback()  # the key goes with the rest
    with ledger.app_engine.begin() as conn:
        first = a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key="k1", connection=conn)
        assert first.changed and not first.replayed
    with ledger.app_engine.begin() as conn:
        again = a.create_transaction("ESCROW", 1, "5", "USD", idempotency_key="k1", connection=conn)
    assert again.replayed and again.entity_id == first.entity_id
    assert ledger.count("escrows") == 1


# --- an ORM Session -----------------------------------------------------------------------


@IN_EVERY_LAYOUT
@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_orm_session(ledger: Database, commit: bool) -> None:
    a, events = adapter(ledger, M.DUAL_WRITE_LEGACY_PRIMARY)
    before = everything(ledger)
    with Session(ledger.app_engine) as session:
        session.begin()
        created = a.create_transaction("WALLET_CASHOUT", 7, "5", "USD", connection=session)
        assert created.entity_id is not None
        # A savepoint of the caller's own does not end the transaction for the observers.
        with session.begin_nested():
            session.add(Ledger(entity_id=created.entity_id, amount=Decimal("-5")))
        a.update_status(created.entity_id, "PROCESSING", "paid", "svc", connection=session)
        assert events == []
        if commit:
            session.commit()
        else:
            session.rollback()
    if commit:
        assert counts(ledger)["unified_status_history"] == 2
        assert ledger.count("test_ledger") == 1
        assert [(e.success, e.rolled_back) for e in events] == [(True, False), (True, False)]
    else:
        assert everything(ledger) == before
        assert [(e.success, e.rolled_back) for e in events] == [(False, True), (False, True)]


class Cashout(Base):
    """The application's own model of the legacy table (a few of its columns)."""

    __tablename__ = "cashouts"
    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(64))
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(20, 8))


@IN_EVERY_LAYOUT
@pytest.mark.parametrize("autoflush", [True, False], ids=["autoflush", "no_autoflush"])
def test_the_sessions_loaded_row_shows_the_adapters_write(db: Database, autoflush: bool) -> None:
    """The legacy row the caller's Session holds is refreshed from the transaction after
    the adapter writes it, and a change of the caller's own to it is kept."""
    a, _ = adapter(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 7, "5", "USD")
    assert created.entity_id is not None and created.legacy_entity_id is not None
    with Session(db.app_engine, autoflush=autoflush) as session, session.begin():
        loaded = session.get(Cashout, created.legacy_entity_id)
        assert loaded is not None and loaded.status == "PENDING"
        loaded.amount = Decimal("6")  # the caller's own change, not flushed yet
        a.update_status(created.entity_id, "OTP_PENDING", "sent", "svc", connection=session)
        assert loaded.status == "OTP_PENDING"
        assert session.get(Cashout, created.legacy_entity_id) is loaded
        assert loaded.amount == Decimal("6")
    with Session(db.app_engine) as session:
        stored = session.get(Cashout, created.legacy_entity_id)
        assert stored is not None
        assert (stored.status, stored.amount) == ("OTP_PENDING", Decimal("6"))


# --- the mode ------------------------------------------------------------------------------


def test_a_mode_switch_waits_for_the_callers_commit(ledger: Database) -> None:
    if ledger.backend != "postgres":
        pytest.skip("PostgreSQL: on SQLite the caller's write lock serialises everything")
    a, _ = adapter(ledger, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    switched = threading.Event()

    def switch() -> None:
        set_mode(ledger.engine, M.LEGACY_ONLY, reason="pause", actor="test")
        switched.set()

    with ledger.app_engine.connect() as conn:
        tx = conn.begin()
        r = a.update_status(created.entity_id, "PROCESSING", "paid", "svc", connection=conn)
        assert r.mode is M.DUAL_WRITE_LEGACY_PRIMARY
        worker = threading.Thread(target=switch)
        worker.start()
        assert not switched.wait(0.5), "the switch did not wait for the caller's transaction"
        conn.execute(sa.insert(LEDGER).values(entity_id=created.entity_id, amount=-5))
        tx.commit()
        worker.join(10)
    assert switched.is_set()
    with ledger.app_engine.connect() as conn:
        assert read_mode(conn) is M.LEGACY_ONLY
    # The next caller transaction runs in the new mode, whatever the adapter had cached.
    with ledger.app_engine.begin() as conn:
        r = a.update_status(created.entity_id, "SUCCESS", "done", "svc", connection=conn)
    assert r.mode is M.LEGACY_ONLY
    assert counts(ledger)["unified_status_history"] == 2  # create + PROCESSING, not SUCCESS


def test_sqlite_stale_read_transaction_is_refused_clearly(ledger: Database) -> None:
    if ledger.backend != "sqlite":
        pytest.skip("SQLite's write lock")
    a, _ = adapter(ledger, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    with ledger.app_engine.connect() as conn:
        tx = conn.begin()  # BEGIN (deferred): a read transaction until its first write
        conn.execute(sa.select(LEDGER)).all()
        a.create_transaction("WALLET_CASHOUT", 2, "5", "USD")  # another writer commits
        with pytest.raises(CallerTransactionError, match="BEGIN IMMEDIATE"):
            a.update_status(created.entity_id, "PROCESSING", "paid", "svc", connection=conn)
        tx.rollback()
    # Begun IMMEDIATE, the same transaction holds the lock from the start.
    with ledger.app_engine.connect() as plain:
        conn = plain.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            conn.execute(sa.select(LEDGER)).all()
            r = a.update_status(created.entity_id, "PROCESSING", "paid", "svc", connection=conn)
    assert r.overall_success


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_postgres_snapshot_isolation_is_refused_with_nothing_written(
    pg: Database, isolation: str
) -> None:
    # The mode is read in the caller's snapshot: at REPEATABLE READ a switch after the
    # snapshot was taken would go unseen (a write under UNIFIED_ONLY's stale mode).
    with application_tables(pg):
        snapshot_isolation_refused(pg, isolation)


def snapshot_isolation_refused(pg: Database, isolation: str) -> None:
    a, events = adapter(pg, M.DUAL_WRITE_UNIFIED_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert created.entity_id is not None
    set_mode(pg.engine, M.UNIFIED_ONLY, reason="t", actor="t", force=True)
    a.modes.refresh()
    before = everything(pg)
    with pg.engine.connect() as plain:
        conn = plain.execution_options(isolation_level=isolation)
        with conn.begin():
            conn.execute(sa.select(LEDGER)).all()  # the snapshot is taken
            set_mode(pg.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, reason="back", actor="t", force=True)
            with pytest.raises(CallerTransactionError, match="isolation level.*READ COMMITTED"):
                a.update_status(created.entity_id, "PROCESSING", "r", "t", connection=conn)
            with pytest.raises(CallerTransactionError, match="isolation level"):
                a.create_transaction("WALLET_CASHOUT", 2, "5", "USD", connection=conn)
    written = ["cashouts", "unified_transactions", "unified_status_history", "test_ledger"]
    written += ["unistatus_pending_legacy", "unistatus_repair_queue"]
    after = everything(pg)
    assert {t: after[t] for t in written} == {t: before[t] for t in written}
    assert all(e.refused for e in events if e.operation == "update_status")
    # READ COMMITTED (the default) works as before, on the same connection.
    with pg.engine.connect() as conn, conn.begin():
        r = a.update_status(created.entity_id, "PROCESSING", "r", "t", connection=conn)
    assert r.overall_success, r.error


@PG_IN_EVERY_LAYOUT
def test_sixteen_threads_lose_nothing(pg: Database) -> None:
    with application_tables(pg):
        sixteen_threads(pg)


def sixteen_threads(pg: Database) -> None:
    a, events = adapter(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    shared = a.create_transaction("ESCROW", 1, "10", "USDT", status="FUNDS_HELD").entity_id
    assert shared is not None
    per_thread = 8

    def service(n: int) -> list[str]:
        ids = []
        for i in range(per_thread):
            with pg.app_engine.begin() as conn:
                ids.append(pay_out(a, conn, user=n + 1))
                # Contention on one entity too: every thread flips the shared escrow.
                target = "DISPUTED" if (n + i) % 2 else "FUNDS_HELD"
                a.update_status(shared, target, "flip", f"t{n}", connection=conn)
        return ids

    with ThreadPoolExecutor(16) as pool:
        ids = [e for f in [pool.submit(service, n) for n in range(16)] for e in f.result()]
    total = 16 * per_thread
    assert len(set(ids)) == total
    assert pg.count("test_ledger") == total
    with pg.engine.connect() as conn:
        history = dict(
            conn.execute(
                sa.text(
                    f"SELECT transaction_id, count(*) FROM {pg.table('unified_status_history')} "
                    "GROUP BY transaction_id"
                )
            ).all()
        )
        q = f"SELECT id, version FROM {pg.table('unified_transactions')}"
        versions = dict(conn.execute(sa.text(q)).all())
    assert all(history[e] == 2 and versions[e] == 2 for e in ids)
    # Every accepted change of the shared escrow has its history row and its version bump.
    flips = [
        e for e in events if e.operation == "update_status" and e.success and not e.rolled_back
    ]
    assert len(flips) == 2 * total
    assert versions[shared] == history[shared]  # one history row per accepted change
    with pg.engine.connect() as conn:
        chain = conn.execute(
            sa.text(
                f"SELECT from_status, to_status FROM {pg.table('unified_status_history')} "
                "WHERE transaction_id = :t ORDER BY id"
            ),
            {"t": shared},
        ).all()
    for prev, nxt in zip(chain, chain[1:], strict=False):
        assert nxt.from_status == prev.to_status  # no lost update: each change saw the last
    assert a.check_consistency(shared)["consistent"]


# --- the README's example -----------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
README_MARK = "<!-- tested by tests/adapter/test_caller_transaction.py"


def readme_example() -> str:
    """The two code blocks after the mark in the README, as one program."""
    after = README.read_text(encoding="utf-8").split(README_MARK, 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", after, flags=re.S)[:2]
    assert len(blocks) == 2
    return "\n".join(blocks)


@IN_EVERY_LAYOUT
def test_the_readme_example_runs(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    # The application's own engine: the adapter finds the schema in its settings.
    ns: dict[str, Any] = {"engine": db.app_engine, "__name__": "readme"}
    exec(compile(readme_example(), str(README), "exec", dont_inherit=True), ns)
    with application_tables(db, ns["Base"]):
        readme_example_runs(db, ns)


def readme_example_runs(db: Database, ns: dict[str, Any]) -> None:
    adapter: DualWriteAdapter = ns["adapter"]
    first = adapter.create_transaction("WALLET_CASHOUT", 1, "30", "USD").entity_id
    second = adapter.create_transaction("WALLET_CASHOUT", 1, "30", "USD").entity_id
    with db.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (user_id, balance) VALUES (1, 50)"))

    def state() -> tuple[Any, ...]:
        with db.engine.connect() as conn:
            balance = conn.execute(sa.text("SELECT balance FROM accounts")).scalar_one()
            entries = conn.execute(sa.text("SELECT count(*) FROM ledger")).scalar_one()
        statuses = [adapter.get_transaction_status(e)[0] for e in (first, second)]
        return Decimal(balance), entries, [s.value if s else None for s in statuses]

    with Session(db.app_engine) as session:
        ns["approve_cashout"](session, first, 1, Decimal("30"))
    assert state() == (Decimal("20"), 1, ["PROCESSING", "PENDING"])
    with Session(db.app_engine) as session, pytest.raises(ns["InsufficientFunds"]):
        ns["approve_cashout"](session, second, 1, Decimal("30"))
    assert state() == (Decimal("20"), 1, ["PROCESSING", "PENDING"])  # all three undone
    with pytest.raises(ns["InsufficientFunds"]):
        ns["approve_cashout_core"](second, 1, Decimal("30"))
    ns["approve_cashout_core"](second, 1, Decimal("20"))
    assert state() == (Decimal("0"), 2, ["PROCESSING", "PROCESSING"])
    assert all(adapter.check_consistency(e)["consistent"] for e in (first, second))
    assert db.count("unified_status_history") == 4
