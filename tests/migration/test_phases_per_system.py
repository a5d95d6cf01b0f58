"""One system at a time (issue 14 §1): each system's phase, its gates measured on its
own data, the automated responses acting on the system that crossed, and every
observer showing each system. Real data, a real check, real statistics; both backends.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from conftest import PG_IN_EVERY_LAYOUT
from support.phases import to_phase
from support.race import in_lockstep
from support.stats_data import record_latency, seed_pairs
from unistatus.adapter.model import OperationEvent
from unistatus.config import AutoResponses
from unistatus.db import mode_reads
from unistatus.db.control import get_mode
from unistatus.db.dialect import ops_for
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError
from unistatus.migration import phases
from unistatus.migration.check import run_check
from unistatus.migration.phases import (
    PHASES,
    advance,
    phase_status,
    phase_statuses,
    write_phase,
)
from unistatus.migration.rollout_plan import rollout_plan
from unistatus.observe import alerts
from unistatus.observe.metrics import SnapshotCollector, collect_snapshot
from unistatus.observe.notify import Notifier
from unistatus.observe.stats import OperationStats, window

C, E, X = LegacySystemType.CASHOUT, LegacySystemType.ESCROW, LegacySystemType.EXCHANGE
M = DualWriteMode


def gates_of(engine: Any, settings: Any, system: LegacySystemType) -> dict[str, Any]:
    return {g.name: g for g in phase_status(engine, settings, system).gates}


def test_operation_stats_are_kept_per_system(db: Any) -> None:
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 40, errors=4, system=E)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 60, system=C)
    assert window(db.engine, 60).count == 100
    escrow = window(db.engine, 60, system=E)
    assert (escrow.count, escrow.errors, escrow.system) == (40, 4, "ESCROW")
    assert window(db.engine, 60, system="cashout").errors == 0
    assert window(db.engine, 60, system=X).count == 0


def test_systems_advance_independently_on_their_own_data(db: Any) -> None:
    """Into phase 2: cashout's gates pass on cashout's data, escrow's fail on escrow's
    (an inconsistent row, errors), and advancing cashout leaves escrow untouched."""
    to_phase(db.engine, 1)
    seed_pairs(db.engine, 50, system=C)
    seed_pairs(db.engine, 50, drift=1, system=E)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 100, system=C)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 100, errors=5, system=E)
    run_check(db.engine, db.settings)

    cashout, escrow = gates_of(db.engine, db.settings, C), gates_of(db.engine, db.settings, E)
    assert all(g.passed for g in cashout.values()), cashout
    assert cashout["new_transactions_consistent"].value == "100%"
    assert "50 of 50 of CASHOUT" in str(cashout["new_transactions_consistent"].detail)
    assert not escrow["new_transactions_consistent"].passed
    assert escrow["new_transactions_consistent"].value == "98%"
    assert not escrow["error_rate"].passed and escrow["error_rate"].value == "5%"
    assert "49 of 50 of ESCROW" in str(escrow["new_transactions_consistent"].detail)

    change = advance(db.engine, db.settings, actor="t", reason="cashouts first", system="cashout")
    assert (change.system, change.from_phase, change.to_phase) == (C, 1, 2)
    statuses = phase_statuses(db.engine, db.settings)
    assert {s: st.phase for s, st in statuses.items()} == {C: 2, E: 1, X: 1}
    assert get_mode(db.engine, C) is M.DUAL_WRITE_LEGACY_PRIMARY
    with pytest.raises(GateError, match="ESCROW"):
        advance(db.engine, db.settings, actor="t", reason="escrows", system=E)
    with pytest.raises(GateError, match="different phases"):
        advance(db.engine, db.settings, actor="t", reason="all", force=True)
    with pytest.raises(GateError, match="different phases"):
        phase_status(db.engine, db.settings)
    # Forced, escrow moves on its own; cashout's phase is not touched.
    advance(db.engine, db.settings, actor="t", reason="drill", force=True, system=E)
    statuses = phase_statuses(db.engine, db.settings)
    assert {s: st.phase for s, st in statuses.items()} == {C: 2, E: 2, X: 1}


def test_consistency_below_99_on_escrows_rolls_back_escrows_only(db: Any) -> None:
    to_phase(db.engine, 1)
    seed_pairs(db.engine, 100, system=C)
    seed_pairs(db.engine, 100, drift=2, system=E)  # 98% < 99%
    run_check(db.engine, db.settings)
    settings = db.settings.model_copy(
        update={"auto_responses": AutoResponses(repair_on_consistency_warning=False)}
    )
    states = {s.name: s for s in alerts.evaluate(db.engine, settings, notifier=Notifier())}
    critical = states["consistency_critical"]
    assert critical.firing and "ESCROW 98.000%" in critical.message
    assert "CASHOUT" not in critical.message
    assert critical.response == "rollback_systems_to_legacy_only: done"
    assert get_mode(db.engine, E) is M.LEGACY_ONLY
    assert get_mode(db.engine, C) is M.DUAL_WRITE_LEGACY_PRIMARY
    assert get_mode(db.engine, X) is M.DUAL_WRITE_LEGACY_PRIMARY


def test_reads_do_not_dilute_the_write_error_rate_of_gates_and_alerts(db: Any) -> None:
    """Reads are open to any client of the service: 3,000 of them beside 3 failed status
    changes must not bring the error rate the gates and the alerts watch under their
    thresholds (nor fill the p95 gate's minimum count)."""
    to_phase(db.engine, 1)
    stats = OperationStats(db.engine, start=False)
    for _ in range(3):
        event = OperationEvent("update_status", M.DUAL_WRITE_LEGACY_PRIMARY, False, 5.0)
        stats.record(replace(event, error="boom", system=C))
    for _ in range(3000):
        read = OperationEvent("get_transaction_status", M.DUAL_WRITE_LEGACY_PRIMARY, True, 1.0)
        stats.record(replace(read, system=C))
    stats.flush()
    gate = gates_of(db.engine, db.settings, C)["error_rate"]
    assert not gate.passed and gate.value == "100%", gate
    states = {s.name: s for s in alerts.evaluate(db.engine, db.settings, notifier=Notifier())}
    assert states["error_rate_critical"].firing, states["error_rate_critical"]
    assert "CASHOUT" in states["error_rate_critical"].message


def test_latency_of_one_system_rolls_back_that_system_only(db: Any) -> None:
    # The legacy-primary baseline, remembered by the monitor while legacy is primary.
    to_phase(db.engine, 2)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 4.0, 50)
    monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier())
    monitor.evaluate()
    assert monitor.baseline_p95_ms() is not None
    to_phase(db.engine, 3)
    record_latency(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, 700.0, 50, system=E)
    record_latency(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, 4.0, 5000, system=C)
    states = {s.name: s for s in monitor.evaluate()}
    critical = states["latency_p95_critical"]
    assert critical.firing and "ESCROW" in critical.message
    assert critical.response == "rollback_systems_to_legacy_primary: done"
    assert get_mode(db.engine, E) is M.DUAL_WRITE_LEGACY_PRIMARY
    assert get_mode(db.engine, C) is M.DUAL_WRITE_UNIFIED_PRIMARY


def test_snapshot_metrics_and_api_show_each_system(db: Any) -> None:
    from fastapi.testclient import TestClient

    from unistatus.api.service import create_app

    to_phase(db.engine, 1)
    to_phase(db.engine, 3, C)
    seed_pairs(db.engine, 100, system=C)
    seed_pairs(db.engine, 50, drift=1, system=E)
    run_check(db.engine, db.settings)
    record_latency(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, 5.0, 10, system=C)

    snap = collect_snapshot(db.engine, db.settings)
    assert snap.mode == "mixed" and snap.phase == 1
    assert snap.systems is not None
    assert snap.systems["CASHOUT"]["phase"] == 3
    assert snap.systems["CASHOUT"]["mode"] == M.DUAL_WRITE_UNIFIED_PRIMARY.value
    assert snap.systems["ESCROW"]["phase"] == 1
    assert snap.systems["ESCROW"]["consistency_rate"] == 0.98
    assert snap.systems["CASHOUT"]["performance"]["count"] == 10

    registry = CollectorRegistry()
    registry.register(SnapshotCollector(db.engine, db.settings))
    text = generate_latest(registry).decode()
    assert 'unistatus_phase{system="CASHOUT"} 3.0' in text
    assert 'unistatus_phase{system="ESCROW"} 1.0' in text
    assert 'unistatus_mode{mode="DUAL_WRITE_UNIFIED_PRIMARY",system="CASHOUT"} 1.0' in text
    assert 'unistatus_mode{mode="DUAL_WRITE_LEGACY_PRIMARY",system="ESCROW"} 1.0' in text
    assert 'unistatus_consistency_rate{system="ESCROW"} 0.98' in text
    assert 'unistatus_consistency_rate{system="CASHOUT"} 1.0' in text

    body = TestClient(create_app(db.settings, db.engine)).get("/api/v1/status").json()
    assert body["systems"]["CASHOUT"]["phase"] == 3
    assert body["systems"]["EXCHANGE"]["mode"] == M.DUAL_WRITE_LEGACY_PRIMARY.value


def test_phase_status_cli_diagnose_history_and_dashboard_show_each_system(db: Any) -> None:
    import json

    from rich.console import Console
    from typer.testing import CliRunner

    from unistatus.cli import app
    from unistatus.observe.diagnose import generate_diagnostic
    from unistatus.observe.history import read_history
    from unistatus.observe.terminal_dashboard import render

    to_phase(db.engine, 1)
    to_phase(db.engine, 2, E)
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, ["--database-url", db.url, *args], catch_exceptions=False)

    out = invoke("phase", "status", "--json")
    data = json.loads(out.stdout)
    assert data["phase"] == "mixed" and data["mode"] == "mixed"
    assert {s: d["phase"] for s, d in data["systems"].items()} == {
        "CASHOUT": 1,
        "ESCROW": 2,
        "EXCHANGE": 1,
    }
    assert out.exit_code == 1  # gates fail (no check yet)
    out = invoke("phase", "status", "--system", "Escrow", "--json")
    assert json.loads(out.stdout)["system"] == "ESCROW"
    assert json.loads(out.stdout)["next_phase"] == 3
    out = invoke("phase", "status")
    assert "different phases" in out.stdout and "ESCROW: phase 2" in out.stdout
    out = invoke("phase", "advance", "--reason", "all")
    assert out.exit_code == 2 and "different phases" in out.output  # refused, as a gate

    report = generate_diagnostic(db.engine, db.settings)
    assert report["control"]["phase"] == "mixed"
    assert report["control"]["systems"]["ESCROW"] == {
        "mode": M.DUAL_WRITE_LEGACY_PRIMARY.value,
        "phase": 2,
    }
    assert report["gates"]["systems"]["ESCROW"]["next_phase"] == 3
    events = read_history(db.engine).events
    assert {"key": "phase", "value": "2", "systems": ["ESCROW"]}.items() <= events[-1].items()

    console = Console(width=120, record=True)
    console.print(render(collect_snapshot(db.engine, db.settings), []))
    shown = console.export_text()
    assert "escrow   phase 2 DUAL_WRITE_LEGACY_PRIMARY" in shown
    assert "cashout  phase 1" in shown


def test_pruned_statistics_keep_their_system(db: Any) -> None:
    from unistatus.observe.stats import prune

    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 40, errors=4, system=E)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 60, system=C)
    assert prune(db.engine, older_than_seconds=0.0) == 2
    assert window(db.engine, 3600, system=E).errors == 4
    assert window(db.engine, 3600, system=C).count == 60


def test_check_since_phase_start_of_one_system(db: Any) -> None:
    """`check --since phase-start --system S` resolves S's phase start, even while the
    systems are in different phases (what S's gate into phase 2 names)."""
    from typer.testing import CliRunner

    from unistatus.cli import app
    from unistatus.migration.check import latest_report

    to_phase(db.engine, 1, C)
    seed_pairs(db.engine, 10, system=C)
    out = CliRunner().invoke(
        app,
        ["--database-url", db.url, "check", "--since", "phase-start", "--system", "cashout"],
    )
    assert out.exit_code == 0, out.output
    report = latest_report(db.engine)
    assert report is not None and report.systems == ["CASHOUT"] and report.since is not None
    assert phase_status(db.engine, db.settings, C).gates[2].passed  # new transactions
    out = CliRunner().invoke(app, ["--database-url", db.url, "check", "--since", "phase-start"])
    assert out.exit_code == 2 and "different phases" in out.output


def test_api_advances_one_system_and_health_shows_each(db: Any) -> None:
    from fastapi.testclient import TestClient

    from unistatus.api.service import create_app

    settings = db.settings.model_copy(update={"admin_token": "t0ken"})
    headers = {"Authorization": "Bearer t0ken"}
    with TestClient(create_app(settings, db.engine)) as client:
        r = client.post(
            "/api/v1/control/phase/advance",
            json={"reason": "escrows first", "system": "ESCROW", "force": True},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert (r.json()["system"], r.json()["to_phase"]) == ("ESCROW", 1)
        r = client.post(
            "/api/v1/control/phase/advance", json={"reason": "all", "force": True}, headers=headers
        )
        assert r.status_code == 409 and "different phases" in r.text
        health = client.get("/health").json()
        assert health["checks"]["phase"] == "mixed" and health["checks"]["mode"] == "mixed"
        assert health["checks"]["systems"]["ESCROW"]["phase"] == 1
        assert health["checks"]["systems"]["CASHOUT"] == {"mode": "LEGACY_ONLY", "phase": 0}
        assert health["status"] == "healthy"


def test_phase_rollback_of_every_system_refuses_while_phases_differ(db: Any) -> None:
    """A one-step rollback of every system starts from "the" phase: with cashouts in 2
    and the others in 0 it would turn dual-write on for them. Refused, nothing changes."""
    from typer.testing import CliRunner

    from unistatus.cli import app

    to_phase(db.engine, 2, C)
    out = CliRunner().invoke(
        app, ["--database-url", db.url, "phase", "rollback", "--reason", "p95"]
    )
    assert out.exit_code == 2 and "different phases" in out.output
    assert {s: st.phase for s, st in phase_statuses(db.engine, db.settings).items()} == {
        C: 2,
        E: 0,
        X: 0,
    }
    assert get_mode(db.engine, E) is M.LEGACY_ONLY


def test_no_automated_repair_while_systems_read_different_sides(db: Any) -> None:
    """One repair has one winning side: with cashouts reading unified and escrows
    legacy, neither legacy_wins nor unified_wins is right for both."""
    to_phase(db.engine, 1)
    to_phase(db.engine, 3, C)
    seed_pairs(db.engine, 500, drift=1, system=E)  # 99.8%: a warning, not critical
    run_check(db.engine, db.settings)
    states = {s.name: s for s in alerts.evaluate(db.engine, db.settings, notifier=Notifier())}
    warning = states["consistency_warning"]
    assert warning.firing and not states["consistency_critical"].firing
    assert (warning.response or "").startswith("none: the systems read different sides")


@PG_IN_EVERY_LAYOUT
def test_systems_moving_at_once_keep_both_summaries_true(pg: Any) -> None:
    """Every system writes its phase (and mode) at the same moment, each under its own
    mode lock as advance and rollback --system do, round after round through every
    combination of phases 2 and 3 (a system may write the phase it is in): no write
    fails, and after each round the global keys hold the phase and the mode every
    system is in, or are absent while they differ."""
    ops = ops_for(pg.engine)
    to_phase(pg.engine, 2)

    def move(system: LegacySystemType, n: int) -> None:
        phase = (2, 3)[(n >> list(LegacySystemType).index(system)) & 1]
        with ops.write_transaction() as conn:
            ops.mode_exclusive_lock(conn, system)
            write_phase(
                conn,
                phase,
                PHASES[phase].mode,
                system=system,
                actor="test",
                reason=f"round {n}",
                metadata={},
            )

    def check(n: int) -> None:
        with pg.engine.connect() as conn:
            found = phases.read_phases(conn), mode_reads.read_modes(conn)
            phase_summary = mode_reads.read_value(conn, phases.PHASE_KEY)
            mode_summary = mode_reads.read_value(conn, mode_reads.MODE_KEY)
        common, mode = phases.common_phase(found[0]), mode_reads.common_mode(found[1])
        assert phase_summary == (str(common) if common is not None else None), (n, found)
        assert mode_summary == (mode.value if mode is not None else None), (n, found)

    assert in_lockstep(move, rounds=24, after_round=check) == []


def test_advancing_every_system_needs_each_systems_own_gates(db: Any) -> None:
    """Without --system the gates were measured on every system's figures pooled: with
    escrow's own gates failing (no new escrow transaction, errors), `phase status` said
    "ready" under a per-system line "ESCROW ... no", and `phase advance` moved escrow
    into phase 2 with the rest (exploratory docs review). A system whose own gate fails
    now fails the advance of every system, named."""
    to_phase(db.engine, 1)
    seed_pairs(db.engine, 200, system=C)
    seed_pairs(db.engine, 200, system=X)
    seed_pairs(db.engine, 2, system=E)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 2000, system=C)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 1000, system=X)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 10, errors=1, system=E)
    run_check(db.engine, db.settings)
    assert not all(g.passed for g in gates_of(db.engine, db.settings, E).values())
    assert all(g.passed for g in gates_of(db.engine, db.settings, C).values())

    together = phase_status(db.engine, db.settings)
    assert not together.ready, together.gates
    named = [g for g in together.gates if not g.passed]
    assert any("ESCROW" in f"{g.name} {g.value} {g.detail}" for g in named), named
    with pytest.raises(GateError, match="ESCROW"):
        advance(db.engine, db.settings, actor="t", reason="all")
    # The plan judges the next phase as the advance does.
    plan = rollout_plan(db.engine, db.settings, sample_rows=0).as_dict()
    assert plan["summary"]["next_phase_ready"] is False, plan["summary"]
    assert {s: st.phase for s, st in phase_statuses(db.engine, db.settings).items()} == {
        C: 1,
        E: 1,
        X: 1,
    }


def test_writes_of_processes_that_record_no_system_are_named_as_such(db: Any) -> None:
    """Writers older than revision 0016 record no system: a system's own error-rate gate
    said "no adapter operations of CASHOUT recorded ... (adapters record them unless
    record_stats=False ...)" while they wrote (exploratory upgrade test)."""
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 5.0, 95, system=None)
    gate = gates_of(db.engine, db.settings, C).get("error_rate")
    if gate is None:  # phase 0: the next gates are phase 1's (the mapping only)
        to_phase(db.engine, 1)
        gate = gates_of(db.engine, db.settings, C)["error_rate"]
    assert not gate.passed and gate.value == "unavailable"
    assert "95" in (gate.detail or "") and "revision 0016" in (gate.detail or ""), gate.detail
