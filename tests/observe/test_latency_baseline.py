"""The latency rollback's legacy-primary baseline while the systems are in different modes.

An on-call finding: the monitor was not running during phases 1-2, exchanges alone went
to unified primary, a slow trigger on their unified writes pushed their p95 over 500 ms,
and no rollback happened: the monitor kept a baseline only while every system was in one
legacy-primary mode, and said "none in unified primary" of a system that was. The
statistics are real (flushed by :class:`OperationStats`), the monitor is the real one.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from support.phases import to_phase
from support.stats_data import record_latency
from unistatus.clock import utcnow
from unistatus.db.control import get_mode
from unistatus.db.tables_ops import operation_stats
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.domain.statuses import LegacySystemType as S
from unistatus.observe import alerts
from unistatus.observe.notify import Notifier


def _age_stats(engine: sa.Engine, seconds: float) -> None:
    """Every stored statistics row as if flushed ``seconds`` ago (out of the window)."""
    then = utcnow() - timedelta(seconds=seconds)
    with engine.begin() as conn:
        conn.execute(sa.update(operation_stats).values(interval_start=then, interval_end=then))


def test_baseline_is_kept_while_every_system_reads_legacy_in_different_modes(db) -> None:
    to_phase(db.engine, 2, S.EXCHANGE)  # cashouts and escrows LEGACY_ONLY
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 40.0, 50, system=S.EXCHANGE)
    monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier(), window_seconds=60)
    monitor.evaluate()
    baseline = monitor.baseline_p95_ms()
    assert baseline is not None and 20.0 < baseline <= 50.0
    assert monitor.baseline_p95_ms(S.EXCHANGE) == baseline


def test_latency_rollback_uses_the_stored_legacy_primary_statistics(db) -> None:
    """No monitor ran while legacy was primary: the operations stored then are the
    baseline, and the slow system in unified primary goes one phase back."""
    to_phase(db.engine, 2, S.EXCHANGE)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 40.0, 493, system=S.EXCHANGE)
    _age_stats(db.engine, 3600)  # stored long before the switch
    to_phase(db.engine, 3, S.EXCHANGE)
    record_latency(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, 660.0, 50, system=S.EXCHANGE)
    monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier(), window_seconds=60)
    states = {s.name: s for s in monitor.evaluate()}
    critical = states["latency_p95_critical"]
    assert critical.firing and "EXCHANGE" in critical.message
    assert critical.response == "rollback_systems_to_legacy_primary: done"
    assert get_mode(db.engine, S.EXCHANGE) is M.DUAL_WRITE_LEGACY_PRIMARY
    assert get_mode(db.engine, S.CASHOUT) is M.LEGACY_ONLY


def test_no_baseline_at_all_is_said_so(db, caplog: pytest.LogCaptureFixture) -> None:
    """No legacy-primary operation was ever stored: no rollback, and the monitor says
    why in words that are true (not "none in unified primary")."""
    to_phase(db.engine, 3, S.EXCHANGE)
    record_latency(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, 660.0, 50, system=S.EXCHANGE)
    monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier(), window_seconds=60)
    with caplog.at_level(logging.WARNING, logger="unistatus.observe.alerts"):
        states = {s.name: s for s in monitor.evaluate()}
    critical = states["latency_p95_critical"]
    assert critical.firing
    assert critical.response is not None and critical.response.startswith(
        "none: no baseline yet"
    ), critical.response
    assert "EXCHANGE" in critical.response
    assert "none in unified primary" not in caplog.text
    assert "no baseline yet" in caplog.text
    assert get_mode(db.engine, S.EXCHANGE) is M.DUAL_WRITE_UNIFIED_PRIMARY


def test_writes_filed_under_legacy_only_are_no_baseline(db) -> None:
    """A failure whose process never read its mode is filed under LEGACY_ONLY, its
    stand-in (adapter/runner.py), with the failure's latency: 25 fast "cannot read the
    mode" failures became the baseline (0.41 ms), which the monitor then remembered, so
    any p95 crossed it (review). The baseline is the dual write that unified primary
    replaces: DUAL_WRITE_LEGACY_PRIMARY's writes only."""
    to_phase(db.engine, 2, S.EXCHANGE)
    record_latency(db.engine, M.LEGACY_ONLY, 0.4, 200, errors=200, system=S.EXCHANGE)
    monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier(), window_seconds=60)
    monitor.evaluate()
    assert monitor.baseline_p95_ms(S.EXCHANGE) is None
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 40.0, 50, system=S.EXCHANGE)
    monitor.evaluate()
    baseline = monitor.baseline_p95_ms(S.EXCHANGE)
    assert baseline is not None and 20.0 < baseline <= 50.0
