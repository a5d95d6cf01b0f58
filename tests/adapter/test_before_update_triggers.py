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
from typing import Any

import pytest

from conftest import Database
from support.adapters import adapter_in
from support.capture_data import captured, history_of, legacy_status, raw, unified_of
from unistatus import DualWriteMode
from unistatus.migration.check import run_check

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
            "DROP TRIGGER app_hold_large_approval ON cashouts",
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
