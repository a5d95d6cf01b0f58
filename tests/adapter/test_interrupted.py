"""A write interrupted by a BaseException: asyncio's CancelledError (a request's timeout
inside ``run_sync``), KeyboardInterrupt, SystemExit.

Every update_status past its input checks reaches the observers (and so OperationStats)
exactly once, whichever way it ends (README); an interruption is no exception to that.
The interruption itself leaves the adapter unchanged (the very same object), and leaves
nothing held: no write slot, no connection.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from conftest import Database
from support.adapters import adapter_in
from unistatus import DualWriteMode, OperationEvent
from unistatus.adapter.admission import FairGate

M = DualWriteMode


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt / CancelledError: not an Exception."""


def _interrupt(db: Database) -> BaseException:
    """What interrupts the write: KeyboardInterrupt where a signal raises it while the
    driver waits (psycopg cancels the query then, as on Ctrl-C), else a BaseException
    of the test's own."""
    return Interrupt("stop") if db.backend == "sqlite" else KeyboardInterrupt("stop")


def _changes(events: list[OperationEvent]) -> list[OperationEvent]:
    return [e for e in events if e.operation == "update_status"]


@contextmanager
def _interrupted_at_the_legacy_write(target: Any, raised: BaseException) -> Iterator[None]:
    """``raised`` from the first statement on ``target`` (an engine or a connection)
    that writes the legacy row: mid-write, after the adapter's first statements."""

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sql = statement.lower()
        if "update" in sql and "cashouts" in sql:
            raise raised

    event.listen(target, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(target, "before_cursor_execute", before)


@contextmanager
def _alarm(raised: BaseException, seconds: float) -> Iterator[None]:
    """``raised`` in the main thread after ``seconds`` (as Ctrl-C would)."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise raised

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _interrupted_in_the_write(db: Database, target: Any, raised: BaseException) -> Iterator[None]:
    """SQLite: ``raised`` from the legacy write's statement. PostgreSQL (whose adapter
    runs its statements on the driver's cursor, past SQLAlchemy's events): the legacy
    row locked by another transaction, and ``raised`` by a signal while the write
    waits for it."""
    if db.backend == "sqlite":
        with _interrupted_at_the_legacy_write(target, raised):
            yield
        return
    with db.engine.connect() as blocker, blocker.begin():
        blocker.execute(sa.text(f"SELECT 1 FROM {db.table('cashouts')} FOR UPDATE"))
        with _alarm(raised, 0.5):
            yield


def test_an_interrupted_write_in_the_callers_transaction_is_observed_once(
    db: Database,
) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity_id = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    raised = _interrupt(db)
    with pytest.raises(type(raised)) as caught:
        with db.engine.begin() as conn:
            with _interrupted_in_the_write(db, conn, raised):
                a.update_status(entity_id, "PROCESSING", "r", "svc", connection=conn)
    assert caught.value is raised
    changes = _changes(events)
    assert [(e.success, e.rolled_back, e.refused) for e in changes] == [(False, True, False)]
    assert a.get_transaction_status(entity_id)[0].value == "PENDING"  # type: ignore[union-attr]
    a.close()


def test_an_interrupted_write_of_the_adapters_own_is_observed_once_and_holds_nothing(
    db: Database,
) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity_id = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    raised = _interrupt(db)
    with pytest.raises(type(raised)) as caught:
        with _interrupted_in_the_write(db, a.engine, raised):
            a.update_status(entity_id, "PROCESSING", "r", "svc")
    assert caught.value is raised
    changes = _changes(events)
    assert [(e.success, e.refused) for e in changes] == [(False, False)]
    assert "Interrupt" in (changes[0].error or "")
    assert a.engine.pool.checkedout() == 0
    assert a.gate is None or a.gate.waiting == 0
    # Every slot is free again: as many writes at once as there are slots.
    if a.gate is not None:
        for _ in range(a.gate.slots):
            assert a.gate.acquire(timeout=0)
        for _ in range(a.gate.slots):
            a.gate.release()
    assert a.get_transaction_status(entity_id)[0].value == "PENDING"  # type: ignore[union-attr]
    assert a.update_status(entity_id, "PROCESSING", "r", "svc").overall_success
    a.close()


def test_a_wait_for_a_write_slot_interrupted_leaves_no_ticket_behind() -> None:
    """KeyboardInterrupt while queued for a slot: the queue forgets the waiter (else
    the next free slot would be handed to nobody, and lost for good)."""
    gate = FairGate(1)
    assert gate.acquire()

    with pytest.raises(Interrupt), _alarm(Interrupt("stop"), 0.05):
        gate.acquire(timeout=5)
    assert gate.waiting == 0
    gate.release()
    assert gate.acquire(timeout=0)


def test_a_request_timing_out_inside_run_sync_is_observed_once(pg: Database) -> None:
    """The asyncio application's request times out (``asyncio.wait_for``) while the
    adapter waits for a row lock in ``run_sync``: CancelledError is raised inside
    update_status; the write is observed once, rolled back with the request's
    transaction."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    entity_id, legacy_id = str(created.entity_id), created.legacy_entity_id
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    inside: list[BaseException] = []

    def change(conn: sa.Connection) -> Any:
        try:
            return a.update_status(entity_id, "PROCESSING", "r", "svc", connection=conn)
        except BaseException as exc:
            inside.append(exc)
            raise

    async def application() -> None:
        engine = create_async_engine(pg.url.replace("+psycopg:", "+psycopg_async:"))
        try:
            async with engine.connect() as blocker:
                await blocker.begin()
                table = pg.table("cashouts")
                await blocker.execute(
                    sa.text(f"SELECT 1 FROM {table} WHERE id = :id FOR UPDATE"), {"id": legacy_id}
                )

                async def request() -> None:
                    async with engine.begin() as conn:
                        await conn.run_sync(change)

                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(request(), 0.5)
                await blocker.rollback()
        finally:
            await engine.dispose()

    asyncio.run(application())
    assert [type(e) for e in inside] == [asyncio.CancelledError]
    changes = _changes(events)
    assert [(e.success, e.rolled_back, e.refused) for e in changes] == [(False, True, False)]
    assert a.get_transaction_status(entity_id)[0].value == "PENDING"  # type: ignore[union-attr]
    a.close()
