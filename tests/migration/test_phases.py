"""Phases: gates measured from real data (adapter writes, stats, checks, backfill)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import IN_EVERY_LAYOUT, Database
from support.stats_data import record_latency
from unistatus.adapter.core import DualWriteAdapter, OperationEvent
from unistatus.backfill import run_backfill
from unistatus.config import load_settings
from unistatus.db.control import get_mode, history, set_mode
from unistatus.db.server_clock import database_now
from unistatus.db.tables import cashouts, escrows, repair_queue
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import GateError, InputError, ModeError
from unistatus.migration import gates, phases
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.check import run_check
from unistatus.migration.retire import retire_legacy_columns, undo_cleanup
from unistatus.observe.stats import OperationStats

M = DualWriteMode


def _gates(status: phases.PhaseStatus) -> dict[str, phases.Gate]:
    return {g.name: g for g in status.gates}


def _writes(
    db: Database, n: int = 20, *, errors: int = 0, every_system: bool = False
) -> DualWriteAdapter:
    """Real adapter traffic, recorded by OperationStats and flushed: ``n`` cashouts walked
    a step (and, ``every_system``, ``n`` escrows and exchanges created: each system's own
    gates have figures of their own)."""
    # Recorded by the test's own OperationStats (to inject errors), not the default one.
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    stats = OperationStats(db.engine, process_id="test", start=False).attach(adapter)
    for i in range(n):
        r = adapter.create_transaction("WALLET_CASHOUT", i + 1, Decimal("10.5"), "USD")
        assert r.overall_success
        assert adapter.update_status(r.entity_id, "OTP_PENDING", "otp sent", "test").overall_success
        for other in ("ESCROW", "EXCHANGE") if every_system else ():
            assert adapter.create_transaction(other, i + 1, Decimal("3"), "EUR").overall_success
    for _ in range(errors):
        stats.record(OperationEvent("update_status", adapter.mode, False, 3.0, error="boom"))
    stats.flush()
    return adapter


def _legacy_history(db: Database, n: int = 30) -> None:
    """Legacy rows that existed before dual-write (what the backfill copies)."""
    now = datetime.now(UTC)
    with db.app_engine.begin() as conn:
        conn.execute(
            sa.insert(escrows),
            [
                {
                    "user_id": i + 1,
                    "amount": Decimal("3.25"),
                    "currency": "EUR",
                    "status": "ACTIVE",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n)
            ],
        )


def test_fresh_install_is_phase_0(db: Database) -> None:
    status = phases.phase_status(db.engine, db.settings)
    assert status.phase == 0 and status.mode is M.LEGACY_ONLY and status.next_phase == 1
    d = status.as_dict()
    assert d["phase"] == 0 and d["mode"] == "LEGACY_ONLY"
    assert d["gates"] == [
        {
            "name": "mapping_validation",
            "value": "100%",
            "threshold": "100%",
            "passed": True,
            "detail": None,
        },
        {
            "name": "legacy_tables",
            "value": "fit",
            "threshold": "fit",
            "passed": True,
            "detail": None,
        },
    ]
    change = phases.advance(db.engine, db.settings, actor="alice")
    assert (change.from_phase, change.to_phase, change.to_mode) == (
        0,
        1,
        M.DUAL_WRITE_LEGACY_PRIMARY,
    )
    assert get_mode(db.engine) is M.DUAL_WRITE_LEGACY_PRIMARY
    logged = history(db.engine, "phase")[0]
    assert logged.new_value == "1" and logged.actor == "alice"
    assert logged.metadata and logged.metadata["gates"][0]["name"] == "mapping_validation"
    assert history(db.engine, "mode")[0].new_value == M.DUAL_WRITE_LEGACY_PRIMARY.value


def test_into_phase_2_gates_fail_then_pass_on_real_data(db: Database) -> None:
    phases.advance(db.engine, db.settings, actor="t")
    gates = _gates(phases.phase_status(db.engine, db.settings))
    assert set(gates) == {
        "mapping_validation",
        "legacy_tables",
        "dual_write_on",
        "new_transactions_consistent",
        "error_rate",
        "each_system_on_its_own",
    }
    assert gates["dual_write_on"].passed
    # nothing measured yet: never passes by default
    assert gates["new_transactions_consistent"].value == "unavailable"
    assert gates["error_rate"].value == "unavailable" and not gates["error_rate"].passed
    with pytest.raises(GateError, match="new_transactions_consistent"):
        phases.advance(db.engine, db.settings, actor="t")
    assert phases.phase_status(db.engine, db.settings).phase == 1

    _writes(db, 20, errors=1)  # 1 error in 41 operations: 2.4 %
    start = phases.phase_started_at(db.engine, 1)
    # an inconsistent new transaction, made behind the adapter's back
    with db.app_engine.begin() as conn:
        conn.execute(sa.update(cashouts).where(cashouts.c.id == 3).values(status="FAILED"))
    run_check(db.engine, db.settings, since=start)
    gates = _gates(phases.phase_status(db.engine, db.settings))
    assert not gates["new_transactions_consistent"].passed
    assert gates["new_transactions_consistent"].value.startswith("95")
    assert not gates["error_rate"].passed and gates["error_rate"].value.startswith("2.4")

    with db.app_engine.begin() as conn:
        conn.execute(sa.update(cashouts).where(cashouts.c.id == 3).values(status="OTP_PENDING"))
    run_check(db.engine, db.settings, since=start, systems=["ESCROW"])  # not all systems
    gate = _gates(phases.phase_status(db.engine, db.settings))["new_transactions_consistent"]
    assert not gate.passed and "covers only ESCROW" in (gate.detail or "")
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {db.table('unistatus_operation_stats')}"))
    _writes(db, 5)
    run_check(db.engine, db.settings, since=start)
    # Every system's figures pooled pass; escrow's and exchange's own have no traffic.
    gates = _gates(phases.phase_status(db.engine, db.settings))
    assert [g.name for g in gates.values() if not g.passed] == ["each_system_on_its_own"]
    assert gates["each_system_on_its_own"].value == "ESCROW, EXCHANGE fail"
    _writes(db, 5, every_system=True)
    run_check(db.engine, db.settings, since=start)
    status = phases.phase_status(db.engine, db.settings)
    assert status.ready, [g for g in status.gates if not g.passed]
    change = phases.advance(db.engine, db.settings, actor="t", reason="phase 1 clean")
    assert change.to_phase == 2 and change.forced == []
    assert get_mode(db.engine) is M.DUAL_WRITE_LEGACY_PRIMARY


def test_force_needs_a_reason_and_is_recorded(db: Database) -> None:
    phases.advance(db.engine, db.settings, actor="t")
    with pytest.raises(InputError, match="reason"):
        phases.advance(db.engine, db.settings, actor="t", force=True)
    with pytest.raises(InputError, match="reason"):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="  ")
    assert phases.phase_status(db.engine, db.settings).phase == 1
    change = phases.advance(db.engine, db.settings, actor="bob", force=True, reason="drill")
    assert change.to_phase == 2
    forced = {"new_transactions_consistent", "error_rate", "each_system_on_its_own"}
    assert set(change.forced) == forced
    logged = history(db.engine, "phase")[0]
    assert logged.reason == "drill" and logged.actor == "bob"
    assert logged.metadata is not None
    assert set(logged.metadata["forced"]) == forced
    assert {g["name"]: g["passed"] for g in logged.metadata["gates"]}["dual_write_on"] is True


@IN_EVERY_LAYOUT
def test_into_phase_3_backfill_check_quarantine_repair(db: Database) -> None:
    _legacy_history(db, 30)
    phases.advance(db.engine, db.settings, actor="t")
    phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    gates = _gates(phases.phase_status(db.engine, db.settings))
    assert not gates["backfill_escrow"].passed and gates["backfill_escrow"].value == "0%"
    assert not gates["full_check_consistent"].passed  # no check yet
    with db.app_engine.begin() as conn:  # one unmappable legacy row: quarantined by backfill
        conn.execute(sa.update(escrows).where(escrows.c.id == 7).values(status="active"))
    run_backfill(db.engine, db.settings)
    run_check(db.engine, db.settings)
    gates = _gates(phases.phase_status(db.engine, db.settings))
    assert all(gates[f"backfill_{s}"].passed for s in ("cashout", "escrow", "exchange"))
    assert gates["quarantine"].value == 1 and not gates["quarantine"].passed
    assert not gates["full_check_consistent"].passed
    with pytest.raises(GateError):
        phases.advance(db.engine, db.settings, actor="t")

    with db.app_engine.begin() as conn:  # fix the row the legacy app broke, and re-run
        conn.execute(sa.update(escrows).where(escrows.c.id == 7).values(status="ACTIVE"))
    from unistatus.backfill import retry_quarantine

    retry_quarantine(db.engine, db.settings)
    run_check(db.engine, db.settings)
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(repair_queue).values(
                source="dual_write", error="secondary write failed", created_at=datetime.now(UTC)
            )
        )
    gates = _gates(phases.phase_status(db.engine, db.settings))
    assert gates["quarantine"].passed and gates["full_check_consistent"].passed
    assert gates["repair_queue_open"].value == 1 and not gates["repair_queue_open"].passed
    with db.engine.begin() as conn:
        conn.execute(sa.update(repair_queue).values(resolved_at=datetime.now(UTC), resolution="ok"))
    assert phases.phase_status(db.engine, db.settings).ready
    assert phases.advance(db.engine, db.settings, actor="t").to_mode is M.DUAL_WRITE_UNIFIED_PRIMARY


@IN_EVERY_LAYOUT
def test_into_phase_4_soak_latency_and_a_check_after_the_switch(db: Database) -> None:
    settings = load_settings(database_url=db.url, soak_seconds=0, p95_gate_min_operations=20)
    for _ in range(3):
        phases.advance(db.engine, settings, actor="t", force=True, reason="test setup")
    assert get_mode(db.engine) is M.DUAL_WRITE_UNIFIED_PRIMARY
    run_check(db.engine, settings)  # consistent (empty), but it must run after the switch
    gates = _gates(phases.phase_status(db.engine, settings))
    assert gates["unified_primary_soak_s"].passed
    assert gates["p95_latency_ms"].value == "unavailable"
    _writes(db, 20, every_system=True)  # each system's own p95 has enough operations
    stats = OperationStats(db.engine, process_id="slow", start=False)
    for _ in range(200):  # a slow process: p95 over the threshold
        stats.record(OperationEvent("update_status", M.DUAL_WRITE_UNIFIED_PRIMARY, True, 400.0))
    stats.flush()
    gates = _gates(phases.phase_status(db.engine, settings))
    assert not gates["p95_latency_ms"].passed and gates["p95_latency_ms"].value > 200
    with db.engine.begin() as conn:
        stats = db.table("unistatus_operation_stats")
        conn.execute(sa.text(f"DELETE FROM {stats} WHERE process_id = 'slow'"))
    run_check(db.engine, settings)
    status = phases.phase_status(db.engine, settings)
    assert status.ready, status.as_dict()
    strict = load_settings(database_url=db.url, soak_seconds=3600)
    soak = _gates(phases.phase_status(db.engine, strict))["unified_primary_soak_s"]
    assert not soak.passed
    assert phases.advance(db.engine, settings, actor="t").to_mode is M.UNIFIED_ONLY
    with pytest.raises(GateError, match="last"):
        phases.advance(db.engine, settings, actor="t", force=True, reason="x")


@IN_EVERY_LAYOUT
def test_p95_into_phase_4_counts_only_operations_since_the_switch_and_enough_of_them(
    db: Database,
) -> None:
    settings = load_settings(database_url=db.url, soak_seconds=0, p95_gate_min_operations=100)
    for _ in range(2):
        phases.advance(db.engine, settings, actor="t", force=True, reason="test setup")
    # A slow backfill hour while legacy is primary: none of it is unified primary's.
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 400.0, 300)
    phases.advance(db.engine, settings, actor="t", force=True, reason="unified primary")
    switch = history(db.engine, "mode")[0]
    assert switch.new_value == M.DUAL_WRITE_UNIFIED_PRIMARY.value
    switched = switch.created_at

    gate = _gates(phases.phase_status(db.engine, settings))["p95_latency_ms"]
    assert gate.value == "unavailable" and not gate.passed
    assert "since unified became primary" in (gate.detail or "")

    record_latency(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, 20.0, 60)
    gate = _gates(phases.phase_status(db.engine, settings))["p95_latency_ms"]
    assert not gate.passed and gate.value == 19.9  # measured (in 18..20 ms), on too few operations
    assert gate.detail == (
        f"60 operations since unified became primary ({switched.isoformat()}): "
        "at least 100 needed (p95_gate_min_operations)"
    )

    record_latency(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, 20.0, 60)
    gate = _gates(phases.phase_status(db.engine, settings))["p95_latency_ms"]
    assert gate.passed and gate.value == 19.9, gate
    assert gate.detail == f"120 operations since unified became primary ({switched.isoformat()})"


def test_stale_check_does_not_count_after_a_mode_switch(db: Database) -> None:
    settings = load_settings(database_url=db.url, soak_seconds=0)
    run_check(db.engine, settings)
    for _ in range(3):
        phases.advance(db.engine, settings, actor="t", force=True, reason="setup")
    gate = _gates(phases.phase_status(db.engine, settings))["full_check_consistent"]
    assert not gate.passed and "before" in (gate.detail or "")


def test_manual_mode_change_is_shown(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, reason="by hand")
    d = phases.phase_status(db.engine, db.settings).as_dict()
    assert d["phase"] == 0 and d["mode_matches_phase"] is False
    with pytest.raises(InputError):
        phases.advance(db.engine, db.settings, actor=" ")


@IN_EVERY_LAYOUT
def test_advance_out_of_a_hand_set_unified_only_refuses_to_skip_the_replay(db: Database) -> None:
    """Phase 0 with escrows switched to UNIFIED_ONLY by hand, a transaction created there
    (a change to replay to legacy): advancing into phase 1 (DUAL_WRITE_LEGACY_PRIMARY)
    would leave legacy without it, as `mode set` would; it is refused, even forced,
    nothing changed, and a phase rollback still replays it."""
    set_mode(db.engine, M.UNIFIED_ONLY, system="escrow", reason="by hand")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    born = adapter.create_transaction("ESCROW", 42, Decimal("10.00"), "USD")
    assert born.overall_success and born.mode is M.UNIFIED_ONLY
    with pytest.raises(ModeError, match="not in legacy yet"):
        phases.advance(db.engine, db.settings, actor="t", system="escrow", force=True, reason="go")
    with pytest.raises(ModeError, match="different modes"):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="go")
    assert get_mode(db.engine, "escrow") is M.UNIFIED_ONLY
    assert phases.phase_status(db.engine, db.settings, "escrow").phase == 0


def test_advance_refuses_a_mode_that_writes_legacy_while_its_columns_are_retired(
    db: Database, tmp_path: Path
) -> None:
    """Phase 0, every system switched to UNIFIED_ONLY by hand and the legacy status
    columns retired: phase 1 writes legacy, where every write would fail."""
    set_mode(db.engine, M.UNIFIED_ONLY, reason="by hand")
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    record_verified(db.engine, verify_archive(db.engine, out), actor="test")
    retire_legacy_columns(db.engine, db.settings)
    try:
        with pytest.raises(ModeError, match="retire legacy-columns --undo"):
            phases.advance(db.engine, db.settings, actor="t", force=True, reason="go")
        assert get_mode(db.engine) is M.UNIFIED_ONLY
    finally:
        undo_cleanup(db.engine, db.settings)


@pytest.mark.parametrize(
    ("rate", "shown"),
    [(0.000999, "0.099%"), (0.001, "0.1%"), (0.999999, "99.999%"), (1.0, "100%"), (0.0, "0%")],
)
def test_a_rate_just_under_a_bound_is_not_shown_as_the_bound(rate: float, shown: str) -> None:
    """1 error in 1,001 operations (passing "< 0.1%") was shown "0.1%", as 1 in 1,000
    (failing) is; 99.9999% (failing "100%") was shown "100%" (a probe)."""
    from unistatus.migration.gates import pct  # noqa: PLC0415

    assert pct(rate) == shown


def test_the_p95_gate_counts_the_first_operations_after_the_switch(db: Database) -> None:
    """The window's length was ``now - switched`` with ``now`` read when the gates
    began, but the window read its own, later, clock: it began that much after the
    switch and left out unified primary's first operations (found when a gate measured
    before it took 30 ms more)."""
    settings = load_settings(database_url=db.url, p95_gate_min_operations=10)
    with db.engine.connect() as conn:
        switched = database_now(conn)
    time.sleep(0.01)  # SQLite's clock reads whole milliseconds: the operations after it
    record_latency(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, 20.0, 30)
    with db.engine.connect() as conn:
        now = database_now(conn)
    # The gates before it, longer than the operations took to record: the old window
    # then began after every one of them, however slow the machine.
    time.sleep(max(0.5, 2 * (now - switched).total_seconds()))
    gate = gates.gate_p95(db.engine, settings, switched, None, now)
    assert gate.passed and (gate.detail or "").startswith("30 operations since"), gate
