"""Simulated traffic: valid paths, and every transaction it touches stays consistent."""

from __future__ import annotations

import random
import threading

import pytest
import sqlalchemy as sa

from unistatus.adapter.core import DualWriteAdapter
from unistatus.db import control
from unistatus.db.tables import status_history
from unistatus.db.tables import unified_transactions as unified
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import (
    CashoutStatus,
    DualWriteMode,
    EscrowStatus,
    ExchangeStatus,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.domain.transitions import TransitionKind, TransitionRules
from unistatus.sim.seed import id_ranges, seed_legacy
from unistatus.sim.traffic import run_traffic, valid_path

MAPPER = LegacyStatusMapper()
RULES = TransitionRules()


def _unified(ttype: UnifiedTransactionType, step: object) -> UnifiedTransactionStatus:
    if isinstance(step, UnifiedTransactionStatus):
        return step
    return MAPPER.to_unified(ttype.legacy_system, step)


@pytest.mark.parametrize("ttype", list(UnifiedTransactionType))
def test_paths_follow_the_transition_rules(ttype: UnifiedTransactionType) -> None:
    rng = random.Random(1)
    for _ in range(500):
        path = valid_path(ttype, rng)
        unified = [_unified(ttype, s) for s in path]
        assert unified[0] is UnifiedTransactionStatus.PENDING
        assert unified[-1].is_final or unified[-1] is UnifiedTransactionStatus.SUCCESS
        for src, dst, raw_src, raw_dst in zip(unified, unified[1:], path, path[1:], strict=False):
            kind = RULES.check(ttype, src, dst)  # raises InvalidTransitionError if illegal
            if kind is TransitionKind.NOOP:  # only a legacy-only change may keep the status
                assert raw_src != raw_dst


def test_paths_cover_the_business_flows() -> None:
    rng = random.Random(2)
    seen: set[object] = set()
    for ttype in UnifiedTransactionType:
        for _ in range(300):
            seen.update(valid_path(ttype, rng))
    expected = {
        CashoutStatus.OTP_PENDING,  # OTP for cashouts
        CashoutStatus.PENDING_ADDRESS_CONFIG,
        EscrowStatus.AWAITING_SELLER,  # seller acceptance
        EscrowStatus.DISPUTED,  # disputes
        EscrowStatus.REFUNDED,
        UnifiedTransactionStatus.RELEASE_PENDING,
        ExchangeStatus.RATE_LOCKED,  # rate lock
        ExchangeStatus.PENDING_APPROVAL,  # admin approval
    }
    assert expected <= seen


def test_traffic_keeps_every_touched_transaction_consistent(db) -> None:  # type: ignore[no-untyped-def]
    seed_legacy(db.engine, db.settings, 600)
    control.set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    report = run_traffic(
        # A count, not a time limit: 1 s on a loaded 2-core machine gave 7 writes.
        adapter,
        threads=3,
        seconds=None,
        operations=60,
        existing=id_ranges(db.engine, db.settings),
        seed=5,
    )
    assert report.overall_success, report.error_samples
    assert report.operations > 20 and report.creates > 0 and report.updates > 0
    assert report.operations == report.creates + report.updates
    assert len(report.latencies_ms) == report.operations
    assert report.touched
    for entity_id in report.touched:
        found = adapter.check_consistency(entity_id)
        assert found["consistent"], found
    # Exactly one history row per accepted change: every create, every update neither
    # refused nor a no-op (two threads picked the same row and target).
    with db.engine.connect() as conn:
        by = dict(
            conn.execute(
                sa.select(status_history.c.triggered_by, sa.func.count()).group_by(
                    status_history.c.triggered_by
                )
            ).all()
        )
    assert by == {
        "create_transaction": report.creates,
        "traffic-simulator": report.updates - report.refused - report.unchanged,
    }


def test_operation_budget_and_stop_event(db) -> None:  # type: ignore[no-untyped-def]
    control.set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    report = run_traffic(adapter, threads=2, seconds=None, operations=25)
    assert report.operations == 25
    assert report.errors == 0
    # Only creates are possible without existing rows, then their paths advance.
    assert report.creates >= 1
    stop = threading.Event()
    stop.set()
    assert run_traffic(adapter, threads=2, seconds=None, stop=stop).operations == 0


def test_a_run_past_its_time_creates_what_it_owes_of_every_type(db) -> None:  # type: ignore[no-untyped-def]
    """However few writes fit in the time, every type gets the creates asked for (a
    gate judges each system on its own writes), and nothing more once it has them."""
    control.set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    report = run_traffic(adapter, threads=2, seconds=0.0, creates_per_type=3)
    assert report.errors == 0
    with db.engine.connect() as conn:
        created = dict(
            conn.execute(
                sa.select(unified.c.transaction_type, sa.func.count()).group_by(
                    unified.c.transaction_type
                )
            ).all()
        )
    assert created == {t.value: 3 for t in UnifiedTransactionType}
    assert report.operations == report.creates == 9
    # An operation budget or a stop event still ends it.
    assert (
        run_traffic(adapter, threads=2, seconds=0.0, operations=2, creates_per_type=5).operations
        == 2
    )


def test_bad_arguments(sqlite_db) -> None:  # type: ignore[no-untyped-def]
    adapter = DualWriteAdapter(sqlite_db.engine, settings=sqlite_db.settings)
    with pytest.raises(ValueError):
        run_traffic(adapter, threads=0)
    with pytest.raises(ValueError):
        run_traffic(adapter, new_ratio=1.5)
    with pytest.raises(ValueError):
        run_traffic(adapter, seconds=None)
    with pytest.raises(ValueError):
        run_traffic(adapter, seconds=1.0, creates_per_type=-1)
