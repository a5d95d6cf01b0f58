"""The migration's own bookkeeping reads the database's clock, never the host's: a host
whose clock runs ahead cannot make an old check look newer than a mode change, or a
newer failing check, nor move continuous verification's watermark past rows changed
since (exploratory report, time: 1 and 3)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from support.adapters import adapter_in
from support.check_data import populate, tables
from support.host_clock import host_clock_ahead
from support.stats_data import record_latency
from unistatus.adapter.core import DualWriteAdapter
from unistatus.config import load_settings
from unistatus.db.control import set_mode
from unistatus.db.mode_reads import last_mode_change_at
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType, UnifiedTransactionStatus
from unistatus.errors import ModeError
from unistatus.migration import phases
from unistatus.migration.check import run_check
from unistatus.migration.gates import gate_check
from unistatus.migration.repair import run_repair
from unistatus.migration.rollout_plan import SOAK_GATE
from unistatus.migration.verify import verify_changes

CASHOUT = LegacySystemType.CASHOUT
mapper = LegacyStatusMapper()


def _break_unified(db: Any, legacy_id: int) -> None:
    """A unified row whose status legacy's contradicts, stamped at the real time."""
    lt = tables(db.engine, db.settings)[CASHOUT]
    where = (U.c.legacy_system == CASHOUT.value, U.c.legacy_id == legacy_id)
    with db.engine.begin() as conn:
        status = conn.execute(sa.select(lt.status).where(lt.id == legacy_id)).scalar_one()
        wrong = next(
            s.value
            for s in UnifiedTransactionStatus
            if not mapper.is_compatible(CASHOUT, status, s)
        )
        now = datetime.now(UTC)
        conn.execute(sa.update(U).where(*where).values(status=wrong, updated_at=now))


def test_a_check_by_a_fast_clock_host_neither_outlives_a_switch_nor_hides_a_newer_check(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(db.engine, db.settings, 20)
    with monkeypatch.context() as m:
        host_clock_ahead(m, timedelta(hours=2))
        assert run_check(db.engine, db.settings).is_consistent  # report of a fast host
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, reason="the switch")
    with db.engine.connect() as conn:
        switched = last_mode_change_at(conn, None)
    _break_unified(db, 3)
    failing = run_check(db.engine, db.settings)
    assert failing.inconsistencies["status_mismatch"] == 1

    gate = gate_check(
        db.engine,
        "full_check_consistent",
        after=switched,
        covering_since=None,
        require_full=True,
        need_rows=False,
    )
    assert not gate.passed, gate  # the newer, failing check is the one judged
    assert f"check #{failing.id}:" in str(gate.detail), gate


def test_a_monitor_host_whose_clock_runs_ahead_still_verifies_rows_changed_since(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(db.engine, db.settings, 20)
    assert run_check(db.engine, db.settings).is_consistent
    host_clock_ahead(monkeypatch, timedelta(minutes=10))
    verify_changes(db.engine, db.settings, max_seconds=None)  # a first pass: its watermark
    _break_unified(db, 2)
    found = [
        verify_changes(db.engine, db.settings, max_seconds=None).inconsistencies["status_mismatch"]
        for _ in range(3)
    ]
    assert sum(found) >= 1, found


def test_a_host_whose_clock_runs_ahead_does_not_end_the_soak_early(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, reason="the switch")
    host_clock_ahead(monkeypatch, timedelta(hours=2))  # the soak is an hour (default)
    soak = {g.name: g for g in phases.evaluate_gates(db.engine, db.settings, 4)}[SOAK_GATE]
    assert not soak.passed and float(soak.value) < 600, soak


def test_check_since_an_age_on_a_fast_clock_host_still_finds_what_changed(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``check --since 5m`` on a host an hour ahead scoped from 55 minutes in the
    database's future: "0 of 0 consistent", the change just made unseen. An age is
    counted back from the database's clock, as every time the check compares."""
    import json

    from typer.testing import CliRunner

    from unistatus.cli import app

    populate(db.engine, db.settings, 20)
    _break_unified(db, 3)
    with monkeypatch.context() as m:
        host_clock_ahead(m, timedelta(hours=1))
        assert run_check(db.engine, db.settings, since="5m").inconsistencies["status_mismatch"] == 1
        shown = CliRunner().invoke(
            app, ["--database-url", db.url, "check", "--since", "5m", "--json"]
        )
    report = json.loads(shown.stdout)
    assert report["inconsistencies"]["status_mismatch"] == 1, shown.stdout


def _postgres_only(db: Any) -> None:
    if db.backend != "postgresql" and db.backend != "postgres":
        pytest.skip("SQLite's clock is this host's own: no host can be off it")


def test_the_p95_gate_of_a_host_behind_counts_the_operations_since_the_switch(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch is stamped on the database's clock and the window read on it: the
    window's length was the host's now minus the switch, so a host two minutes behind
    read a window of a millisecond, 'no adapter operations', however many had run."""
    _postgres_only(db)
    settings = load_settings(database_url=db.url, soak_seconds=0, p95_gate_min_operations=10)
    for _ in range(3):
        phases.advance(db.engine, settings, actor="t", force=True, reason="test setup")
    record_latency(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, 20.0, 30)
    with monkeypatch.context() as m:
        host_clock_ahead(m, timedelta(minutes=-2))
        gates = {g.name: g for g in phases.phase_status(db.engine, settings).gates}
    gate = gates["p95_latency_ms"]
    assert gate.passed and (gate.detail or "").startswith("30 operations since"), gate


def test_newest_wins_keeps_the_newer_change_whatever_the_adapter_hosts_clock(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter host five minutes ahead stamped its change five minutes in the
    future: the legacy application's job that confirmed the payout a second later was
    taken for the older one, and `repair --strategy newest_wins` wrote the payout back
    to EXECUTING on legacy, the primary side (a probe). The adapter stamps on the
    database's clock: its host's moved by the lead it measured."""
    _postgres_only(db)
    adapter = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    created = adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="APPROVED")
    with monkeypatch.context() as m:
        host_clock_ahead(m, timedelta(minutes=5))
        ahead = DualWriteAdapter(db.engine, settings=db.settings)
        ahead.update_status(
            f"cashout:{created.legacy_entity_id}", "EXECUTING", "sent to the provider", "app"
        )
    time.sleep(0.05)
    lt = tables(db.engine, db.settings)[CASHOUT]
    with db.engine.begin() as conn:  # the legacy application's job, on the database's time
        conn.execute(
            sa.update(lt.table)
            .where(lt.id == created.legacy_entity_id)
            .values({lt.status.key: "SUCCESS", lt.updated_at.key: sa.func.now()})
        )
    run_repair(db.engine, db.settings, strategy="newest_wins", reason="t")
    with db.engine.connect() as conn:
        legacy = conn.execute(
            sa.select(lt.status).where(lt.id == created.legacy_entity_id)
        ).scalar_one()
        unified = conn.execute(
            sa.select(U.c.status).where(
                U.c.legacy_system == CASHOUT.value, U.c.legacy_id == created.legacy_entity_id
            )
        ).scalar_one()
    assert (legacy, unified) == ("SUCCESS", "SUCCESS")


def test_a_legacy_only_change_of_an_adapter_host_behind_keeps_unified_stale(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change written while LEGACY_ONLY by an adapter host five minutes behind was
    stamped before the legacy-only stretch began: the switch to unified primary did not
    count it stale and let unified serve the old status (a probe)."""
    _postgres_only(db)
    adapter = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    created = adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="APPROVED")
    assert run_check(db.engine, db.settings).is_consistent
    set_mode(db.engine, DualWriteMode.LEGACY_ONLY, reason="incident", actor="t")
    with monkeypatch.context() as m:
        host_clock_ahead(m, timedelta(minutes=-5))
        behind = DualWriteAdapter(db.engine, settings=db.settings)
        behind.modes.refresh()
        behind.update_status(f"cashout:{created.legacy_entity_id}", "EXECUTING", "t", "app")
    with pytest.raises(ModeError, match="unified may be stale"):
        set_mode(
            db.engine,
            DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY,
            reason="t",
            actor="t",
            settings=db.settings,
        )
