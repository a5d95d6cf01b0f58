"""The application's BEFORE UPDATE trigger changing the status unistatus writes
(PostgreSQL).

A payments application may decide a status change in the database: a ``BEFORE UPDATE``
trigger that holds a large cashout's approval for an admin (``NEW.status :=
'ADMIN_PENDING'``). The legacy row then holds the status the application's rule gave
it, not the one the adapter sent; the unified row, the change's history row, the result
and what the adapter remembers for its next write must hold the same, in every mode that
writes both sides and on every path a status change takes (the guarded statement in
autocommit, the locked path, the caller's transaction). The same for a create:
test_before_triggers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in
from support.app_triggers import holding_large_approvals, installed
from support.capture_data import captured, history_of, legacy_status, raw, unified_of
from unistatus import DualWriteAdapter, DualWriteMode, LegacySystemType
from unistatus.adapter import fast
from unistatus.db.tables import unified_transactions as U
from unistatus.migration import phases, rollback
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.check import run_check
from unistatus.migration.retire import retire_legacy_columns, undo_cleanup

M = DualWriteMode
DUAL = [M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY]
# strict: the guarded statement (autocommit); primary_wins: the locked path, side by side.
FALLBACKS = ["strict", "primary_wins"]
HELD = ("ADMIN_PENDING", "ADMIN_PENDING")


@pytest.fixture
def held_for_an_admin(pg: Database) -> Iterator[Database]:
    """The application's rule: a cashout over 1000 approved is held ADMIN_PENDING first
    (an admin's approval from there goes through)."""
    raw(
        pg,
        "CREATE FUNCTION app_hold_large_approval() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF NEW.status = 'APPROVED' AND NEW.amount > 1000 "
        "AND OLD.status <> 'ADMIN_PENDING' THEN NEW.status := 'ADMIN_PENDING'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER app_hold_large_approval BEFORE UPDATE ON cashouts FOR EACH ROW "
        "EXECUTE FUNCTION app_hold_large_approval()",
    )
    try:
        yield pg
    finally:
        raw(
            pg,
            "DROP TRIGGER IF EXISTS app_hold_large_approval ON cashouts",
            "DROP FUNCTION app_hold_large_approval()",
        )


def said(result: Any) -> tuple[str, str]:
    assert result.overall_success, result.error
    assert result.status is not None
    return result.status.value, result.legacy_status


def consistent(db: Database) -> None:
    report = run_check(db.engine, db.settings, store=False)
    assert report.is_consistent, dict(report.inconsistencies)


def as_the_rule_decided(db: Database, legacy_id: int) -> None:
    assert legacy_status(db, "cashouts", legacy_id) == "ADMIN_PENDING"
    u = unified_of(db, "CASHOUT", legacy_id)
    assert u is not None
    assert (u["status"], u["legacy_status"], u["version"]) == (*HELD, 2)
    *_, changed = history_of(db, "CASHOUT", legacy_id)
    assert (changed["from_status"], changed["to_status"], changed["to_legacy_status"]) == (
        "PENDING",
        *HELD,
    )
    consistent(db)


@pytest.mark.parametrize("fallback", FALLBACKS)
@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_a_change_holds_the_status_the_applications_rule_gave_it(
    held_for_an_admin: Database, mode: DualWriteMode, fallback: str
) -> None:
    db = held_for_an_admin
    a = adapter_in(db, mode, fallback=fallback)
    small = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
    assert said(a.update_status(small.entity_id, "APPROVED", "", "ops")) == (
        "FUNDS_HELD",
        "APPROVED",
    )
    held = a.update_status(large.entity_id, "APPROVED", "approved", "ops")
    assert said(held) == HELD
    as_the_rule_decided(db, int(large.legacy_entity_id))
    # The next change starts from the status held (what the adapter remembers too).
    approved = a.update_status(large.entity_id, "APPROVED", "by an admin", "admin")
    assert said(approved) == ("FUNDS_HELD", "APPROVED")
    u = unified_of(db, "CASHOUT", int(large.legacy_entity_id))
    assert u is not None and (u["status"], u["version"]) == ("FUNDS_HELD", 3)
    consistent(db)


@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_a_change_in_the_callers_transaction_holds_it_too(
    held_for_an_admin: Database, mode: DualWriteMode
) -> None:
    db = held_for_an_admin
    a = adapter_in(db, mode)
    large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
    with db.app_engine.connect() as conn, conn.begin():
        held = a.update_status(large.entity_id, "APPROVED", "", "ops", connection=conn)
    assert said(held) == HELD
    as_the_rule_decided(db, int(large.legacy_entity_id))


def test_legacy_only_says_what_was_stored(held_for_an_admin: Database) -> None:
    db = held_for_an_admin
    a = adapter_in(db, M.LEGACY_ONLY)
    large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
    held = a.update_status(f"cashout:{large.legacy_entity_id}", "APPROVED", "", "ops")
    assert said(held) == HELD
    assert legacy_status(db, "cashouts", int(large.legacy_entity_id)) == "ADMIN_PENDING"


@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_with_an_after_update_trigger_captured_too_the_chain_holds(
    held_for_an_admin: Database, mode: DualWriteMode
) -> None:
    """The same change's AFTER UPDATE trigger then cancels the held row (a nested UPDATE,
    which the capture mirrors at its statement's end): unified ends at what legacy ends
    at, its history an unbroken chain, nothing written over the captured change."""
    db = held_for_an_admin
    raw(
        db,
        "CREATE FUNCTION app_cancel_held() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.status = 'ADMIN_PENDING' THEN "
        "UPDATE cashouts SET status = 'CANCELLED' WHERE id = NEW.id; END IF; "
        "RETURN NULL; END $$",
        "CREATE TRIGGER app_cancel_held AFTER UPDATE ON cashouts FOR EACH ROW "
        "EXECUTE FUNCTION app_cancel_held()",
    )
    try:
        with captured(db):
            a = adapter_in(db, mode)
            large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
            r = a.update_status(large.entity_id, "APPROVED", "", "ops")
            assert r.overall_success, r.error
            legacy_id = int(large.legacy_entity_id)
            assert legacy_status(db, "cashouts", legacy_id) == "CANCELLED"
            u = unified_of(db, "CASHOUT", legacy_id)
            assert u is not None
            assert (u["status"], u["legacy_status"]) == ("CANCELLED", "CANCELLED")
            chain = [
                (h["from_status"], h["to_status"]) for h in history_of(db, "CASHOUT", legacy_id)
            ]
            assert [to for _, to in chain][-1] == "CANCELLED"
            assert all(a[1] == b[0] for a, b in zip(chain, chain[1:], strict=False)), chain
            consistent(db)
    finally:
        raw(db, "DROP TRIGGER app_cancel_held ON cashouts", "DROP FUNCTION app_cancel_held()")


@pytest.mark.parametrize("fallback", FALLBACKS)
@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_an_after_update_trigger_that_writes_the_row_again_is_not_overwritten(
    held_for_an_admin: Database, mode: DualWriteMode, fallback: str
) -> None:
    """The application's AFTER UPDATE trigger lets a trusted user's held approval through
    at once (a nested UPDATE back to APPROVED, which the legacy write's RETURNING does not
    show; the capture finds nothing to mirror, unified holding APPROVED already): the
    rewrite must not put ADMIN_PENDING over it (review: it did, in all four cases)."""
    db = held_for_an_admin
    raw(
        db,
        "CREATE FUNCTION app_release_trusted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.status = 'ADMIN_PENDING' AND NEW.user_id = 1 THEN "
        "UPDATE cashouts SET status = 'APPROVED' WHERE id = NEW.id; END IF; "
        "RETURN NULL; END $$",
        "CREATE TRIGGER app_release_trusted AFTER UPDATE ON cashouts FOR EACH ROW "
        "EXECUTE FUNCTION app_release_trusted()",
    )
    try:
        with captured(db):
            a = adapter_in(db, mode, fallback=fallback)
            large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
            r = a.update_status(large.entity_id, "APPROVED", "", "ops")
            assert said(r) == ("FUNDS_HELD", "APPROVED")
            legacy_id = int(large.legacy_entity_id)
            assert legacy_status(db, "cashouts", legacy_id) == "APPROVED"
            u = unified_of(db, "CASHOUT", legacy_id)
            assert u is not None and (u["status"], u["legacy_status"]) == ("FUNDS_HELD", "APPROVED")
            consistent(db)
    finally:
        raw(
            db,
            "DROP TRIGGER app_release_trusted ON cashouts",
            "DROP FUNCTION app_release_trusted()",
        )


@pytest.mark.parametrize("mode", [*DUAL, M.LEGACY_ONLY], ids=lambda m: m.value)
def test_the_locked_one_statement_path_holds_it_too(
    held_for_an_admin: Database, mode: DualWriteMode
) -> None:
    """Without the fast path (an adapter on a database without the locked mode function
    takes this path): LockedWriter's one statement (dual_write / legacy_write)."""
    db = held_for_an_admin
    a = adapter_in(db, mode)
    a.fast = None
    large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
    legacy_id = int(large.legacy_entity_id)
    assert said(a.update_status(f"cashout:{legacy_id}", "APPROVED", "", "ops")) == HELD
    if mode.writes_unified:
        as_the_rule_decided(db, legacy_id)


def test_the_result_says_what_legacy_stored_when_the_unified_side_was_queued(
    held_for_an_admin: Database,
) -> None:
    """primary_wins, legacy primary: the unified side refused (queued for repair); the
    result says what legacy, the authority, stored (review: it said the status sent)."""
    db = held_for_an_admin
    raw(
        db,
        "CREATE FUNCTION t_refuse_held() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.status = 'FUNDS_HELD' THEN RAISE EXCEPTION 'refused'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER t_refuse_held BEFORE UPDATE ON unified_transactions FOR EACH ROW "
        "EXECUTE FUNCTION t_refuse_held()",
    )
    try:
        a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
        large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
        r = a.update_status(large.entity_id, "APPROVED", "", "ops")
        assert r.primary_success and r.has_inconsistency, r.as_dict()
        assert r.status is not None and (r.status.value, r.legacy_status) == HELD
    finally:
        raw(
            db,
            "DROP TRIGGER t_refuse_held ON unified_transactions",
            "DROP FUNCTION t_refuse_held()",
        )


def lock_timeout_of(db: Database, ms: int) -> DualWriteAdapter:
    return DualWriteAdapter(db.url, settings=db.settings.model_copy(update={"lock_timeout_ms": ms}))


def rewrite_behind_a_lock(
    db: Database, entity_id: str, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The fast path's rewrite (its second transaction, in autocommit) waits out
    lock_timeout behind another writer of the unified row: the ids it was called for."""
    rewrite = fast.hold_change
    called: list[str] = []

    def behind_a_lock(conn: Any, mapper: Any, plan: Any, *args: Any) -> None:
        called.append(plan.entity.utx_id)
        with db.engine.connect() as other, other.begin():
            other.execute(sa.select(U.c.id).where(U.c.id == entity_id).with_for_update())
            rewrite(conn, mapper, plan, *args)

    monkeypatch.setattr(fast, "hold_change", behind_a_lock)
    return called


@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_on_a_table_with_a_holding_trigger_the_change_and_its_hold_are_one_transaction(
    held_for_an_admin: Database, mode: DualWriteMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter starts on a legacy table with the application's BEFORE UPDATE row
    trigger: a status change there is written with its hold in one transaction. The fast
    path's guarded statement commits on its own (autocommit), so its rewrite was a second
    transaction: one that failed (here it waits out lock_timeout behind another writer;
    a lost connection or a crash alike) left unified at the status sent and the result
    saying so, legacy at the status held (review)."""
    db = held_for_an_admin
    adapter_in(db, mode).close()  # the mode
    a = lock_timeout_of(db, 200)
    try:
        large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
        rewrite_behind_a_lock(db, str(large.entity_id), monkeypatch)
        r = a.update_status(large.entity_id, "APPROVED", "approved", "ops")
    finally:
        a.close()
    assert said(r) == HELD
    as_the_rule_decided(db, int(large.legacy_entity_id))


@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_a_rewrite_that_fails_after_the_fast_path_committed_is_never_retried(
    pg: Database, mode: DualWriteMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The application's trigger was created after the adapter started, so its first
    held change took the fast path: the guarded statement committed (legacy held
    ADMIN_PENDING), and its rewrite then waits out lock_timeout behind another
    transaction. The change stands as written, left for check and repair: never retried,
    which planned from the status held and approved it past the application's rule
    (review). The adapter has learned the table holds statuses: the next held change
    there is one transaction."""
    db = pg
    adapter_in(db, mode).close()  # the mode
    a = lock_timeout_of(db, 200)
    try:
        first = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
        second = a.create_transaction("WALLET_CASHOUT", 1, "6000", "USD")
        with holding_large_approvals(db):
            called = rewrite_behind_a_lock(db, str(first.entity_id), monkeypatch)
            r = a.update_status(first.entity_id, "APPROVED", "", "ops")
            assert r.overall_success and not r.outcome_unknown, r.as_dict()
            first_id = int(first.legacy_entity_id)
            assert legacy_status(db, "cashouts", first_id) == "ADMIN_PENDING"  # the rule stands
            ops = [h["operation_id"] for h in history_of(db, "CASHOUT", first_id)]
            assert ops.count(r.operation_id) == 1
            report = run_check(db.engine, db.settings, store=False)
            assert report.inconsistencies["status_mismatch"] == 1  # for repair
            assert called == [first.entity_id]
            called.clear()
            rewrite_behind_a_lock(db, str(second.entity_id), monkeypatch)
            r2 = a.update_status(second.entity_id, "APPROVED", "", "ops")
            assert said(r2) == HELD
            u = unified_of(db, "CASHOUT", int(second.legacy_entity_id))
            assert u is not None and (u["status"], u["legacy_status"]) == HELD
    finally:
        a.close()


def test_a_trigger_that_never_names_the_status_keeps_the_fast_path(pg: Database) -> None:
    """The common BEFORE UPDATE trigger (``NEW.updated_at := now()``, and a column whose
    name only begins with the status's) cannot hold a status: the table keeps the fast
    path (the guarded statement counts its attempt); one that names it takes the locked
    path."""
    db = pg
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    a.close()
    with installed(
        db,
        [
            "CREATE FUNCTION t_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "NEW.updated_at := now(); PERFORM 1 WHERE NEW.status_changed IS NULL; "
            "RETURN NEW; END $$",
            "ALTER TABLE cashouts ADD COLUMN status_changed timestamptz",
            "CREATE TRIGGER t_touch BEFORE UPDATE ON cashouts FOR EACH ROW "
            "EXECUTE FUNCTION t_touch()",
        ],
        [
            "DROP TRIGGER t_touch ON cashouts",
            "ALTER TABLE cashouts DROP COLUMN status_changed",
            "DROP FUNCTION t_touch()",
        ],
    ):
        touched = DualWriteAdapter(db.url, settings=db.settings)
        try:
            tx = touched.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
            assert said(touched.update_status(tx.entity_id, "APPROVED", "", "ops")) == (
                "FUNDS_HELD",
                "APPROVED",
            )
            assert touched.fast is not None
            assert touched.fast.holding == set()
            assert touched.fast.hits + touched.fast.misses == 1
        finally:
            touched.close()
        with holding_large_approvals(db):
            holding = DualWriteAdapter(db.url, settings=db.settings)
            try:
                assert holding.fast is not None and holding.fast.holding == {
                    LegacySystemType.CASHOUT
                }
                tx = holding.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
                holding.update_status(tx.entity_id, "APPROVED", "", "ops")
                assert holding.fast.hits + holding.fast.misses == 0
            finally:
                holding.close()
    consistent(db)


def test_an_adapter_started_while_the_status_was_retired_finds_the_trigger_once_restored(
    held_for_an_admin: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter starts in phase 4 (the status column retired: its trigger names a
    column the table does not have), a rollback restores the column and the mode writes
    both sides again: the reflection that picks the column up finds the trigger too, and
    the held change is one transaction (review: it took the fast path, two
    transactions)."""
    db = held_for_an_admin
    before = DualWriteAdapter(db.engine, settings=db.settings)
    phases.advance(db.engine, db.settings, actor="t")
    before.modes.refresh()
    large = before.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
    before.close()
    for _ in range(3):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    record_verified(db.engine, verify_archive(db.engine, out), actor="t")
    # The retirement refuses a trigger that reads the status column (every UPDATE of the
    # table would fail after the drop): as an application would, it is put back after.
    raw(db, "DROP TRIGGER app_hold_large_approval ON cashouts")
    try:
        retire_legacy_columns(db.engine, db.settings)
        raw(
            db,
            "CREATE TRIGGER app_hold_large_approval BEFORE UPDATE ON cashouts FOR EACH ROW "
            "EXECUTE FUNCTION app_hold_large_approval()",
        )
        a = lock_timeout_of(db, 200)
        try:
            rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="r")
            a.modes.refresh()
            rewrite_behind_a_lock(db, str(large.entity_id), monkeypatch)
            r = a.update_status(large.entity_id, "APPROVED", "", "ops")
        finally:
            a.close()
        assert said(r) == HELD
        u = unified_of(db, "CASHOUT", int(large.legacy_entity_id))
        assert u is not None and (u["status"], u["legacy_status"]) == HELD
    finally:
        undo_cleanup(db.engine, db.settings)
