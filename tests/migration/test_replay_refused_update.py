"""A rollback's replay whose legacy UPDATE the database refuses for one row (a CHECK
constraint, a trigger of the application's, a value its type lacks) records that row as
a replay conflict and writes the others: one row never stops a rollback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import Database
from support.app_triggers import holding_large_approvals
from unistatus import DualWriteAdapter, DualWriteMode, InputError
from unistatus.db.control import get_mode
from unistatus.migration import phases, rollback
from unistatus.migration.check import run_check
from unistatus.migration.replay import pending_count
from unistatus.migration.replay_conflicts import list_conflicts
from unistatus.migration.replay_resolve import resolve

M = DualWriteMode


def advance(db: Database, times: int) -> None:
    for _ in range(times):
        phases.advance(db.engine, db.settings, actor="setup", force=True, reason="test setup")


@contextmanager
def refusing_failed(db: Database) -> Iterator[None]:
    """The legacy table refuses the status FAILED from now on (dropped afterwards: the
    PostgreSQL database is shared)."""
    if db.backend == "postgres":
        add = "ALTER TABLE cashouts ADD CONSTRAINT t_no_failed CHECK (status <> 'FAILED')"
        drop = "ALTER TABLE cashouts DROP CONSTRAINT t_no_failed"
    else:
        add = (
            "CREATE TRIGGER t_no_failed BEFORE UPDATE ON cashouts WHEN NEW.status = "
            "'FAILED' BEGIN SELECT RAISE(ABORT, 't_no_failed'); END"
        )
        drop = "DROP TRIGGER t_no_failed"
    with db.engine.begin() as conn:
        conn.exec_driver_sql(add)
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(drop)


def legacy_status(db: Database, legacy_id: int | None) -> Any:
    with db.engine.connect() as conn:
        return conn.exec_driver_sql(
            f"SELECT status FROM cashouts WHERE id = {legacy_id}"
        ).scalar_one()


def test_a_refused_legacy_update_is_a_conflict_and_the_rollback_completes(
    db: Database,
) -> None:
    advance(db, 1)  # dual write, legacy primary
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    try:
        created = []
        for _ in range(3):
            c = adapter.create_transaction("WALLET_CASHOUT", 7, "10", "USD", status="PROCESSING")
            assert c.overall_success and c.entity_id, c.as_dict()
            created.append(c)
        refused, fine, also = created
        advance(db, 3)
        assert get_mode(db.engine) is M.UNIFIED_ONLY
        adapter.modes.refresh()
        for c, status in ((refused, "FAILED"), (fine, "AWAITING_RESPONSE"), (also, "SUCCESS")):
            r = adapter.update_status(c.entity_id, status, "t", "t")
            assert r.overall_success and r.changed, r.as_dict()
    finally:
        adapter.close()
    with refusing_failed(db):
        change = rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="t")
    assert change.to_mode is M.DUAL_WRITE_LEGACY_PRIMARY
    assert pending_count(db.engine) == 0
    replay = change.details["replay"]
    assert (replay["legacy_updated"], replay["conflicts"]) == (2, 1)
    assert legacy_status(db, refused.legacy_entity_id) == "EXECUTING"  # left as it was
    assert legacy_status(db, fine.legacy_entity_id) == "AWAITING_RESPONSE"
    assert legacy_status(db, also.legacy_entity_id) == "SUCCESS"
    (conflict,) = list_conflicts(db.engine)
    assert (conflict.transaction_id, conflict.cause) == (refused.entity_id, "legacy_update_refused")
    assert (conflict.legacy_actual, conflict.replay_status) == ("EXECUTING", "FAILED")


def test_a_replayed_status_the_applications_trigger_changed_is_a_conflict(db: Database) -> None:
    """The replay writes APPROVED and the application's trigger stores ADMIN_PENDING
    instead: legacy no longer holds what unified says, so the change is not counted as
    replayed but kept as a conflict (cause legacy_held, legacy's status as found), and
    ``--keep-legacy`` brings unified to it."""
    advance(db, 1)  # dual write, legacy primary
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    try:
        large = adapter.create_transaction("WALLET_CASHOUT", 7, "5000", "USD")
        other = adapter.create_transaction("WALLET_CASHOUT", 7, "5000", "USD")
        advance(db, 3)
        assert get_mode(db.engine) is M.UNIFIED_ONLY
        adapter.modes.refresh()
        for c, status in ((large, "APPROVED"), (other, "CANCELLED")):
            r = adapter.update_status(c.entity_id, status, "t", "t")
            assert r.overall_success and r.changed, r.as_dict()
    finally:
        adapter.close()
    with holding_large_approvals(db):
        change = rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="t")
    assert pending_count(db.engine) == 0
    replay = change.details["replay"]
    assert (replay["legacy_updated"], replay["conflicts"]) == (1, 1), replay
    assert legacy_status(db, large.legacy_entity_id) == "ADMIN_PENDING"
    assert legacy_status(db, other.legacy_entity_id) == "CANCELLED"
    (conflict,) = list_conflicts(db.engine)
    assert (conflict.transaction_id, conflict.cause) == (large.entity_id, "legacy_held")
    assert (conflict.legacy_actual, conflict.replay_status) == ("ADMIN_PENDING", "APPROVED")
    with holding_large_approvals(db), pytest.raises(InputError, match="ADMIN_PENDING"):
        # Applied again, the application holds it again: refused, nothing written.
        resolve(db.engine, db.settings, conflict.id, action="apply", actor="ops", reason="t")
    assert legacy_status(db, large.legacy_entity_id) == "ADMIN_PENDING"
    resolve(db.engine, db.settings, conflict.id, action="keep_legacy", actor="ops", reason="t")
    report = run_check(db.engine, db.settings, store=False)
    assert report.is_consistent, dict(report.inconsistencies)
