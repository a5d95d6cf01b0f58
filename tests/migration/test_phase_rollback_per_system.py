"""One system at a time (issue 14 §1), the rest of it: `phase rollback --system S` by
S's own phase's procedure, the gates that count open rows counting the judged system's
only, and the automated responses leaving a system's phase consistent with its mode.
Real adapters, real replays, real alerts; both backends."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from support.phases import to_phase
from support.stats_data import record_latency, seed_pairs
from unistatus import DualWriteAdapter
from unistatus.backfill.control import is_paused, pause_key
from unistatus.cli import app
from unistatus.clock import utcnow
from unistatus.config import AutoResponses
from unistatus.db.control import get_modes, history
from unistatus.db.mode_reads import read_value
from unistatus.db.tables import repair_queue
from unistatus.db.tables_backfill import backfill_quarantine
from unistatus.db.tables_replay import replay_conflicts
from unistatus.domain.ids import derive_utx_id
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.domain.statuses import LegacySystemType as S
from unistatus.errors import GateError
from unistatus.migration.check import run_check
from unistatus.migration.phases import ROLLBACK_KEY, advance, phase_status, read_phases
from unistatus.migration.replay import pending_count
from unistatus.migration.rollback import rollback_current_phase
from unistatus.observe import alerts
from unistatus.observe.notify import Notifier

TYPES = {S.CASHOUT: "WALLET_CASHOUT", S.ESCROW: "ESCROW", S.EXCHANGE: "EXCHANGE"}
NEXT = {S.CASHOUT: "PROCESSING", S.ESCROW: "CANCELLED", S.EXCHANGE: "CANCELLED"}


def phases(db: Database) -> dict[S, int]:
    with db.engine.connect() as conn:
        return read_phases(conn)


def adapter_of(db: Database) -> DualWriteAdapter:
    settings = db.settings.model_copy(update={"mode_refresh_seconds": 0.1})
    return DualWriteAdapter(db.engine, settings=settings, record_stats=False)


def frozen_writes(adapter: DualWriteAdapter, system: S, n: int) -> None:
    """``n`` transactions of ``system`` created (half moved on) while legacy is frozen."""
    ids = []
    for i in range(n):
        r = adapter.create_transaction(TYPES[system], 100 + i, "5", "USD")
        assert r.overall_success and r.mode is M.UNIFIED_ONLY and r.entity_id, r
        ids.append(r.entity_id)
    for utx in ids[::2]:
        assert adapter.update_status(utx, NEXT[system], "go", "test").overall_success


def consistent(db: Database, system: S) -> None:
    report = run_check(db.engine, db.settings, systems=[system], store=False)
    assert report.total > 0 and report.consistent == report.total, report.as_dict()


def cli(db: Database, *args: str) -> Any:
    return CliRunner().invoke(app, ["--database-url", db.url, *args], catch_exceptions=False)


# --- phase rollback --system ------------------------------------------------------------


def test_rollback_of_escrow_from_4_replays_only_escrows_changes(db: Database) -> None:
    """Escrows and cashouts both in phase 4 (legacy frozen for both, changes pending for
    both): escrow's rollback replays escrow's changes only and lands escrow in phase 2;
    cashout's phase, mode and pending changes are as they were."""
    to_phase(db.engine, 1)
    to_phase(db.engine, 4, S.ESCROW)
    to_phase(db.engine, 4, S.CASHOUT)
    adapter = adapter_of(db)
    frozen_writes(adapter, S.ESCROW, 4)
    frozen_writes(adapter, S.CASHOUT, 3)
    escrow_pending, cashout_pending = (
        pending_count(db.engine, S.ESCROW),
        pending_count(db.engine, S.CASHOUT),
    )
    assert (escrow_pending, cashout_pending) == (6, 5)
    logged = len(history(db.engine, limit=1000))

    change = rollback_current_phase(
        db.engine, db.settings, actor="oncall", reason="escrow p95", system="escrow"
    )
    assert (change.system, change.from_phase, change.to_phase) == (S.ESCROW, 4, 2)
    assert (change.from_mode, change.to_mode) == (M.UNIFIED_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY)
    assert change.details["replay"]["replayed"] == escrow_pending
    assert change.details["replay"]["system"] == "ESCROW"
    assert pending_count(db.engine, S.ESCROW) == 0
    assert pending_count(db.engine, S.CASHOUT) == cashout_pending  # untouched
    assert phases(db) == {S.CASHOUT: 4, S.ESCROW: 2, S.EXCHANGE: 1}
    assert get_modes(db.engine) == {
        S.CASHOUT: M.UNIFIED_ONLY,
        S.ESCROW: M.DUAL_WRITE_LEGACY_PRIMARY,
        S.EXCHANGE: M.DUAL_WRITE_LEGACY_PRIMARY,
    }
    consistent(db, S.ESCROW)  # nothing of escrow's lost
    # The log: escrow's phase and mode, the rollback naming escrow; nothing of cashout's.
    new = history(db.engine, limit=1000)[: len(history(db.engine, limit=1000)) - logged]
    assert sorted(c.key for c in new) == [ROLLBACK_KEY, "mode.ESCROW", "phase.ESCROW"]
    for c in new:
        assert c.metadata is not None and c.metadata["system"] == "ESCROW", c
        assert c.metadata["from_phase"] == 4 and c.metadata["to_phase"] == 2
    rollback_row = next(c for c in new if c.key == ROLLBACK_KEY)
    assert rollback_row.new_value == "ESCROW: phase 4 -> 2, DUAL_WRITE_LEGACY_PRIMARY"
    # Writers follow: escrows dual-write again, cashouts stay frozen.
    adapter.modes.refresh(S.ESCROW)
    assert adapter.create_transaction("ESCROW", 9, "1", "USD").mode is (M.DUAL_WRITE_LEGACY_PRIMARY)
    assert adapter.create_transaction("WALLET_CASHOUT", 9, "1", "USD").mode is M.UNIFIED_ONLY


def test_rollback_of_one_system_from_2_pauses_its_backfill_only(db: Database) -> None:
    to_phase(db.engine, 2)
    change = rollback_current_phase(
        db.engine, db.settings, actor="oncall", reason="too slow", system=S.CASHOUT
    )
    assert (change.from_phase, change.to_phase, change.to_mode) == (
        2,
        1,
        M.DUAL_WRITE_LEGACY_PRIMARY,
    )
    assert any("backfill of CASHOUT paused" in note for note in change.notes)
    with db.engine.connect() as conn:
        assert is_paused(conn, S.CASHOUT) and read_value(conn, pause_key(S.CASHOUT)) == "true"
        assert not is_paused(conn, S.ESCROW) and not is_paused(conn, S.EXCHANGE)
    assert phases(db) == {S.CASHOUT: 1, S.ESCROW: 2, S.EXCHANGE: 2}
    # Entering phase 2 again lets cashout's backfill go on.
    back = advance(db.engine, db.settings, actor="t", reason="again", force=True, system="cashout")
    assert back.to_phase == 2 and back.notes
    with db.engine.connect() as conn:
        assert not is_paused(conn, S.CASHOUT)


def test_rollback_of_every_system_refused_in_the_library_while_phases_differ(
    db: Database,
) -> None:
    to_phase(db.engine, 2)
    to_phase(db.engine, 3, S.ESCROW)
    with pytest.raises(GateError, match="CASHOUT 2, ESCROW 3, EXCHANGE 2"):
        rollback_current_phase(db.engine, db.settings, actor="a", reason="p95")
    assert phases(db) == {S.CASHOUT: 2, S.ESCROW: 3, S.EXCHANGE: 2}
    to_phase(db.engine, 0, S.EXCHANGE)
    with pytest.raises(GateError, match="EXCHANGE is in phase 0"):
        rollback_current_phase(db.engine, db.settings, actor="a", reason="x", system=S.EXCHANGE)
    # One system at a time is fine; together once they agree again.
    rollback_current_phase(db.engine, db.settings, actor="a", reason="p95", system=S.ESCROW)
    to_phase(db.engine, 2, S.EXCHANGE)
    change = rollback_current_phase(db.engine, db.settings, actor="a", reason="all")
    assert change.system is None and phases(db) == dict.fromkeys(S, 1)


def test_phase_rollback_on_the_command_line(db: Database) -> None:
    to_phase(db.engine, 1)
    to_phase(db.engine, 3, S.ESCROW)
    out = cli(db, "phase", "rollback", "--system", "Escrow", "--reason", "p95", "--json")
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert (body["system"], body["from_phase"], body["to_phase"]) == ("ESCROW", 3, 2)
    assert body["to_mode"] == "DUAL_WRITE_LEGACY_PRIMARY"
    assert phases(db) == {S.CASHOUT: 1, S.ESCROW: 2, S.EXCHANGE: 1}

    out = cli(db, "phase", "rollback", "--reason", "all")
    assert out.exit_code == 2 and "different phases (CASHOUT 1, ESCROW 2" in out.output
    assert "--system" in out.output
    bad = cli(db, "phase", "rollback", "--system", "bank", "--reason", "x")
    assert bad.exit_code == 2 and "unknown legacy system 'bank'" in bad.stderr
    no_reason = cli(db, "phase", "rollback", "--system", "escrow")
    assert no_reason.exit_code == 2
    assert phases(db) == {S.CASHOUT: 1, S.ESCROW: 2, S.EXCHANGE: 1}  # none of those moved

    text = cli(db, "phase", "rollback", "--system", "escrow", "--reason", "again")
    assert text.exit_code == 0, text.output
    assert "rolled back (ESCROW): phase 2 -> 1" in text.stdout
    assert "backfill of ESCROW paused" in text.stdout
    assert "--system escrow" in cli(db, "phase", "rollback", "--help").stdout


def test_phase_rollback_of_one_system_over_the_api(db: Database) -> None:
    from fastapi.testclient import TestClient

    from unistatus.api.service import create_app

    settings = db.settings.model_copy(update={"admin_token": "t0ken"})
    headers = {"Authorization": "Bearer t0ken"}
    to_phase(db.engine, 2)
    to_phase(db.engine, 3, S.CASHOUT)
    with TestClient(create_app(settings, db.engine)) as client:
        url = "/api/v1/control/phase/rollback"
        r = client.post(url, json={"reason": "all"}, headers=headers)
        assert r.status_code == 409 and "different phases" in r.text
        r = client.post(url, json={"reason": "p95", "system": "CASHOUT"}, headers=headers)
        assert r.status_code == 200, r.text
        assert (r.json()["system"], r.json()["to_phase"]) == ("CASHOUT", 2)
        r = client.post(url, json={"reason": "x", "system": "BANK"}, headers=headers)
        assert r.status_code == 422
        r = client.post(url, json={"reason": "all now"}, headers=headers)
        assert r.status_code == 200 and r.json()["system"] is None
    assert phases(db) == dict.fromkeys(S, 1)


# --- the gates that count open rows count the judged system's -------------------------


def test_open_rows_of_one_system_block_that_systems_gates_only(db: Database) -> None:
    """An open quarantine entry, repair-queue row and replay conflict of exchange fail
    exchange's gates into phase 3 and leave cashout's passing."""
    to_phase(db.engine, 2)
    seed_pairs(db.engine, 3, system=S.EXCHANGE)
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(backfill_quarantine).values(
                system="EXCHANGE",
                legacy_id=99,
                raw_status="??",
                reason="unknown_status",
                first_seen_at=now,
                last_seen_at=now,
            )
        )
        conn.execute(
            sa.insert(repair_queue).values(
                transaction_id=derive_utx_id(S.EXCHANGE, 1),
                legacy_system="EXCHANGE",
                legacy_id=1,
                source="dual_write",
                error="legacy write failed",
                created_at=now,
            )
        )
        # No system named: the transaction's unified row says it is exchange's.
        conn.execute(
            sa.insert(replay_conflicts).values(
                transaction_id=derive_utx_id(S.EXCHANGE, 2),
                legacy_system=None,
                cause="legacy_changed",
                first_change_id=1,
                last_change_id=1,
                changes=1,
                created_at=now,
                created_by="test",
            )
        )
    names = ("quarantine", "repair_queue_open", "replay_conflicts_open")
    cashout = {g.name: g for g in phase_status(db.engine, db.settings, S.CASHOUT).gates}
    exchange = {g.name: g for g in phase_status(db.engine, db.settings, S.EXCHANGE).gates}
    together = {g.name: g for g in phase_status(db.engine, db.settings).gates}
    for name in names:
        assert cashout[name].passed and cashout[name].value == 0, cashout[name]
        assert not exchange[name].passed and exchange[name].value == 1, exchange[name]
        assert not together[name].passed and together[name].value == 1
    assert exchange["quarantine"].detail == "counted on EXCHANGE's rows"

    with pytest.raises(GateError) as refused:
        advance(db.engine, db.settings, actor="t", reason="x", system=S.CASHOUT)
    assert not any(name + "=" in str(refused.value) for name in names), refused.value
    with pytest.raises(GateError, match="quarantine=1") as refused:
        advance(db.engine, db.settings, actor="t", reason="x", system=S.EXCHANGE)
    assert "repair_queue_open=1" in str(refused.value)
    assert "replay_conflicts_open=1" in str(refused.value)

    # A row whose system is not known at all may be any system's: it blocks every one.
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(repair_queue).values(
                transaction_id=None, source="dual_write", error="?", created_at=now
            )
        )
    cashout = {g.name: g for g in phase_status(db.engine, db.settings, S.CASHOUT).gates}
    assert cashout["repair_queue_open"].value == 1


# --- the automated responses keep a system's phase consistent with its mode -----------


def test_consistency_response_of_one_system_is_its_emergency_rollback(db: Database) -> None:
    """Consistency below 99% on escrows: escrows' pending changes are replayed, escrows
    go to LEGACY_ONLY and phase 0 (as every system does in the response of every system),
    their backfill pauses; cashouts keep their phase 4, mode and pending changes."""
    to_phase(db.engine, 1)
    to_phase(db.engine, 4, S.CASHOUT)
    to_phase(db.engine, 4, S.ESCROW)
    seed_pairs(db.engine, 100, drift=2, system=S.ESCROW)  # 98% < 99%
    adapter = adapter_of(db)
    frozen_writes(adapter, S.ESCROW, 2)
    frozen_writes(adapter, S.CASHOUT, 2)
    cashout_pending = pending_count(db.engine, S.CASHOUT)
    run_check(db.engine, db.settings, systems=[S.ESCROW])
    settings = db.settings.model_copy(
        update={"auto_responses": AutoResponses(repair_on_consistency_warning=False)}
    )
    states = {s.name: s for s in alerts.evaluate(db.engine, settings, notifier=Notifier())}
    critical = states["consistency_critical"]
    assert critical.firing and "ESCROW" in critical.message and "CASHOUT" not in critical.message
    assert critical.response == "rollback_systems_to_legacy_only: done"
    assert phases(db) == {S.CASHOUT: 4, S.ESCROW: 0, S.EXCHANGE: 1}
    assert get_modes(db.engine)[S.ESCROW] is M.LEGACY_ONLY
    assert get_modes(db.engine)[S.CASHOUT] is M.UNIFIED_ONLY
    assert pending_count(db.engine, S.ESCROW) == 0
    assert pending_count(db.engine, S.CASHOUT) == cashout_pending
    with db.engine.connect() as conn:
        assert is_paused(conn, S.ESCROW) and not is_paused(conn, S.CASHOUT)
    status = phase_status(db.engine, db.settings, S.ESCROW)
    assert status.mode is status.expected_mode  # phase 0 runs LEGACY_ONLY
    logged = history(db.engine, "auto_response")[0]
    assert logged.metadata is not None
    assert logged.metadata["result"]["systems"]["ESCROW"]["to_phase"] == 0


def test_latency_response_of_one_system_is_its_phase_rollback(db: Database) -> None:
    """Escrows' p95 regressed in phase 4: escrows go one phase back by phase 4's
    procedure (their changes replayed first, phase 2, legacy primary); cashouts in
    phase 3 keep theirs."""
    to_phase(db.engine, 2)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 4.0, 50)
    monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier())
    monitor.evaluate()  # remembers the legacy-primary baseline
    assert monitor.baseline_p95_ms() is not None
    to_phase(db.engine, 3, S.CASHOUT)
    to_phase(db.engine, 4, S.ESCROW)
    frozen_writes(adapter_of(db), S.ESCROW, 2)
    record_latency(db.engine, M.UNIFIED_ONLY, 700.0, 50, system=S.ESCROW)
    record_latency(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, 4.0, 5000, system=S.CASHOUT)
    states = {s.name: s for s in monitor.evaluate()}
    critical = states["latency_p95_critical"]
    assert critical.firing and "ESCROW" in critical.message
    assert critical.response == "rollback_systems_to_legacy_primary: done"
    assert phases(db) == {S.CASHOUT: 3, S.ESCROW: 2, S.EXCHANGE: 2}
    assert get_modes(db.engine)[S.ESCROW] is M.DUAL_WRITE_LEGACY_PRIMARY
    assert get_modes(db.engine)[S.CASHOUT] is M.DUAL_WRITE_UNIFIED_PRIMARY
    assert pending_count(db.engine, S.ESCROW) == 0
    consistent(db, S.ESCROW)
