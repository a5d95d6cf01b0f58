"""A transaction's pending changes split over several replay batches.

The replay reads the pending changes in batches of ``batch_size`` rows, so a busy
transaction's changes straddle batch boundaries (1,200 forced updates with the default
1,000). It must end as if the changes were one: replayed to the last one, or, when
legacy moved on, ONE conflict holding all of them and the latest target (not one per
batch, whose first ``--apply`` would write an intermediate status). Small batches here.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.db.control import get_mode
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.migration import phases, rollback
from unistatus.migration.replay import pending_count, replay_pending
from unistatus.migration.replay_conflicts import list_conflicts
from unistatus.migration.replay_resolve import resolve

M = DualWriteMode
WALK = ["OTP_PENDING", "ADMIN_PENDING", "APPROVED"]
CHANGES = 7  # with batches of 3: the changes of one transaction span three batches
BATCH = 3


def advance(db: Database, times: int) -> None:
    for _ in range(times):
        phases.advance(db.engine, db.settings, actor="setup", force=True, reason="test setup")


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rollback replays in batches of BATCH pending changes."""
    monkeypatch.setattr(
        rollback, "replay_pending", functools.partial(replay_pending, batch_size=BATCH)
    )


def legacy_status(db: Database, legacy_id: int | None) -> Any:
    with db.engine.connect() as conn:
        return conn.exec_driver_sql(
            f"SELECT status FROM cashouts WHERE id = {legacy_id}"
        ).scalar_one()


def hammered(db: Database, n: int, others: int = 0) -> tuple[Any, list[Any]]:
    """A cashout created in dual write, then ``n`` forced updates of it in phase 4
    (UNIFIED_ONLY), the last to APPROVED; ``others`` cashouts updated between them, so
    the batches cut through its changes at other places too."""
    advance(db, 1)
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    try:
        made = []
        for _ in range(1 + others):
            c = adapter.create_transaction("WALLET_CASHOUT", 7, "10", "USD")
            assert c.overall_success and c.entity_id, c.as_dict()
            made.append(c)
        advance(db, 3)
        assert get_mode(db.engine) is M.UNIFIED_ONLY
        adapter.modes.refresh()
        walk = [WALK[(i - n) % 3] for i in range(n)]
        assert walk[-1] == "APPROVED"
        for i, status in enumerate(walk):
            r = adapter.update_status(made[0].entity_id, status, "h", "h", force=True)
            assert r.overall_success, r.as_dict()
            for other in made[1:]:
                if i % 2 == 0:
                    r = adapter.update_status(other.entity_id, WALK[i % 3], "h", "h", force=True)
                    assert r.overall_success, r.as_dict()
    finally:
        adapter.close()
    return made[0], made[1:]


def legacy_image(db: Database, utx_id: str) -> Any:
    """The legacy status unified's newest change leaves (what legacy must end up holding)."""
    U = unified_transactions
    with db.engine.connect() as conn:
        return conn.execute(sa.select(U.c.legacy_status).where(U.c.id == utx_id)).scalar_one()


@pytest.mark.usefixtures("small_batches")
def test_a_transaction_in_conflict_over_several_batches_is_one_conflict_with_its_latest_target(
    db: Database,
) -> None:
    tx, _ = hammered(db, CHANGES)
    final = legacy_image(db, tx.entity_id)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE cashouts SET status = 'CANCELLED' WHERE id = {tx.legacy_entity_id}"
        )
    change = rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="back")
    assert pending_count(db.engine) == 0
    replay = change.details["replay"]
    assert (replay["conflicts"], replay["conflicted_changes"]) == (1, CHANGES), replay
    [conflict] = list_conflicts(db.engine)
    assert conflict.transaction_id == tx.entity_id and conflict.legacy_actual == "CANCELLED"
    assert (conflict.replay_status, conflict.changes) == (final, CHANGES)
    assert legacy_status(db, tx.legacy_entity_id) == "CANCELLED"  # never overwritten
    # --apply writes the transaction's latest status, not an intermediate one.
    resolve(db.engine, db.settings, conflict.id, action="apply", actor="ops", reason="psp")
    assert legacy_status(db, tx.legacy_entity_id) == final


@pytest.mark.usefixtures("small_batches")
def test_a_transaction_straddling_batches_replays_to_its_last_change_once(db: Database) -> None:
    tx, others = hammered(db, CHANGES, others=1)
    final = legacy_image(db, tx.entity_id)
    with db.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(pending_legacy_changes))
        pending = int(total.scalar_one())
    assert pending > CHANGES
    change = rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="back")
    replay = change.details["replay"]
    assert (replay["conflicts"], replay["replayed"]) == (0, pending), replay
    assert replay["batches"] >= pending // BATCH
    assert pending_count(db.engine) == 0 and list_conflicts(db.engine) == []
    assert legacy_status(db, tx.legacy_entity_id) == final
    for other in others:
        assert legacy_status(db, other.legacy_entity_id) == legacy_image(db, other.entity_id)
