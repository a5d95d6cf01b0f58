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
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

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
