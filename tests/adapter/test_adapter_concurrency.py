"""Many threads writing the same few entities at once, on PostgreSQL.

Among FUNDS_HELD, RELEASE_PENDING and DISPUTED every escrow change is allowed, so each
request is either an accepted change or an idempotent no-op: the writers never need to
know the current status, and any lost update shows up as a broken history chain, a
version that does not match the accepted changes, or sides that disagree.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from conftest import Database
from support.race import (
    BACKFILLED_ROW,
    SLOW_SETTING,
    one_unbackfilled_cashout,
    wait_for_sleep,
)
from unistatus import DualWriteAdapter, DualWriteMode, DualWriteResult, LegacyStatusMapper
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine
from unistatus.db.tables import escrows, status_history, unified_transactions

THREADS = 16
OPS_PER_THREAD = 20
ENTITIES = 4
CYCLE = ["FUNDS_HELD", "RELEASE_PENDING", "DISPUTED"]


@pytest.mark.parametrize(
    "mode", [DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY]
)
def test_concurrent_updates_lose_nothing(pg: Database, mode: DualWriteMode) -> None:
    set_mode(pg.engine, mode, reason="test", actor="test")
    adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
    adapter.modes.refresh()
    ids = [
        adapter.create_transaction("ESCROW", 1, "10", "USDT", status="FUNDS_HELD").entity_id
        for _ in range(ENTITIES)
    ]
    start = threading.Barrier(THREADS)

    def writer(seed: int) -> list[tuple[str, DualWriteResult]]:
        rng = random.Random(seed)
        start.wait()
        out = []
        for i in range(OPS_PER_THREAD):
            entity = rng.choice(ids)
            target = rng.choice(CYCLE)
            out.append(
                (entity, adapter.update_status(entity, target, f"w{seed}-{i}", f"thread-{seed}"))
            )
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for batch in pool.map(writer, range(THREADS)) for r in batch]

    failures = [r.error for _, r in results if not r.overall_success]
    assert failures == []
    accepted = Counter(entity for entity, r in results if r.changed)
    assert sum(accepted.values()) > ENTITIES  # there was real contention to serialise

    mapper = LegacyStatusMapper()
    with pg.engine.connect() as conn:
        for entity in ids:
            u = conn.execute(
                sa.select(unified_transactions).where(unified_transactions.c.id == entity)
            ).one()
            legacy_status = conn.execute(
                sa.select(escrows.c.status).where(escrows.c.id == u.legacy_id)
            ).scalar_one()
            chain = conn.execute(
                sa.select(status_history)
                .where(status_history.c.transaction_id == entity)
                .order_by(status_history.c.id)
            ).all()
            # one creation row, then exactly one row per accepted change
            assert len(chain) == 1 + accepted[entity], entity
            assert u.version == 1 + accepted[entity]
            for prev, row in zip(chain, chain[1:], strict=False):
                assert row.from_status == prev.to_status, (entity, prev.id, row.id)
                assert row.from_legacy_status == prev.to_legacy_status
                assert row.from_status != row.to_status
            assert chain[-1].to_status == u.status
            assert u.legacy_status == legacy_status == mapper.to_legacy("ESCROW", u.status)
            assert mapper.is_compatible("escrow", legacy_status, u.status)
            assert {r.operation_id for r in chain[1:]} == {
                r.operation_id for e, r in results if e == entity and r.changed
            }


def test_concurrent_forced_overrides_serialise(pg: Database) -> None:
    """Forced admin overrides between final statuses: still one history row each."""
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
    adapter.modes.refresh()
    entity = adapter.create_transaction("WALLET_CASHOUT", 1, "10", "USD").entity_id
    targets = ["SUCCESS", "FAILED", "CANCELLED", "EXPIRED"]

    def writer(seed: int) -> list[DualWriteResult]:
        rng = random.Random(seed)
        return [
            adapter.update_status(entity, rng.choice(targets), "ops fix", "admin", force=True)
            for _ in range(10)
        ]

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(writer, range(8)) for r in batch]
    assert all(r.overall_success for r in results)
    changed = sum(r.changed for r in results)
    with pg.engine.connect() as conn:
        rows = conn.execute(
            sa.select(status_history.c.from_status, status_history.c.to_status)
            .where(status_history.c.transaction_id == entity)
            .order_by(status_history.c.id)
        ).all()
        version = conn.execute(
            sa.select(unified_transactions.c.version).where(unified_transactions.c.id == entity)
        ).scalar_one()
    assert len(rows) == 1 + changed and version == 1 + changed
    assert all(b.from_status == a.to_status for a, b in zip(rows, rows[1:], strict=False))


def test_adapter_connections_bound_lock_waits(pg: Database) -> None:
    """A write stuck behind a lock fails after lock_timeout_ms instead of hanging."""
    import time
    from decimal import Decimal

    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    settings = pg.settings.model_copy(update={"lock_timeout_ms": 200})
    adapter = DualWriteAdapter(pg.url, settings=settings)
    try:
        with adapter.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "200ms"
        created = adapter.create_transaction("ESCROW", 1, Decimal("5"), "EUR")
        assert created.overall_success and created.legacy_entity_id
        with pg.engine.begin() as blocker:  # another process holds the row
            blocker.execute(
                sa.select(escrows.c.id)
                .where(escrows.c.id == created.legacy_entity_id)
                .with_for_update()
            )
            started = time.perf_counter()
            stuck = adapter.update_status(created.entity_id, "AWAITING_PAYMENT", "r", "t")
            elapsed = time.perf_counter() - started
        assert not stuck.overall_success
        assert "lock" in (stuck.error or "").lower()
        assert elapsed < 5.0  # a few bounded retries, not an endless wait
        # Nothing was written, and once the lock is gone the write goes through.
        assert adapter.get_transaction_status(created.entity_id)[0] == "PENDING"
        assert adapter.update_status(
            created.entity_id, "AWAITING_PAYMENT", "r", "t"
        ).overall_success
    finally:
        adapter.engine.dispose()


def _unified_row(db: Database) -> tuple[object, ...]:
    U = unified_transactions
    with db.engine.connect() as conn:
        return tuple(conn.execute(sa.select(U.c.status, U.c.legacy_status, U.c.version)).one())


@pytest.mark.postgres
def test_a_unified_row_the_backfill_is_inserting_is_updated_not_an_error(
    scratch_pg: Database,
) -> None:
    """The adapter creates the unified row of an unbackfilled transaction while the
    backfill inserts the same row, held between the primary key's index and the legacy
    reference's (a slow index in between, so the race is certain): the adapter's insert
    meets the row in the primary key, waits for the backfill and updates the row."""
    db = scratch_pg
    one_unbackfilled_cashout(db, before_primary_key=False)
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    adapter.modes.refresh()
    inserting = threading.Event()

    def backfill_insert() -> None:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL {SLOW_SETTING} = 'on'")
            inserting.set()
            conn.exec_driver_sql(BACKFILLED_ROW)

    with ThreadPoolExecutor(1) as pool:
        backfill = pool.submit(backfill_insert)
        inserting.wait()
        threading.Event().wait(0.5)  # inside the slow index now
        result = adapter.update_status("cashout:1", "AWAITING_RESPONSE", "r", "svc")
        backfill.result()
    adapter.close()
    assert result.overall_success, result.error
    assert _unified_row(db) == ("AWAITING_RESPONSE", "AWAITING_RESPONSE", 2)


@pytest.mark.postgres
def test_a_unified_row_the_backfill_committed_after_the_adapters_check_is_updated(
    scratch_pg: Database,
) -> None:
    """The other way round: the adapter's insert has passed its conflict check and is
    held before the keys' indexes (a slow index first) while the backfill inserts the
    same row and commits. An upsert arbitrated on the primary key alone then meets the
    row in the legacy reference's unique index, which is not its arbiter: a unique
    violation, and the change fails. The change must land on the backfilled row."""
    db = scratch_pg
    one_unbackfilled_cashout(db, before_primary_key=True)
    slow = create_engine(db.url, connect_args={"options": f"-c {SLOW_SETTING}=on"})
    adapter = DualWriteAdapter(slow, settings=db.settings)
    adapter.modes.refresh()
    with ThreadPoolExecutor(1) as pool:
        change = pool.submit(adapter.update_status, "cashout:1", "AWAITING_RESPONSE", "r", "svc")
        wait_for_sleep(db)  # the adapter's insert is in the slow index
        with db.engine.begin() as conn:
            conn.exec_driver_sql(BACKFILLED_ROW)
        result = change.result()
    adapter.close()
    slow.dispose()
    assert result.overall_success, result.error
    assert _unified_row(db) == ("AWAITING_RESPONSE", "AWAITING_RESPONSE", 2)
