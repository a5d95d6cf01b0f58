"""A rollback's replay whose legacy UPDATE the database refuses for one row (a CHECK
constraint, a trigger of the application's, a value its type lacks) records that row as
a replay conflict and writes the others: one row never stops a rollback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import Database
from support.app_triggers import holding_large_approvals, installed
from unistatus import DualWriteAdapter, DualWriteMode, InputError
from unistatus.db.control import get_mode
from unistatus.migration import phases, rollback
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair
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


def test_a_replayed_status_the_applications_trigger_changed_is_counted_and_left_to_repair(
    db: Database,
) -> None:
    """The replay writes APPROVED and the application's trigger stores ADMIN_PENDING
    instead (its decision, as when the adapter writes it): counted (legacy_held) and
    logged, not a conflict, which would keep ``repair`` off it until an operator
    decided; ``check`` finds it and ``repair --strategy legacy_wins`` brings unified to
    legacy. A row the application's trigger deletes is a conflict (legacy_missing)."""
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
    with holding_large_approvals(db), deleting_cancelled(db):
        change = rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="t")
    assert pending_count(db.engine) == 0
    replay = change.details["replay"]
    assert (replay["legacy_updated"], replay["legacy_held"], replay["conflicts"]) == (1, 1, 1)
    assert legacy_status(db, large.legacy_entity_id) == "ADMIN_PENDING"
    (conflict,) = list_conflicts(db.engine)
    assert (conflict.transaction_id, conflict.cause) == (other.entity_id, "legacy_missing")
    report = run_check(db.engine, db.settings, store=False)
    assert report.inconsistencies["status_mismatch"] == 1
    repaired = run_repair(db.engine, db.settings, strategy="legacy_wins", reason="t")
    assert repaired.failed == 0, repaired.errors
    report = run_check(db.engine, db.settings, store=False)
    assert report.inconsistencies["status_mismatch"] == 0, dict(report.inconsistencies)


@contextmanager
def deleting_cancelled(db: Database) -> Iterator[None]:
    """The application deletes a cashout once CANCELLED (a trigger; dropped after)."""
    if db.backend == "postgres":
        add = [
            "CREATE FUNCTION t_purge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "DELETE FROM cashouts WHERE id = NEW.id; RETURN NULL; END $$",
            "CREATE TRIGGER t_purge AFTER UPDATE ON cashouts FOR EACH ROW "
            "WHEN (NEW.status = 'CANCELLED') EXECUTE FUNCTION t_purge()",
        ]
        drop = ["DROP TRIGGER t_purge ON cashouts", "DROP FUNCTION t_purge()"]
    else:
        add = [
            "CREATE TRIGGER t_purge AFTER UPDATE ON cashouts WHEN NEW.status = 'CANCELLED' "
            "BEGIN DELETE FROM cashouts WHERE id = NEW.id; END"
        ]
        drop = ["DROP TRIGGER t_purge"]
    with installed(db, add, drop):
        yield


def test_resolving_a_conflict_with_apply_while_the_application_holds_it_is_refused(
    db: Database,
) -> None:
    """A conflict (legacy changed by hand while frozen) applied while the application's
    trigger holds the replayed status: refused, nothing written; --keep-legacy still
    closes it."""
    advance(db, 1)
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    try:
        large = adapter.create_transaction("WALLET_CASHOUT", 7, "5000", "USD")
        advance(db, 3)
        adapter.modes.refresh()
        assert adapter.update_status(large.entity_id, "APPROVED", "t", "t").changed
    finally:
        adapter.close()
    with db.engine.begin() as conn:  # legacy moved on by hand while frozen
        conn.exec_driver_sql(
            f"UPDATE cashouts SET status = 'OTP_PENDING' WHERE id = {large.legacy_entity_id}"
        )
    rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="t")
    (conflict,) = list_conflicts(db.engine)
    assert conflict.cause == "legacy_changed"
    with holding_large_approvals(db), pytest.raises(InputError, match="ADMIN_PENDING"):
        resolve(db.engine, db.settings, conflict.id, action="apply", actor="ops", reason="t")
    assert legacy_status(db, large.legacy_entity_id) == "OTP_PENDING"
    resolve(db.engine, db.settings, conflict.id, action="keep_legacy", actor="ops", reason="t")
    report = run_check(db.engine, db.settings, store=False)
    assert report.is_consistent, dict(report.inconsistencies)


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_a_legacy_row_the_replay_creates_and_the_application_holds_is_counted(
    pg: Database,
) -> None:
    """A transaction born in UNIFIED_ONLY gets its legacy row from the replay; the
    application's BEFORE INSERT trigger holds it ADMIN_PENDING (review: counted replayed,
    nothing said)."""
    advance(pg, 4)
    assert get_mode(pg.engine) is M.UNIFIED_ONLY
    adapter = DualWriteAdapter(pg.engine, settings=pg.settings, record_stats=False)
    try:
        born = adapter.create_transaction("WALLET_CASHOUT", 7, "5000", "USD")
        assert born.overall_success, born.as_dict()
    finally:
        adapter.close()
    hold = [
        "CREATE FUNCTION t_hold_new() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.amount > 1000 THEN NEW.status := 'ADMIN_PENDING'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER t_hold_new BEFORE INSERT ON cashouts FOR EACH ROW "
        "EXECUTE FUNCTION t_hold_new()",
    ]
    with installed(pg, hold, ["DROP TRIGGER t_hold_new ON cashouts", "DROP FUNCTION t_hold_new()"]):
        change = rollback.rollback_current_phase(pg.engine, pg.settings, actor="ops", reason="t")
    replay = change.details["replay"]
    assert (replay["legacy_created"], replay["legacy_held"], replay["conflicts"]) == (1, 1, 0)
