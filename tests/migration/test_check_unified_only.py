"""A check in UNIFIED_ONLY compares legacy as it will be after the replay.

Legacy is frozen in phase 4 by design; the changes made meanwhile are recorded for
replay. Counting them as mismatches would drop the consistency rate with every write
and let the critical alert roll back a healthy phase 4.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from conftest import Database
from support.cli_run import cli
from unistatus.adapter.core import DualWriteAdapter
from unistatus.db.control import get_mode, set_mode
from unistatus.db.tables import migration_control as control
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.domain.statuses import LegacySystemType as S
from unistatus.migration.check import run_check
from unistatus.migration.replay import replay_pending


def _walk(adapter: DualWriteAdapter, ids: list[str], status: str) -> None:
    for entity_id in ids:
        result = adapter.update_status(entity_id, status, "walk", "test")
        assert result.overall_success, result.error


def test_frozen_legacy_with_pending_changes_is_consistent(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    ids = [
        str(adapter.create_transaction("ESCROW", i, Decimal("10.5"), "EUR").entity_id)
        for i in range(1, 7)
    ]
    assert run_check(db.engine, db.settings).consistency_rate == 1.0

    set_mode(db.engine, M.UNIFIED_ONLY, reason="phase 4")
    adapter.modes.refresh()
    _walk(adapter, ids[:4], "AWAITING_PAYMENT")  # legacy frozen at CREATED for these

    report = run_check(db.engine, db.settings)
    assert (report.consistent, report.total) == (6, 6), report.as_dict()
    assert all(adapter.check_consistency(i)["consistent"] for i in ids)

    # A real problem is still seen: a unified row whose legacy image no longer fits.
    with db.engine.begin() as conn:
        conn.execute(sa.update(U).where(U.c.id == ids[0]).values(legacy_status="DISPUTED"))
    report = run_check(db.engine, db.settings)
    assert report.inconsistencies["status_mismatch"] == 1
    assert not adapter.check_consistency(ids[0])["consistent"]  # the two checks agree
    with db.engine.begin() as conn:
        conn.execute(sa.update(U).where(U.c.id == ids[0]).values(legacy_status="PAYMENT_PENDING"))

    # After the replay legacy really holds the values: consistent without projection.
    replay_pending(db.engine, db.settings, actor="test", reason="replay")
    report = run_check(db.engine, db.settings)
    assert (report.consistent, report.total) == (6, 6), report.as_dict()


def test_frozen_legacy_without_a_pending_change_is_a_mismatch(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    created = adapter.create_transaction("EXCHANGE", 3, Decimal("2"), "USDT")
    set_mode(db.engine, M.UNIFIED_ONLY, reason="phase 4")
    # Changed behind the adapter's back: nothing recorded for replay, so it shows.
    with db.engine.begin() as conn:
        conn.execute(sa.update(U).where(U.c.id == created.entity_id).values(status="FAILED"))
    report = run_check(db.engine, db.settings)
    assert report.inconsistencies["status_mismatch"] == 1
    assert not adapter.check_consistency(str(created.entity_id))["consistent"]


def test_unreplayed_changes_outside_unified_only_are_judged_as_they_are(db: Database) -> None:
    """A restored copy read LEGACY_ONLY (its control rows lost) with changes made in
    UNIFIED_ONLY never replayed: `check` said 302 of 302 consistent and `tx show` "both
    sides agree" by reading legacy as the replay would leave it, though legacy, the
    primary, was stale (exploratory restore test). The projection holds only while the
    system's legacy is frozen: in UNIFIED_ONLY."""
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    ids = [
        str(adapter.create_transaction("ESCROW", i, Decimal("10.5"), "EUR").entity_id)
        for i in range(1, 5)
    ]
    set_mode(db.engine, M.UNIFIED_ONLY, reason="phase 4")
    adapter.modes.refresh()
    _walk(adapter, ids[:2], "AWAITING_PAYMENT")  # legacy frozen at CREATED for these
    with db.engine.begin() as conn:  # the restored copy: no control row, LEGACY_ONLY
        conn.execute(sa.delete(control))
    assert get_mode(db.engine, S.ESCROW) is M.LEGACY_ONLY

    report = run_check(db.engine, db.settings)
    assert report.inconsistencies["status_mismatch"] == 2, report.as_dict()
    assert not DualWriteAdapter(db.engine, settings=db.settings).check_consistency(ids[0])[
        "consistent"
    ]
    from unistatus.migration.check import unreplayed_outside_unified_only

    with db.engine.connect() as conn:
        assert unreplayed_outside_unified_only(conn) == {S.ESCROW: 2}
    text = " ".join(cli(db.url, "check").output.split())
    assert "2 change(s) recorded in UNIFIED_ONLY were never replayed" in text, text
    assert "unistatus rollback --emergency" in text, text
    # The command it names replays them: legacy holds the values, the check agrees.
    assert cli(db.url, "rollback", "--emergency", "--reason", "restored copy").exit_code == 0
    report = run_check(db.engine, db.settings)
    assert (report.consistent, report.total) == (4, 4), report.as_dict()
