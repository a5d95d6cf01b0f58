"""The application's BEFORE row trigger changing the row unistatus writes (PostgreSQL).

A payments application may decide a status in the database: a ``BEFORE INSERT`` trigger
that holds every large cashout for an admin (``NEW.status := 'ADMIN_PENDING'``). The
legacy row then holds the status the application's rule gave it, not the one the adapter
sent; the unified row, its history and the result must hold the same, as they would had
the caller asked for it, in every mode that writes both sides and on every path a create
takes (one statement, statement by statement, the caller's transaction).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in
from support.capture_data import captured, history_of, legacy_status, raw, unified_of
from unistatus import DualWriteMode
from unistatus.adapter.create import Creator
from unistatus.migration.check import run_check

M = DualWriteMode
DUAL = [M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY]


@pytest.fixture
def held_for_an_admin(pg: Database) -> Iterator[Database]:
    """The application's rule: a cashout over 1000 is created ADMIN_PENDING."""
    raw(
        pg,
        "CREATE FUNCTION app_hold_large() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.amount > 1000 THEN NEW.status := 'ADMIN_PENDING'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER app_hold_large BEFORE INSERT ON cashouts FOR EACH ROW "
        "EXECUTE FUNCTION app_hold_large()",
    )
    try:
        yield pg
    finally:
        raw(pg, "DROP TRIGGER app_hold_large ON cashouts", "DROP FUNCTION app_hold_large()")


def as_the_rule_decided(db: Database, result: Any) -> None:
    assert result.overall_success, result.error
    legacy_id = int(result.legacy_entity_id)
    assert legacy_status(db, "cashouts", legacy_id) == "ADMIN_PENDING"
    u = unified_of(db, "CASHOUT", legacy_id)
    assert u is not None
    assert (u["status"], u["legacy_status"]) == ("ADMIN_PENDING", "ADMIN_PENDING")
    (created,) = history_of(db, "CASHOUT", legacy_id)
    assert (created["to_status"], created["to_legacy_status"]) == ("ADMIN_PENDING", "ADMIN_PENDING")
    report = run_check(db.engine, db.settings, store=False)
    assert report.is_consistent, dict(report.inconsistencies)


@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_a_create_holds_the_status_the_applications_rule_gave_it(
    held_for_an_admin: Database, mode: DualWriteMode
) -> None:
    db = held_for_an_admin
    a = adapter_in(db, mode)
    small = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
    assert unified_of(db, "CASHOUT", int(small.legacy_entity_id))["status"] == "PENDING"
    as_the_rule_decided(db, large)


@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_a_create_in_the_callers_transaction_holds_it_too(
    held_for_an_admin: Database, mode: DualWriteMode
) -> None:
    db = held_for_an_admin
    a = adapter_in(db, mode)
    with db.app_engine.connect() as conn, conn.begin():
        large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD", connection=conn)
    as_the_rule_decided(db, large)


@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_the_result_and_its_replay_by_key_say_what_was_stored(
    held_for_an_admin: Database, mode: DualWriteMode
) -> None:
    db = held_for_an_admin
    a = adapter_in(db, mode)
    first = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD", idempotency_key="k-1")
    again = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD", idempotency_key="k-1")
    as_the_rule_decided(db, first)
    for result in (first, again):
        assert result.status is not None
        assert (result.status.value, result.legacy_status) == ("ADMIN_PENDING", "ADMIN_PENDING")
    assert again.entity_id == first.entity_id
    # The next change starts from the status stored (ADMIN_PENDING -> PROCESSING).
    moved = a.update_status(first.entity_id, "PROCESSING", "approved by an admin", "admin")
    assert moved.overall_success, moved.error


def test_legacy_only_says_what_was_stored(held_for_an_admin: Database) -> None:
    db = held_for_an_admin
    a = adapter_in(db, M.LEGACY_ONLY)
    large = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD")
    assert large.overall_success and large.legacy_status == "ADMIN_PENDING"
    assert legacy_status(db, "cashouts", int(large.legacy_entity_id)) == "ADMIN_PENDING"


@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_a_create_written_statement_by_statement_holds_it_too(
    held_for_an_admin: Database, mode: DualWriteMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path a create takes once its one statement was refused under primary_wins
    (a lock timeout, say): legacy INSERT, then the unified row from what it stored."""

    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise sa.exc.OperationalError("simulated", {}, Exception("lock timeout (simulated)"))

    monkeypatch.setattr(Creator, "_create_in_one_statement", refused)
    db = held_for_an_admin
    a = adapter_in(db, mode, fallback="primary_wins")
    first = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD", idempotency_key="k-2")
    again = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD", idempotency_key="k-2")
    assert first.secondary_success, first.error
    as_the_rule_decided(db, first)
    for result in (first, again):
        assert result.status is not None
        assert (result.status.value, result.legacy_status) == ("ADMIN_PENDING", "ADMIN_PENDING")


@pytest.mark.parametrize("mode", DUAL, ids=lambda m: m.value)
def test_with_an_after_insert_trigger_captured_too_the_chain_holds(
    held_for_an_admin: Database, mode: DualWriteMode
) -> None:
    """The same create's AFTER INSERT trigger then approves the row (a nested UPDATE,
    which the capture mirrors at the statement's end, from the status sent): unified
    ends at what legacy ends at, its history an unbroken chain (review: a rewrite after
    the statement put ADMIN_PENDING back over the captured change, at version 2)."""
    db = held_for_an_admin
    raw(
        db,
        "CREATE FUNCTION app_approve() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "UPDATE cashouts SET status = 'APPROVED' WHERE id = NEW.id; RETURN NULL; END $$",
        "CREATE TRIGGER app_approve AFTER INSERT ON cashouts FOR EACH ROW "
        "EXECUTE FUNCTION app_approve()",
    )
    try:
        with captured(db):
            a = adapter_in(db, mode)
            r = a.create_transaction("WALLET_CASHOUT", 1, "5000", "USD", idempotency_key="k-3")
            assert r.overall_success, r.error
            legacy_id = int(r.legacy_entity_id)
            assert legacy_status(db, "cashouts", legacy_id) == "APPROVED"
            u = unified_of(db, "CASHOUT", legacy_id)
            assert u is not None
            assert (u["status"], u["legacy_status"], u["version"]) == ("FUNDS_HELD", "APPROVED", 2)
            chain = [
                (h["from_status"], h["to_status"]) for h in history_of(db, "CASHOUT", legacy_id)
            ]
            assert chain == [(None, "PENDING"), ("PENDING", "FUNDS_HELD")]
            report = run_check(db.engine, db.settings, store=False)
            assert report.is_consistent, dict(report.inconsistencies)
    finally:
        raw(db, "DROP TRIGGER app_approve ON cashouts", "DROP FUNCTION app_approve()")
