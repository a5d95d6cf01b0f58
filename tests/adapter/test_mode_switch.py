"""A mode switch made through the control table reaches running adapters, and writes
racing the switch are recorded under the mode they committed in."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from conftest import IN_EVERY_LAYOUT, PG_IN_EVERY_LAYOUT, Database
from unistatus import DualWriteAdapter, DualWriteMode, DualWriteResult, UnifiedTransactionStatus
from unistatus.clock import as_utc
from unistatus.db import control
from unistatus.db.control import history as control_history
from unistatus.db.control import set_mode
from unistatus.db.tables import escrows, pending_legacy_changes, status_history
from unistatus.errors import StorageError

M = DualWriteMode


@IN_EVERY_LAYOUT
def test_switch_reaches_a_second_adapter_within_a_second(db: Database) -> None:
    settings = db.settings.model_copy(update={"mode_refresh_seconds": 0.2})
    first = DualWriteAdapter(db.engine, settings=settings)
    second = DualWriteAdapter(db.engine, settings=settings)
    assert first.mode is second.mode is M.LEGACY_ONLY
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="go", actor="test")
    started = time.monotonic()
    while second.mode is not M.DUAL_WRITE_LEGACY_PRIMARY:
        assert time.monotonic() - started < 1.0, "switch did not arrive within 1 s"
        time.sleep(0.02)
    assert first.mode is M.DUAL_WRITE_LEGACY_PRIMARY
    changes = control_history(db.engine, "mode")
    assert sorted(c.key for c in changes) == ["mode.CASHOUT", "mode.ESCROW", "mode.EXCHANGE"]
    assert {(c.old_value, c.new_value, c.reason) for c in changes} == {
        (None, "DUAL_WRITE_LEGACY_PRIMARY", "go")
    }


def test_write_after_switch_uses_new_mode_even_before_refresh(db: Database) -> None:
    """The adapter re-reads the mode under the mode lock: a stale cache cannot win."""
    settings = db.settings.model_copy(update={"mode_refresh_seconds": 60})
    adapter = DualWriteAdapter(db.engine, settings=settings)
    assert adapter.mode is M.LEGACY_ONLY
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="go", actor="test")
    r = adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert r.overall_success and r.mode is M.DUAL_WRITE_LEGACY_PRIMARY
    assert db.count("unified_transactions") == 1
    set_mode(db.engine, M.UNIFIED_ONLY, reason="go", actor="test")
    u = adapter.update_status(r.entity_id, "PROCESSING", "r", "t")
    assert u.mode is M.UNIFIED_ONLY and db.count("unistatus_pending_legacy") == 1


def test_stale_legacy_only_cache_cannot_skip_the_unified_write(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="go", actor="test")
    writer = DualWriteAdapter(db.engine, settings=db.settings)
    created = writer.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="PROCESSING")
    set_mode(db.engine, M.LEGACY_ONLY, reason="pause", actor="test")
    settings = db.settings.model_copy(update={"mode_refresh_seconds": 60})
    stale = DualWriteAdapter(db.engine, settings=settings)
    assert stale.mode is M.LEGACY_ONLY
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="resume", actor="test")
    for target in ("AWAITING_RESPONSE", "AWAITING_RESPONSE", "SUCCESS"):
        r = stale.update_status(created.entity_id, target, "r", "t")
        assert r.overall_success and r.mode is M.DUAL_WRITE_LEGACY_PRIMARY
    status, meta = writer.get_transaction_status(created.entity_id)
    assert status is UnifiedTransactionStatus.SUCCESS
    assert writer.check_consistency(created.entity_id)["consistent"]
    assert db.count("unified_status_history") == 3


@PG_IN_EVERY_LAYOUT
def test_writers_racing_a_switch_commit_under_one_mode(pg: Database) -> None:
    set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
    adapter.modes.refresh()
    ids = [
        adapter.create_transaction("ESCROW", 1, "10", "USDT", status="FUNDS_HELD").entity_id
        for _ in range(4)
    ]
    stop = threading.Event()

    def writer(seed: int) -> list[DualWriteResult]:
        rng = random.Random(seed)
        out = []
        while not stop.is_set():
            target = rng.choice(["FUNDS_HELD", "RELEASE_PENDING", "DISPUTED"])
            out.append(adapter.update_status(rng.choice(ids), target, "race", f"w{seed}"))
        return out

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(writer, i) for i in range(8)]
        time.sleep(0.4)
        [switch, *_] = set_mode(pg.engine, M.UNIFIED_ONLY, reason="cut over", actor="test")
        time.sleep(0.6)
        stop.set()
        results = [r for f in futures for r in f.result()]

    assert all(r.overall_success for r in results), [r.error for r in results][:3]
    by_mode = {m: [r for r in results if r.changed and r.mode is m] for m in M}
    assert by_mode[M.DUAL_WRITE_LEGACY_PRIMARY] and by_mode[M.UNIFIED_ONLY]
    switched_at = switch.created_at
    with pg.engine.connect() as conn:
        rows = conn.execute(
            sa.select(status_history).where(status_history.c.from_status.is_not(None))
        ).all()
        pending = {r.operation_id: r for r in conn.execute(sa.select(pending_legacy_changes)).all()}
    with pg.app_engine.connect() as conn:  # the application's table
        legacy_touched = conn.execute(sa.select(sa.func.max(escrows.c.updated_at))).scalar_one()
    history_mode = {r.operation_id: r.mode for r in rows}
    for r in results:
        if r.changed:
            assert history_mode[r.operation_id] == r.mode.value
    for row in rows:
        at = as_utc(row.created_at)
        assert at is not None
        if row.mode == M.UNIFIED_ONLY.value:
            assert at > switched_at and row.operation_id in pending
            assert pending[row.operation_id].legacy_status == row.to_legacy_status
        else:
            assert row.mode == M.DUAL_WRITE_LEGACY_PRIMARY.value
            assert at < switched_at and row.operation_id not in pending
    assert len(pending) == len(by_mode[M.UNIFIED_ONLY])
    # legacy frozen since the switch
    assert as_utc(legacy_touched) is not None and as_utc(legacy_touched) < switched_at  # type: ignore[operator]


def test_a_switch_stuck_under_the_exclusive_lock_gives_up_instead_of_stalling_writers(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a switch holds the exclusive mode lock every writer waits. A switch whose
    own statements wait (here on the control row, locked by another session) must give
    up within its lock timeout and release the lock, not hold it for as long as the
    other session lives."""
    monkeypatch.setattr(control, "SWITCH_LOCK_MS", 300)
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="the row exists")
    writer = DualWriteAdapter(pg.engine, settings=pg.settings)
    with pg.engine.connect() as holder:
        tx = holder.begin()
        holder.execute(sa.text("SELECT 1 FROM unistatus_control WHERE key = 'mode' FOR UPDATE"))
        outcome: dict[str, BaseException | None] = {}

        def switch() -> None:
            try:
                set_mode(pg.engine, DualWriteMode.LEGACY_ONLY, reason="t")
                outcome["error"] = None
            except BaseException as exc:  # noqa: BLE001 - handed to the assertion below
                outcome["error"] = exc

        t = threading.Thread(target=switch)
        t.start()
        t.join(10)
        try:
            assert not t.is_alive(), "the switch still holds the exclusive mode lock"
            assert isinstance(outcome["error"], StorageError), outcome
            # The lock is free again: a write goes through while the row lock is held.
            created = writer.create_transaction("ESCROW", 1, "5", "USD")
            assert created.overall_success, created.error
        finally:
            tx.rollback()
            t.join(10)
