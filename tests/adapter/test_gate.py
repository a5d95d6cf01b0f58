"""The adapter's write gate: at most N writes in flight, the rest served in arrival order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.adapter.admission import FairGate
from unistatus.db.control import set_mode


def test_waiters_are_admitted_in_arrival_order() -> None:
    gate = FairGate(1)
    assert gate.acquire()
    admitted: list[int] = []
    threads = []
    for i in range(8):
        t = threading.Thread(target=lambda i=i: (gate.acquire(), admitted.append(i)))
        t.start()
        threads.append(t)
        while gate.waiting < i + 1:  # each one queued before the next arrives
            time.sleep(0.001)
    for _ in range(8):
        gate.release()
        time.sleep(0.005)
    gate.release()
    for t in threads:
        t.join(5)
    assert admitted == list(range(8))
    assert gate.acquire(timeout=0) and gate.waiting == 0


def test_a_release_goes_to_the_waiter_not_to_a_newcomer() -> None:
    """No barging: a slot freed while someone waits is theirs, even if another thread
    asks at that very moment (threading.Semaphore would let the newcomer win)."""
    gate = FairGate(1)
    gate.acquire()
    got: list[str] = []
    waiter = threading.Thread(target=lambda: (gate.acquire(), got.append("waiter")))
    waiter.start()
    while not gate.waiting:
        time.sleep(0.001)
    gate.release()
    assert not gate.acquire(timeout=0.05)  # the newcomer times out: the slot was handed on
    waiter.join(5)
    assert got == ["waiter"]


def test_a_timed_out_waiter_leaves_no_trace() -> None:
    gate = FairGate(2)
    assert gate.acquire() and gate.acquire()
    started = time.perf_counter()
    assert not gate.acquire(timeout=0.05)
    assert 0.04 < time.perf_counter() - started < 1
    assert gate.waiting == 0
    gate.release()
    gate.release()
    assert gate.acquire(timeout=0) and gate.acquire(timeout=0)  # both slots came back


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        FairGate(0)
    gate = FairGate(1)
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        gate.release()


def _waiting_on_row_lock(engine: sa.Engine) -> int:
    """Backends waiting on a row lock now. Asked on a connection of its own, outside any
    transaction: pg_stat_activity is a snapshot taken at its first read in a transaction,
    so polling it inside one would see the same answer for ever."""
    q = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND wait_event IN ('transactionid', 'tuple') AND pid <> pg_backend_pid() "
        "AND datname = current_database()"
    )
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def _until(reached: Callable[[], bool], what: str, deadline_seconds: float = 10.0) -> None:
    """Poll until a state is reached; fail naming it when the deadline passes first."""
    deadline = time.monotonic() + deadline_seconds
    while not reached():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {deadline_seconds}s: {what}")
        time.sleep(0.01)


def test_the_adapter_lets_n_writes_through_and_queues_the_rest(pg: Database) -> None:
    """Eight writers stuck behind a row lock: only write_concurrency=2 of them reach the
    database; a writer that cannot get a slot in time fails cleanly, writing nothing;
    once the lock goes, every queued write goes through."""
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    settings = pg.settings.model_copy(
        update={"write_concurrency": 2, "write_queue_timeout_seconds": 30.0}
    )
    a = DualWriteAdapter(pg.engine, settings=settings)
    blocked = a.create_transaction("ESCROW", 1, "5", "USD")
    others = [a.create_transaction("ESCROW", 1, "5", "USD") for _ in range(6)]
    results: list[Any] = []

    def writer(entity_id: str) -> threading.Thread:
        return threading.Thread(
            target=lambda: results.append(a.update_status(entity_id, "AWAITING_PAYMENT", "r", "t"))
        )

    with pg.engine.connect() as blocker:
        tx = blocker.begin()
        blocker.execute(
            sa.text(f"SELECT 1 FROM escrows WHERE id = {blocked.legacy_entity_id} FOR UPDATE")
        )
        # The two writers of the blocked row go first and take both slots: each is then
        # inside the database, waiting on the row lock, before the other six arrive.
        threads = [writer(blocked.entity_id) for _ in range(2)]
        for t in threads:
            t.start()
        _until(lambda: _waiting_on_row_lock(pg.engine) == 2, "two writers on the row lock")
        assert a.gate is not None and a.gate.waiting == 0
        queued = [writer(c.entity_id) for c in others]
        for t in queued:
            t.start()
        _until(lambda: a.gate is not None and a.gate.waiting == 6, "six writers queued")
        threads += queued
        # Nothing left the gate: the two slots are still held by the blocked writers
        # (a third writer in the database would have finished, its row is free).
        assert _waiting_on_row_lock(pg.engine) == 2 and a.gate.waiting == 6
        assert all(t.is_alive() for t in threads) and results == []
        impatient = DualWriteAdapter(
            pg.engine,
            settings=settings.model_copy(
                update={"write_concurrency": 1, "write_queue_timeout_seconds": 0.1}
            ),
        )
        impatient.gate.acquire()  # type: ignore[union-attr]  # its only slot is taken
        refused = impatient.update_status(others[0].entity_id, "CANCELLED", "r", "t")
        tx.rollback()
    for t in threads:
        t.join(10)
    assert not refused.overall_success and "no write slot within 0.1s" in (refused.error or "")
    assert len(results) == 8 and all(r.overall_success for r in results)
    assert sum(r.changed for r in results) == 7  # the second write to `blocked` is a no-op
    with pg.engine.connect() as conn:
        statuses = conn.execute(sa.text("SELECT DISTINCT status FROM escrows")).scalars().all()
    assert statuses == ["PAYMENT_PENDING"]  # legacy for AWAITING_PAYMENT; none CANCELLED


def test_settings_choose_the_gate(sqlite_db: Database, pg: Database) -> None:
    assert DualWriteAdapter(sqlite_db.engine, settings=sqlite_db.settings).gate.slots == 1  # type: ignore[union-attr]
    assert DualWriteAdapter(pg.engine, settings=pg.settings).gate.slots == 4  # type: ignore[union-attr]
    unlimited = pg.settings.model_copy(update={"write_concurrency": 0})
    assert DualWriteAdapter(pg.engine, settings=unlimited).gate is None


def test_write_concurrency_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from unistatus.config import load_settings
    from unistatus.errors import ConfigError

    monkeypatch.setenv("UNISTATUS_WRITE_CONCURRENCY", "12")
    assert load_settings().write_concurrency == 12
    monkeypatch.setenv("UNISTATUS_WRITE_CONCURRENCY", "")  # empty: not set, the default
    assert load_settings().write_concurrency is None
    monkeypatch.setenv("UNISTATUS_WRITE_CONCURRENCY", "-1")
    with pytest.raises(ConfigError, match="write_concurrency"):
        load_settings()
