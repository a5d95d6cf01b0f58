"""Writers that bypass the adapter, made visible: /metrics, both dashboards, diagnose,
the alerts (a bypass write in UNIFIED_ONLY, quarantined rows) and the gate into phase 4.

Real data: capture enabled, a raw-SQL "cron job" writing the legacy tables on its own
connections (``support.capture_data``), the service's /metrics scraped over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from conftest import IN_EVERY_LAYOUT, Database
from support.adapters import adapter_in
from support.capture_data import captured, raw, writer_name
from support.host_clock import host_clock_ahead
from support.serving import serving
from unistatus.api.service import create_app
from unistatus.clock import utcnow
from unistatus.config import load_settings
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration import capture, phases
from unistatus.migration.capture import WriterSeen
from unistatus.observe import alerts
from unistatus.observe.bypass import MAX_WRITER_SERIES, OTHER_WRITERS, writer_series
from unistatus.observe.diagnose import generate_diagnostic
from unistatus.observe.notify import Notifier
from unistatus.observe.terminal_dashboard import frame

M = DualWriteMode
T0 = "2026-01-01 00:00:00"


@pytest.fixture
def cap(db: Database) -> Iterator[Database]:
    with captured(db):
        yield db


def cron_writes(db: Database, ids: range, status: str = "PENDING") -> None:
    """The raw job: new cashouts, then a status change of each (plain SQL)."""
    for lid in ids:
        raw(
            db,
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            f"updated_at) VALUES (:id, 7, 10, 'USD', :status, '{T0}', '{T0}')",
            params={"id": lid, "status": status},
        )


def scrape(db: Database) -> dict[tuple[str, str], float]:
    text = TestClient(create_app(db.settings, db.engine)).get("/metrics").text
    return {
        (s.labels["system"], s.labels["writer"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "unistatus_bypass_writes_total"
    }


# --- /metrics -------------------------------------------------------------------------------


@IN_EVERY_LAYOUT
def test_metrics_export_bypass_writes_per_system_and_writer(cap: Database) -> None:
    assert scrape(cap) == {}
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    cron_writes(cap, range(1, 4))
    raw(cap, "UPDATE cashouts SET status = 'EXECUTING' WHERE id <= 2")
    assert scrape(cap) == {("CASHOUT", writer_name(cap)): 5.0}
    text = TestClient(create_app(cap.settings, cap.engine)).get("/metrics").text
    assert "unistatus_capture_enabled 1.0" in text


def _writer(name: str, system: str, writes: int, minutes: int) -> WriterSeen:
    at = utcnow() - timedelta(minutes=1000 - minutes)
    return WriterSeen(name, system, writes, 0, 0, at, at, "DUAL_WRITE_LEGACY_PRIMARY", None)


def test_writer_series_are_capped_and_only_grow() -> None:
    """Names come from the writers' application_name: unbounded. The first writers seen
    keep a series each; later ones are summed per system as "other", so no series ever
    goes down when a new writer appears."""
    writers = [_writer(f"bypass:job{i}/app", "CASHOUT", 10 + i, i) for i in range(25)]
    writers.append(_writer("bypass:late/app", "ESCROW", 7, 30))
    series = {(system, writer): n for system, writer, n in writer_series(writers)}
    assert len(series) == MAX_WRITER_SERIES + 2
    assert series[("CASHOUT", "bypass:job0/app")] == 10
    assert series[("CASHOUT", OTHER_WRITERS)] == sum(10 + i for i in range(20, 25))
    assert series[("ESCROW", OTHER_WRITERS)] == 7
    newest = _writer("bypass:newest/app", "CASHOUT", 1, 40)
    after = {(s, w): n for s, w, n in writer_series([newest, *writers])}
    assert all(after[key] >= n for key, n in series.items())
    assert ("CASHOUT", "bypass:newest/app") not in after


# --- dashboards, diagnose ---------------------------------------------------------------------


def test_terminal_dashboard_lists_the_writers(cap: Database) -> None:
    def text() -> str:
        console = Console(width=160, record=True, color_system=None)
        console.print(frame(cap.engine, cap.settings))
        return console.export_text()

    assert "none seen" in text()
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    cron_writes(cap, range(1, 4))
    out = text()
    (w,) = capture.writers_seen(cap.engine)
    assert writer_name(cap) in out and "CASHOUT" in out
    assert w.last_seen_at is not None and w.last_seen_at.strftime("%Y-%m-%d %H:%M:%S") in out
    line = next(li for li in out.splitlines() if writer_name(cap) in li)
    assert " 3 " in line  # rows written


def test_terminal_dashboard_says_when_capture_is_off(db: Database) -> None:
    console = Console(width=160, record=True, color_system=None)
    console.print(frame(db.engine, db.settings))
    assert "capture not enabled" in console.export_text()


def test_diagnose_includes_the_writers(cap: Database) -> None:
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    cron_writes(cap, range(1, 3))
    section = generate_diagnostic(cap.engine, cap.settings)["capture"]
    assert section["enabled"] is True and section["writers_total"] == 1
    (w,) = section["writers"]
    assert (w["writer"], w["system"], w["writes"]) == (writer_name(cap), "CASHOUT", 2)
    assert w["last_seen_at"]


def test_web_dashboard_lists_the_writers(sqlite_db: Database, browser: Any) -> None:
    db = sqlite_db
    with captured(db):
        set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
        cron_writes(db, range(1, 4))
        with serving(create_app(db.settings, db.engine)) as base:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.wait_for_function(
                "document.querySelectorAll('#bypass tbody tr').length > 0", timeout=10_000
            )
            cells = page.locator("#bypass tbody tr").nth(0).locator("td").all_inner_texts()
            assert cells[:3] == ["bypass:sqlite", "CASHOUT", "3"] and cells[3] != "-"
            assert "1 seen (capture on)" in page.inner_text("#bypass-state")
            assert errors == []
            page.close()


# --- alerts -----------------------------------------------------------------------------------


def _states(db: Database) -> dict[str, Any]:
    # Without continuous verification: it would count the unmappable row as an
    # inconsistency, and the automated response would take cashouts back to LEGACY_ONLY,
    # where the correction below is not captured (tested in tests/observe/test_alerts.py).
    monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier(), verify_rows=0)
    return {s.name: s for s in monitor.evaluate()}


@IN_EVERY_LAYOUT
def test_a_bypass_write_in_unified_only_fires_a_warning(cap: Database) -> None:
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="PROCESSING")
    lid = created.legacy_entity_id or 0
    raw(cap, "UPDATE cashouts SET amount = 6 WHERE id = :id", params={"id": lid})
    assert not _states(cap)["bypass_writes_unified_only"].firing  # legacy is primary
    set_mode(cap.engine, M.UNIFIED_ONLY, reason="test", actor="test")
    assert not _states(cap)["bypass_writes_unified_only"].firing
    raw(cap, "UPDATE cashouts SET status = 'FAILED' WHERE id = :id", params={"id": lid})
    state = _states(cap)["bypass_writes_unified_only"]
    assert state.firing and state.level == "warning"
    assert writer_name(cap) in state.message and "CASHOUT" in state.message


def test_a_monitor_host_ahead_of_the_database_still_sees_a_bypass_write(
    cap: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The capture stamps a writer on the database's clock; the window is judged on it
    too: a monitor host 400 s ahead (the window is 300 s) read every write as older and
    said the frozen table was left alone."""
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="PROCESSING")
    set_mode(cap.engine, M.UNIFIED_ONLY, reason="test", actor="test")
    raw(
        cap,
        "UPDATE cashouts SET status = 'FAILED' WHERE id = :id",
        params={"id": created.legacy_entity_id},
    )
    with monkeypatch.context() as m:
        host_clock_ahead(m, timedelta(seconds=400))
        state = _states(cap)["bypass_writes_unified_only"]
    assert state.firing, state.message


@IN_EVERY_LAYOUT
def test_an_unmappable_bypass_value_fires_the_quarantine_alert(cap: Database) -> None:
    assert _states(cap)["quarantine_rows"].state == "resolved"
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    cron_writes(cap, range(1, 2))
    raw(cap, "UPDATE cashouts SET status = 'REFUND_REQUESTED' WHERE id = 1")
    state = _states(cap)["quarantine_rows"]
    assert state.firing and state.level == "warning" and state.value == 1.0
    raw(cap, "UPDATE cashouts SET status = 'EXECUTING' WHERE id = 1")  # corrected
    assert _states(cap)["quarantine_rows"].state == "resolved"


# --- the gate into phase 4 --------------------------------------------------------------------


def _into_unified_primary(db: Database, soak_seconds: float = 0) -> Any:
    settings = load_settings(database_url=db.url, soak_seconds=soak_seconds)
    for _ in range(3):
        phases.advance(db.engine, settings, actor="t", force=True, reason="test setup")
    return settings


def _bypass_gate(db: Database, settings: Any) -> phases.Gate:
    gates = {g.name: g for g in phases.phase_status(db.engine, settings).gates}
    return gates[phases.BYPASS_GATE]


@IN_EVERY_LAYOUT
def test_the_gate_into_phase_4_fails_on_a_bypass_write_in_the_soak(db: Database) -> None:
    cron_writes(db, range(1, 3))  # before the soak (and before capture): not counted
    with captured(db):
        set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
        raw(db, "UPDATE cashouts SET amount = 11 WHERE id = 1")  # seen, before the soak
        settings = _into_unified_primary(db)
        gate = _bypass_gate(db, settings)
        assert gate.passed and gate.value == 0, gate
        raw(db, "UPDATE cashouts SET status = 'EXECUTING' WHERE id = 2")
        gate = _bypass_gate(db, settings)
        assert not gate.passed and gate.value == 1
        assert writer_name(db) in (gate.detail or "") and "CASHOUT" in (gate.detail or "")


@IN_EVERY_LAYOUT
def test_without_capture_the_gate_passes_saying_it_proves_nothing(db: Database) -> None:
    settings = _into_unified_primary(db)
    cron_writes(db, range(1, 2))  # a bypass write nobody sees
    gate = _bypass_gate(db, settings)
    assert gate.passed and gate.value == "capture not enabled"
    assert "capture not enabled" in (gate.detail or "")
    assert "proves nothing" in (gate.detail or "")


def test_capture_enabled_during_the_soak_covers_only_part_of_it(db: Database) -> None:
    _into_unified_primary(db)
    with captured(db):
        strict = load_settings(database_url=db.url, soak_seconds=3600)
        gate = _bypass_gate(db, strict)
        assert not gate.passed and "after the soak began" in (gate.detail or "")
        relaxed = load_settings(database_url=db.url, soak_seconds=0)
        assert _bypass_gate(db, relaxed).passed


def test_the_gate_fails_when_capture_is_on_but_a_trigger_is_gone(cap: Database) -> None:
    settings = _into_unified_primary(cap)
    victim = capture.status(cap.engine, cap.settings).installed[0]
    with cap.engine.begin() as conn:
        on = f" ON {victim.on}" if cap.backend == "postgres" else ""
        conn.exec_driver_sql(f"DROP TRIGGER {victim.name}{on}")
    gate = _bypass_gate(cap, settings)
    assert not gate.passed and victim.name in (gate.detail or "")


def test_the_gate_fails_when_the_mapping_changed_since_capture_was_enabled(
    cap: Database,
) -> None:
    settings = _into_unified_primary(cap)
    # The config gains an extra value: the triggers would quarantine it as unknown.
    changed = load_settings(
        database_url=cap.url, mapping={"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}}
    )
    gate = _bypass_gate(cap, changed)
    assert not gate.passed and "mapping" in (gate.detail or ""), gate
    capture.enable(cap.engine, changed, actor="test", reason="the new mapping")
    assert _bypass_gate(cap, settings).passed
