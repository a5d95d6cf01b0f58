"""Rollback: each phase's procedure, replay of UNIFIED_ONLY changes, emergency rollback."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import sqlalchemy as sa

from conftest import IN_EVERY_LAYOUT, PG_IN_EVERY_LAYOUT, Database
from support.adapters import adapter_in
from support.blocking import queue_behind_any_holder, wait_until_it_blocks
from support.engines import at_repeatable_read
from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill.control import PAUSE_KEY
from unistatus.db.control import get_mode, history, set_mode, write_mode
from unistatus.db.engine import create_engine
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.mode_reads import read_value
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.domain.consistency import compare
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError, InputError, ModeError
from unistatus.migration import phases, rollback
from unistatus.migration.replay import pending_count, replay_pending

M = DualWriteMode
U = unified_transactions

# A status walk per type that can go on as long as needed (cycles), then ends final.
WALKS = {
    "WALLET_CASHOUT": ["OTP_PENDING", "AWAITING_APPROVAL", "ADMIN_PENDING", "FUNDS_HELD"]
    + ["PROCESSING", "AWAITING_RESPONSE"] * 3
    + ["SUCCESS"],
    "ESCROW": ["AWAITING_PAYMENT", "PARTIAL_PAYMENT", "AWAITING_PAYMENT", "PAYMENT_CONFIRMED"]
    + ["FUNDS_HELD", "RELEASE_PENDING"] * 3
    + ["SUCCESS"],
    "EXCHANGE": ["AWAITING_PAYMENT", "PAYMENT_CONFIRMED", "ADMIN_PENDING", "PROCESSING", "SUCCESS"],
}


def _to_phase(db: Database, n: int) -> None:
    for _ in range(n):
        phases.advance(db.engine, db.settings, actor="setup", force=True, reason="test setup")


def _assert_all_consistent(db: Database) -> int:
    """Every unified row has a legacy row that agrees with it (the spec's rule)."""
    tables = resolve_legacy_tables(db.engine, db.settings)
    checked = 0
    with db.engine.connect() as conn:
        unified = [dict(r) for r in conn.execute(sa.select(U)).mappings()]
        assert all(u["legacy_id"] is not None for u in unified), "a unified row has no legacy row"
        for system, lt in tables.items():
            legacy = {
                r["id"]: dict(r)
                for r in conn.execute(
                    sa.select(
                        lt.id.label("id"),
                        lt.status.label("status"),  # type: ignore[union-attr]
                        lt.user_id.label("user_id"),
                        lt.amount.label("amount"),
                        lt.currency.label("currency"),
                    )
                ).mappings()
            }
            for u in unified:
                if u["legacy_system"] != system.value:
                    continue
                found = compare(system, legacy.get(u["legacy_id"]), u)
                assert not found, [i.as_dict() for i in found]
                checked += 1
            assert len(legacy) == sum(1 for u in unified if u["legacy_system"] == system.value)
    return checked


def test_rollback_from_1_turns_dual_write_off(db: Database) -> None:
    _to_phase(db, 1)
    change = rollback.rollback_current_phase(
        db.engine, db.settings, actor="ops", reason="mapping bug"
    )
    assert (change.from_phase, change.to_phase, change.to_mode) == (1, 0, M.LEGACY_ONLY)
    assert get_mode(db.engine) is M.LEGACY_ONLY
    logged = history(db.engine, "phase")[0]
    assert logged.actor == "ops" and logged.reason == "mapping bug"
    assert logged.metadata and logged.metadata["action"] == "rollback"
    with pytest.raises(GateError, match="nothing to roll back"):
        rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="again")


def test_rollback_from_2_pauses_backfill_keeps_dual_write(db: Database) -> None:
    _to_phase(db, 2)
    change = rollback.rollback_current_phase(
        db.engine, db.settings, actor="ops", reason="slow backfill"
    )
    assert (change.to_phase, change.to_mode) == (1, M.DUAL_WRITE_LEGACY_PRIMARY)
    assert any("backfill undo" in n for n in change.notes)
    with db.engine.connect() as conn:
        assert read_value(conn, PAUSE_KEY) == "true"
    assert get_mode(db.engine) is M.DUAL_WRITE_LEGACY_PRIMARY
    again = phases.advance(db.engine, db.settings, actor="ops", force=True, reason="retry")
    assert any("resumed" in n for n in again.notes)
    with db.engine.connect() as conn:
        assert read_value(conn, PAUSE_KEY) == "false"


def test_rollback_from_3_reads_back_to_legacy(db: Database) -> None:
    _to_phase(db, 3)
    assert get_mode(db.engine) is M.DUAL_WRITE_UNIFIED_PRIMARY
    change = rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="latency")
    assert (change.to_phase, change.to_mode) == (2, M.DUAL_WRITE_LEGACY_PRIMARY)
    assert get_mode(db.engine) is M.DUAL_WRITE_LEGACY_PRIMARY


def test_rollback_needs_a_reason_and_changes_nothing_without(db: Database) -> None:
    _to_phase(db, 3)
    for reason in ("", "   "):
        with pytest.raises(InputError):
            rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason=reason)
    with pytest.raises(InputError):
        rollback.emergency_rollback(db.engine, db.settings, actor="ops", reason="")
    assert phases.phase_status(db.engine, db.settings).phase == 3
    assert get_mode(db.engine) is M.DUAL_WRITE_UNIFIED_PRIMARY


def _walk(adapter: DualWriteAdapter, entity: str, ttype: str, log: dict[str, str]) -> int:
    n = 0
    for status in WALKS[ttype]:
        r = adapter.update_status(entity, status, "walk", "test")
        assert r.overall_success, r.error
        log[entity] = status
        n += 1
    return n


@IN_EVERY_LAYOUT
def test_rollback_from_4_replays_everything(db: Database) -> None:
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    _to_phase(db, 1)
    adapter.modes.refresh()
    before = [adapter.create_transaction(t, 1, "2.5", "USD") for t in WALKS]
    _to_phase(db, 3)
    adapter.modes.refresh()
    assert get_mode(db.engine) is M.UNIFIED_ONLY
    final: dict[str, str] = {}
    changes = 0
    for r in before:  # legacy-backed transactions walked while legacy is frozen
        assert r.entity_id
        assert r.legacy_system is not None
        changes += _walk(adapter, r.entity_id, r.legacy_system.transaction_type.value, final)
    for ttype in WALKS:  # born unified
        for i in range(3):
            r = adapter.create_transaction(ttype, 10 + i, Decimal("7.00000001"), "USDT")
            assert r.entity_id and r.entity_id.startswith("UTX9") and r.legacy_entity_id is None
            changes += 1 + _walk(adapter, r.entity_id, ttype, final)
    assert pending_count(db.engine) == changes
    change = rollback.rollback_current_phase(
        db.engine, db.settings, actor="ops", reason="retire later"
    )
    assert (change.to_phase, change.to_mode) == (2, M.DUAL_WRITE_LEGACY_PRIMARY)
    replay = change.details["replay"]
    assert replay["replayed"] == changes and replay["legacy_created"] == 9
    assert pending_count(db.engine) == 0
    assert _assert_all_consistent(db) == 12
    adapter.modes.refresh()
    for entity, status in final.items():  # the same ids still work, now legacy primary
        got, meta = adapter.get_transaction_status(entity)
        assert got is not None and got.value == status and meta["source"] == "legacy"


@IN_EVERY_LAYOUT
def test_emergency_rollback_replays_then_legacy_only(db: Database) -> None:
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    _to_phase(db, 4)
    adapter.modes.refresh()
    r = adapter.create_transaction("ESCROW", 5, "1", "EUR")
    adapter.update_status(r.entity_id, "AWAITING_PAYMENT", "x", "t")
    result = rollback.emergency_rollback(db.engine, db.settings, actor="oncall", reason="p95 spike")
    assert result["from_phase"] == 4 and result["to_mode"] == "LEGACY_ONLY"
    assert result["replay"]["replayed"] == 2
    assert get_mode(db.engine) is M.LEGACY_ONLY
    assert phases.phase_status(db.engine, db.settings).phase == 0
    logged = history(db.engine, "phase")[0]
    assert logged.metadata and logged.metadata["emergency"] is True and logged.actor == "oncall"
    _assert_all_consistent(db)


def test_emergency_rollback_reaches_a_running_adapter_within_a_second(db: Database) -> None:
    _to_phase(db, 3)
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    assert adapter.mode is M.DUAL_WRITE_UNIFIED_PRIMARY
    stop = threading.Event()
    modes: list[tuple[float, M]] = []

    def writer() -> None:
        while not stop.is_set():
            r = adapter.create_transaction("EXCHANGE", 1, "1", "USD")
            modes.append((time.monotonic(), r.mode))
            time.sleep(0.01)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.2)
        rollback.emergency_rollback(db.engine, db.settings, actor="oncall", reason="drill")
        switched = time.monotonic()
        deadline = switched + 3
        while adapter.mode is not M.LEGACY_ONLY and time.monotonic() < deadline:
            time.sleep(0.02)
        seen = time.monotonic() - switched
        time.sleep(0.1)
    finally:
        stop.set()
        t.join()
    assert seen <= db.settings.mode_refresh_seconds + 0.3
    assert modes[-1][1] is M.LEGACY_ONLY
    # no write committed under the old mode after the switch
    late = [m for at, m in modes if at > switched + 0.05]
    assert late and all(m is M.LEGACY_ONLY for m in late)


@PG_IN_EVERY_LAYOUT
@pytest.mark.slow
def test_zero_lost_writes_with_writers_running_during_rollback(pg: Database) -> None:
    """Thousands of UNIFIED_ONLY changes, writers still busy while rolling back from 4."""
    db = pg
    adapter0 = DualWriteAdapter(db.engine, settings=db.settings)
    _to_phase(db, 1)
    adapter0.modes.refresh()
    seeded = [adapter0.create_transaction("WALLET_CASHOUT", 1, "9.99", "USD") for _ in range(40)]
    _to_phase(db, 3)
    assert get_mode(db.engine) is M.UNIFIED_ONLY

    finals: dict[str, str] = {}
    lock = threading.Lock()
    counts = {"changes": 0, "failed": 0}
    stop = threading.Event()
    rolled_back = threading.Event()

    def worker(k: int) -> None:
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        mine: dict[str, str] = {}
        n = 0
        i = 0
        # legacy-backed rows (seeded), then born-unified ones, until stopped
        for r in seeded[k::4]:
            assert r.entity_id
            n += _walk(adapter, r.entity_id, "WALLET_CASHOUT", mine)
        while not stop.is_set():
            ttype = list(WALKS)[i % 3]
            i += 1
            r = adapter.create_transaction(ttype, 100 + k, "12.5", "EUR")
            if not r.overall_success:
                with lock:
                    counts["failed"] += 1
                continue
            assert r.entity_id
            n += 1 + _walk(adapter, r.entity_id, ttype, mine)
        with lock:
            finals.update(mine)
            counts["changes"] += n

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30  # a busy CI machine writes slower: at least 1000 below
    while pending_count(db.engine) < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    pending_before = pending_count(db.engine)
    change = rollback.rollback_current_phase(
        db.engine, db.settings, actor="ops", reason="zero-loss test"
    )
    rolled_back.set()
    time.sleep(0.5)  # writers go on under the new mode
    stop.set()
    for t in threads:
        t.join()
    assert counts["failed"] == 0
    assert pending_before >= 1000, pending_before
    assert change.details["replay"]["replayed"] >= pending_before
    assert pending_count(db.engine) == 0
    with db.engine.connect() as conn:
        n_pending = conn.execute(
            sa.select(sa.func.count()).select_from(pending_legacy_changes)
        ).scalar_one()
        statuses = dict(conn.execute(sa.select(U.c.id, U.c.status)).all())
    assert n_pending == change.details["replay"]["replayed"]
    # every change any writer made is the state of both sides
    assert {e: statuses[e] for e in finals} == finals
    checked = _assert_all_consistent(db)
    assert checked == len(statuses) >= 40


@IN_EVERY_LAYOUT
def test_replay_after_a_hand_switch_keeps_newer_dual_writes(db: Database) -> None:
    """Someone left UNIFIED_ONLY with `mode set`, skipping the replay: the dual writes made
    since then are newer than the pending changes, and the replay must not undo them."""
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    _to_phase(db, 1)
    adapter.modes.refresh()
    r = adapter.create_transaction("WALLET_CASHOUT", 3, "4", "USD")
    assert r.entity_id
    _to_phase(db, 3)
    adapter.modes.refresh()
    assert adapter.update_status(r.entity_id, "OTP_PENDING", "w", "t").overall_success
    # set_mode refuses this (see test_set_mode_refuses_to_skip_the_replay); simulate an
    # operator who bypassed it by writing the control row directly.
    with pytest.raises(ModeError, match="not in legacy yet"):
        set_mode(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, reason="by hand, no replay")
    with db.engine.begin() as conn:
        write_mode(conn, M.DUAL_WRITE_UNIFIED_PRIMARY, actor="t", reason="bypass")
    adapter.modes.refresh()
    assert adapter.update_status(r.entity_id, "FUNDS_HELD", "w", "t").overall_success
    assert pending_count(db.engine) == 1
    replay = replay_pending(db.engine, db.settings)
    assert replay["replayed"] == 1
    status, meta = adapter.get_transaction_status(f"cashout:{r.legacy_entity_id}")
    assert status is not None and status.value == "FUNDS_HELD"
    assert meta["legacy_status"] == "APPROVED"
    _assert_all_consistent(db)


@pytest.mark.postgres
def test_a_rollback_on_a_repeatable_read_engine_replays_a_change_committed_while_it_waits(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application's transaction changes a status in UNIFIED_ONLY (a change to replay
    to legacy) and is still open as an emergency rollback begins: the rollback waits for
    it (the mode lock), then replays. On an engine (or a server, a role) whose
    transactions default to REPEATABLE READ the replay's snapshot was taken before it
    waited: it found nothing pending, switched to LEGACY_ONLY, and the change never
    reached legacy (a lost write). The package's write transactions are now READ
    COMMITTED whatever the default."""
    queue_behind_any_holder(monkeypatch)  # the application's transaction opens first
    engine = create_engine(at_repeatable_read(pg.url), schema=pg.settings.schema)
    a = adapter_in(pg, M.DUAL_WRITE_UNIFIED_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert created.entity_id is not None and created.legacy_entity_id is not None
    set_mode(pg.engine, M.UNIFIED_ONLY, reason="t", actor="t", force=True)
    a.modes.refresh()
    try:
        with pg.app_engine.connect() as conn, ThreadPoolExecutor(1) as pool:
            tx = conn.begin()
            pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            changed = a.update_status(created.entity_id, "OTP_PENDING", "t", "t", connection=conn)
            assert changed.overall_success, changed.error
            rolling_back = pool.submit(
                rollback.emergency_rollback, engine, pg.settings, actor="ops", reason="t"
            )
            assert wait_until_it_blocks(pg.engine, pid), "the rollback did not wait"
            tx.commit()
            rolling_back.result(timeout=60)
        assert get_mode(pg.engine) is M.LEGACY_ONLY
        assert pending_count(pg.engine) == 0, "a change committed as it waited was not replayed"
        legacy = resolve_legacy_tables(pg.engine, pg.settings)[LegacySystemType.CASHOUT]
        with pg.engine.connect() as conn:
            status = conn.execute(
                sa.select(legacy.read("status")).where(legacy.id == created.legacy_entity_id)
            ).scalar_one()
        assert status == "OTP_PENDING"
    finally:
        engine.dispose()


def test_an_emergency_rollback_is_not_blocked_by_a_table_with_nothing_to_replay(
    db: Database,
) -> None:
    """A column of cashouts renamed behind unistatus in phase 1: every emergency
    rollback, of every system or of escrows alone, refused before switching anything
    ("legacy table 'cashouts' ..."): the replay reflected every legacy table first, also
    those with nothing to replay (a probe). The way back must not be blocked."""
    _to_phase(db, 1)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts RENAME COLUMN amount TO amount_usd")
    try:
        rollback.emergency_rollback(
            db.engine, db.settings, actor="t", reason="escrows only", system="escrow"
        )
        assert get_mode(db.engine, LegacySystemType.ESCROW) is M.LEGACY_ONLY
        assert get_mode(db.engine, LegacySystemType.CASHOUT) is M.DUAL_WRITE_LEGACY_PRIMARY
        rollback.emergency_rollback(db.engine, db.settings, actor="t", reason="all of it")
        assert all(get_mode(db.engine, s) is M.LEGACY_ONLY for s in LegacySystemType)
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE cashouts RENAME COLUMN amount_usd TO amount")
