"""Phase gates read only a check that started after the last mode, phase or rollback
change (issue 10, section 7).

The repro: a full, consistent check; ``rollback --emergency``; legacy-only writes that
unified misses; ``phase advance`` 0 -> 1 -> 2. ``phase status`` said "ready" for unified
primary on the check taken before the rollback.
"""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill import run_backfill
from unistatus.cli import app
from unistatus.clock import utcnow
from unistatus.db.control import get_mode, set_mode
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError
from unistatus.migration import phases
from unistatus.migration.check import run_check
from unistatus.migration.rollback import emergency_rollback
from unistatus.migration.verify import verify_changes

M = DualWriteMode


def _gate(db: Database, name: str, settings: object = None) -> phases.Gate:
    status = phases.phase_status(db.engine, settings or db.settings)  # type: ignore[arg-type]
    return {g.name: g for g in status.gates}[name]


def _write(db: Database, n: int) -> None:
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    for i in range(n):
        r = adapter.create_transaction("WALLET_CASHOUT", i + 1, Decimal("10.5"), "USD")
        assert r.overall_success
        assert adapter.update_status(r.entity_id, "OTP_PENDING", "otp", "test").overall_success


def _phase_2_with_a_clean_check(db: Database) -> None:
    phases.advance(db.engine, db.settings, actor="t", reason="phase 1")
    _write(db, 5)
    phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    run_backfill(db.engine, db.settings)
    assert run_check(db.engine, db.settings).is_consistent
    gate = _gate(db, "full_check_consistent")
    assert gate.passed, gate


def test_a_check_from_before_an_emergency_rollback_does_not_open_unified_primary(
    db: Database,
) -> None:
    _phase_2_with_a_clean_check(db)
    emergency_rollback(db.engine, db.settings, actor="oncall", reason="drill")
    _write(db, 3)  # legacy only: unified misses these
    phases.advance(db.engine, db.settings, actor="t", reason="back to dual write")
    phases.advance(db.engine, db.settings, actor="t", force=True, reason="back to backfill")

    result = CliRunner().invoke(
        app, ["--database-url", db.url, "phase", "status", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 1, result.output
    status = json.loads(result.stdout)
    assert status["phase"] == 2 and status["ready"] is False
    gate = {g["name"]: g for g in status["gates"]}["full_check_consistent"]
    assert gate["passed"] is False and gate["value"] == "unavailable"
    assert "before the last" in gate["detail"]
    assert gate["detail"].endswith("run `unistatus check` again")

    # A fresh check sees what the legacy-only writes left behind.
    fresh = run_check(db.engine, db.settings)
    assert fresh.inconsistencies["missing_unified"] == 3
    assert not _gate(db, "full_check_consistent").passed


def test_a_mode_switched_by_hand_after_the_check_invalidates_it(db: Database) -> None:
    _phase_2_with_a_clean_check(db)
    set_mode(db.engine, M.LEGACY_ONLY, reason="by hand")
    _write(db, 2)
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="by hand, back")
    gate = _gate(db, "full_check_consistent")
    assert not gate.passed and "before the last" in (gate.detail or "")
    run_check(db.engine, db.settings)  # started after the switch: it counts (and fails)
    gate = _gate(db, "full_check_consistent")
    assert gate.value != "unavailable" and not gate.passed


def test_into_phase_2_a_check_since_phase_1_but_before_a_mode_switch_does_not_count(
    db: Database,
) -> None:
    phases.advance(db.engine, db.settings, actor="t", reason="phase 1")
    _write(db, 3)
    start = phases.phase_started_at(db.engine, 1)
    run_check(db.engine, db.settings, since=start)
    assert _gate(db, "new_transactions_consistent").passed
    set_mode(db.engine, M.LEGACY_ONLY, reason="incident")
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="incident over")
    assert not _gate(db, "new_transactions_consistent").passed


def test_an_advance_whose_gates_went_stale_before_the_lock_is_refused(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gates are measured, then a `mode set LEGACY_ONLY` (and legacy-only writes)
    commits before the advance takes the exclusive lock: the gates describe a state
    that is gone, so the advance is refused, forced or not, and nothing changes."""
    phases.advance(db.engine, db.settings, actor="t", reason="setup", force=True)
    phases.advance(db.engine, db.settings, actor="t", reason="setup", force=True)
    measured = phases.phase_status

    def measure_then_switch(engine: Any, settings: Any, system: Any = None) -> phases.PhaseStatus:
        status = measured(engine, settings, system)
        set_mode(db.engine, M.LEGACY_ONLY, reason="incident meanwhile")
        return status

    monkeypatch.setattr(phases, "phase_status", measure_then_switch)
    with pytest.raises(GateError, match="changed while the gates were measured"):
        phases.advance(db.engine, db.settings, actor="t", reason="go", force=True)
    monkeypatch.undo()
    assert phases.phase_status(db.engine, db.settings).phase == 2
    assert get_mode(db.engine) is M.LEGACY_ONLY


class _Stop(Exception):
    """Ends a check run as a kill would, its positions committed."""


def test_a_resumed_run_begun_before_a_newer_check_does_not_hide_its_mismatch(
    db: Database,
) -> None:
    """A run counts cashouts, then stops (a kill); a cashout goes wrong; a full check sees
    it; the old run is resumed and finishes last, its cashouts counted before the damage.
    The gates read the check begun last, which saw the mismatch, not the one stored last."""
    _phase_2_with_a_clean_check(db)
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    for i in range(4):  # escrows: a system still being counted when the run stops
        assert adapter.create_transaction("ESCROW", i + 1, Decimal("3"), "EUR").overall_success
    cashouts_counted = threading.Event()
    ranges: list[LegacySystemType] = []

    def stop(system: LegacySystemType, pos: object) -> None:
        ranges.append(system)
        if ranges.count(LegacySystemType.CASHOUT) == 3:  # ids 1..5 in ranges of 2
            cashouts_counted.set()
        if system is LegacySystemType.ESCROW:  # (PostgreSQL counts the systems at once)
            assert cashouts_counted.wait(10)
            raise _Stop

    with pytest.raises(_Stop):
        run_check(db.engine, db.settings, chunk=2, on_range=stop)
    with db.engine.begin() as conn:
        first = conn.execute(
            sa.select(sa.func.min(U.c.legacy_id)).where(U.c.legacy_system == "CASHOUT")
        ).scalar_one()
        conn.execute(
            sa.update(U)
            .where(U.c.legacy_system == "CASHOUT", U.c.legacy_id == first)
            .values(status="FAILED")
        )
    assert not run_check(db.engine, db.settings).is_consistent
    assert run_check(db.engine, db.settings, resume=True).is_consistent
    for system in (None, "cashout"):
        status = phases.phase_status(db.engine, db.settings, system)
        gate = {g.name: g for g in status.gates}["full_check_consistent"]
        assert not gate.passed, (system, gate)


def test_continuous_verification_rounds_are_not_the_check_into_phase_2(db: Database) -> None:
    """Phase 1: `check --since phase-start` of every system opens each system's gate into
    phase 2; a round of continuous verification afterwards (changes since its watermark,
    not since the phase began) neither closes it nor stands in for that check."""
    phases.advance(db.engine, db.settings, actor="t", reason="phase 1")
    _write(db, 3)
    since = phases.resolve_since(db.engine, "phase-start")
    assert run_check(db.engine, db.settings, since=since).is_consistent
    for system in (None, "cashout"):
        gate = _new_transactions_gate(db, system)
        assert gate.passed, (system, gate)
    _write(db, 1)
    verify_changes(db.engine, db.settings, busy_max_wait=0)
    for system in (None, "cashout"):
        gate = _new_transactions_gate(db, system)
        assert gate.passed, (system, gate)


def _new_transactions_gate(db: Database, system: str | None) -> phases.Gate:
    status = phases.phase_status(db.engine, db.settings, system)
    return {g.name: g for g in status.gates}["new_transactions_consistent"]


def test_a_newer_narrower_check_that_found_a_mismatch_closes_a_systems_gate(
    db: Database,
) -> None:
    """Phase 1: `check --since phase-start` passes; then a check of the last hour of
    cashouts finds a mismatch. Cashout's gate into phase 2 reads that newer check (it
    fails, as it does on any narrower check), never the older one that passed."""
    phases.advance(db.engine, db.settings, actor="t", reason="phase 1")
    _write(db, 3)
    since = phases.resolve_since(db.engine, "phase-start")
    assert run_check(db.engine, db.settings, since=since).is_consistent
    assert _new_transactions_gate(db, "cashout").passed
    after = utcnow()  # the narrower check's start: after the phase began
    with db.engine.begin() as conn:
        damaged = {"status": "FAILED", "updated_at": utcnow()}
        conn.execute(sa.update(U).where(U.c.legacy_system == "CASHOUT").values(**damaged))
    narrower = run_check(db.engine, db.settings, since=after, systems="cashout")
    assert not narrower.is_consistent
    assert not _new_transactions_gate(db, "cashout").passed
