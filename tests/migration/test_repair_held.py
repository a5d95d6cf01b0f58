"""A repair whose legacy write a trigger of the application's changes (holds a large
approval ADMIN_PENDING): the entity is not repaired, nothing of it is written, and the
report says why; ``legacy_wins`` then brings unified to legacy."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in
from support.app_triggers import holding_large_approvals, installed
from support.capture_data import history_of, legacy_status, unified_of
from support.missing_legacy import refused_creates, unified
from unistatus import DualWriteMode
from unistatus.db.tables import unified_transactions as U
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair


def test_a_legacy_write_the_applications_trigger_changes_is_not_a_repair(db: Database) -> None:
    a = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    large = a.create_transaction("WALLET_CASHOUT", 7, "5000", "USD")
    legacy_id = int(large.legacy_entity_id)
    with db.engine.begin() as conn:  # unified ahead of legacy: unified_wins writes legacy
        conn.execute(
            sa.update(U)
            .where(U.c.id == large.entity_id)
            .values(status="FUNDS_HELD", legacy_status="APPROVED", version=U.c.version + 1)
        )
    before = (unified_of(db, "CASHOUT", legacy_id), len(history_of(db, "CASHOUT", legacy_id)))
    with holding_large_approvals(db):
        report = run_repair(db.engine, db.settings, strategy="unified_wins", reason="t")
        assert (report.repaired, report.failed) == (0, 1), report
        (error,) = report.errors
        assert "ADMIN_PENDING" in error and "APPROVED" in error, error
        assert legacy_status(db, "cashouts", legacy_id) == "PENDING"  # rolled back
        after = (unified_of(db, "CASHOUT", legacy_id), len(history_of(db, "CASHOUT", legacy_id)))
        assert after == before
        fixed = run_repair(db.engine, db.settings, strategy="legacy_wins", reason="t")
        assert (fixed.repaired, fixed.failed) == (1, 0), fixed
    report_after = run_check(db.engine, db.settings, store=False)
    assert report_after.is_consistent, dict(report_after.inconsistencies)


@pytest.mark.parametrize("pg", ["postgres"], indirect=True)
def test_a_legacy_row_the_repair_creates_and_the_application_holds_is_not_a_repair(
    pg: Database,
) -> None:
    """A transaction acknowledged without its legacy row (missing_legacy): the repair
    creates it, and the application's BEFORE INSERT trigger holds it ADMIN_PENDING
    (review: counted repaired, its audit saying PENDING). Failed, nothing written."""
    _, _, (missing,) = refused_creates(pg)
    hold = [
        "CREATE FUNCTION t_hold_new() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "NEW.status := 'ADMIN_PENDING'; RETURN NEW; END $$",
        "CREATE TRIGGER t_hold_new BEFORE INSERT ON cashouts FOR EACH ROW "
        "EXECUTE FUNCTION t_hold_new()",
    ]
    with installed(pg, hold, ["DROP TRIGGER t_hold_new ON cashouts", "DROP FUNCTION t_hold_new()"]):
        report = run_repair(pg.engine, pg.settings, strategy="legacy_wins", reason="t")
    assert (report.repaired, report.failed) == (0, 1), report
    assert "ADMIN_PENDING" in report.errors[0], report.errors
    assert unified(pg, missing).legacy_id is None  # nothing written: still queued
