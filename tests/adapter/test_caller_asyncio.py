"""An asyncio application (SQLAlchemy's ``AsyncConnection`` / ``AsyncSession``).

The adapter is synchronous; an async application calls it inside its own transaction
through SQLAlchemy's ``run_sync``, which hands it the sync Connection (or Session)
underneath. Passing the async object itself is refused with that recipe; through
``run_sync`` the write is the application's like any other: kept with its COMMIT, undone
and counted as rolled back with its ROLLBACK.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from conftest import Database
from support.adapters import adapter_in, snapshot
from unistatus import DualWriteMode, InputError, OperationEvent

M = DualWriteMode


def test_an_async_application_writes_through_run_sync(pg: Database) -> None:
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    entity_id = str(a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    before = snapshot(pg)

    def change(status: str) -> Any:
        return lambda conn: a.update_status(entity_id, status, "r", "svc", connection=conn)

    async def application() -> None:
        engine = create_async_engine(pg.url.replace("+psycopg:", "+psycopg_async:"))
        try:
            async with engine.connect() as conn:
                async with conn.begin():
                    with pytest.raises(InputError, match=r"run_sync"):
                        change("PROCESSING")(conn)
                    await conn.run_sync(change("PROCESSING"))
                    await conn.rollback()
            assert snapshot(pg) == before
            async with AsyncSession(engine) as session:
                with pytest.raises(InputError, match=r"run_sync"):
                    change("PROCESSING")(session)
                await session.run_sync(change("PROCESSING"))
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(application())
    status, _ = a.get_transaction_status(entity_id)
    assert status is not None and status.value == "PROCESSING"
    changes = [e for e in events if e.operation == "update_status" and not e.refused]
    outcomes = [(e.success, e.rolled_back) for e in changes]
    assert outcomes == [(False, True), (True, False)]


class Base(DeclarativeBase):
    pass


class Cashout(Base):
    """The application's own model of the legacy table (a few of its columns)."""

    __tablename__ = "cashouts"
    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(64))


def test_an_async_sessions_loaded_row_is_read_again_with_refresh(pg: Database) -> None:
    """docs/adapter.md's recipe: the row an AsyncSession loaded is expired by the write
    (its lazy load would need the event loop: MissingGreenlet); ``await
    session.refresh(row)``, or a read inside the run_sync function, shows the write."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    entity_id, legacy_id = str(created.entity_id), int(str(created.legacy_entity_id))

    def change(session: Any) -> str:
        a.update_status(entity_id, "PROCESSING", "r", "svc", connection=session)
        return session.get(Cashout, legacy_id).status  # type: ignore[no-any-return]

    async def application() -> None:
        engine = create_async_engine(pg.url.replace("+psycopg:", "+psycopg_async:"))
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                async with session.begin():
                    row = await session.get(Cashout, legacy_id)
                    assert row is not None and row.status == "PENDING"
                    written = await session.run_sync(change)  # cashouts' EXECUTING
                    assert written != "PENDING"
                    await session.refresh(row)
                    assert row.status == written
            async with AsyncSession(engine) as session:
                async with session.begin():
                    row = await session.get(Cashout, legacy_id)
                    assert row is not None
                    await session.run_sync(
                        lambda s: a.update_status(entity_id, "COMPLETED", "r", "svc", connection=s)
                    )
                    with pytest.raises(sa.exc.MissingGreenlet):
                        _ = row.status
                    await session.refresh(row)
                    assert row.status not in ("PENDING", written)
        finally:
            await engine.dispose()

    asyncio.run(application())
    a.close()


def test_without_connection_an_async_application_calls_the_adapter_in_a_thread(
    pg: Database,
) -> None:
    """docs/adapter.md's recipe: ``asyncio.to_thread``. The write waits for a row lock
    another task of the same loop holds; the loop runs on, so that task releases it
    (called directly, the loop would stall until the lock timeout)."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    entity_id, legacy_id = str(created.entity_id), created.legacy_entity_id

    async def application() -> None:
        engine = create_async_engine(pg.url.replace("+psycopg:", "+psycopg_async:"))
        locked = asyncio.Event()

        async def hold() -> None:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(f"SELECT 1 FROM {pg.table('cashouts')} WHERE id = :id FOR UPDATE"),
                    {"id": legacy_id},
                )
                locked.set()
                await asyncio.sleep(0.3)

        try:
            holder = asyncio.create_task(hold())
            await locked.wait()
            result = await asyncio.to_thread(a.update_status, entity_id, "PROCESSING", "r", "svc")
            assert result.overall_success and result.changed
            await holder
        finally:
            await engine.dispose()

    asyncio.run(application())
    a.close()
