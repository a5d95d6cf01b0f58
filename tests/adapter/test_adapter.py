"""DualWriteAdapter behaviour on SQLite and PostgreSQL, asserted in the database rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in, snapshot
from unistatus import (
    DualWriteAdapter,
    DualWriteMode,
    EscrowStatus,
    ExchangeStatus,
    LegacyRef,
    LegacySystemType,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.adapter.core import OperationEvent
from unistatus.db.control import set_mode
from unistatus.db.tables import (
    legacy_metadata,
    pending_legacy_changes,
    status_history,
    unified_transactions,
)
from unistatus.errors import (
    EntityNotFoundError,
    InputError,
    InvalidIdentifierError,
    InvalidStatusError,
    InvalidTransitionError,
    UnistatusError,
    UnmappableStoredStatusError,
)

M = DualWriteMode
U = unified_transactions
H = status_history


def switch(adapter: DualWriteAdapter, db: Database, mode: DualWriteMode) -> None:
    set_mode(db.engine, mode, reason="test", actor="test")
    assert adapter.modes.refresh() is mode


def legacy_row(db: Database, system: str, legacy_id: int) -> dict[str, Any] | None:
    t = legacy_metadata.tables[system]
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == legacy_id)).mappings().first()
    return dict(row) if row else None


def unified_row(db: Database, utx_id: str) -> dict[str, Any] | None:
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(U).where(U.c.id == utx_id)).mappings().first()
    return dict(row) if row else None


def history(db: Database, utx_id: str) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        q = sa.select(H).where(H.c.transaction_id == utx_id).order_by(H.c.id)
        return [dict(r) for r in conn.execute(q).mappings()]


def pending(db: Database) -> list[tuple[str, str, str | None]]:
    P = pending_legacy_changes
    with db.engine.connect() as conn:
        q = sa.select(P.c.transaction_id, P.c.kind, P.c.legacy_status).order_by(P.c.id)
        return [tuple(r) for r in conn.execute(q)]  # type: ignore[misc]


def seed_legacy(db: Database, system: str, status: str | None, **fields: Any) -> int:
    """A legacy row written by the legacy app (not backfilled: no unified row)."""
    t = legacy_metadata.tables[system]
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    values = {"user_id": 11, "amount": Decimal("42.5"), "currency": "USD", "status": status}
    values |= {"created_at": now, "updated_at": now, **fields}
    with db.engine.begin() as conn:
        return int(conn.execute(sa.insert(t).values(values).returning(t.c.id)).scalar_one())


# --- the four modes ---------------------------------------------------------------------


def test_legacy_only_writes_legacy_and_leaves_unified_untouched(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    existing = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    before = unified_row(db, existing.entity_id or "")
    switch(a, db, M.LEGACY_ONLY)
    created = a.create_transaction("WALLET_CASHOUT", 2, "6", "USD")
    assert created.overall_success and created.mode is M.LEGACY_ONLY
    assert legacy_row(db, "cashouts", created.legacy_entity_id or 0)["status"] == "PENDING"  # type: ignore[index]
    assert unified_row(db, created.entity_id or "") is None
    result = a.update_status(f"cashout:{existing.legacy_entity_id}", "PROCESSING", "r", "t")
    assert result.overall_success and result.changed
    assert legacy_row(db, "cashouts", existing.legacy_entity_id or 0)["status"] == "EXECUTING"  # type: ignore[index]
    assert unified_row(db, existing.entity_id or "") == before
    assert db.count("unified_status_history") == 1  # only the creation under dual write
    assert pending(db) == []
    status, meta = a.get_transaction_status(existing.entity_id)
    assert status is UnifiedTransactionStatus.PROCESSING and meta["source"] == "legacy"


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY])
def test_dual_modes_write_both_sides_with_history(db: Database, mode: DualWriteMode) -> None:
    a = adapter_in(db, mode)
    created = a.create_transaction(UnifiedTransactionType.ESCROW, 4, Decimal("1.5"), "ETH")
    assert created.overall_success and created.mode is mode
    lid, utx = created.legacy_entity_id or 0, created.entity_id or ""
    assert utx == LegacyRef(LegacySystemType.ESCROW, lid).utx_id
    for target, legacy in [
        ("AWAITING_APPROVAL", "AWAITING_SELLER"),
        (EscrowStatus.ACTIVE, "ACTIVE"),
        (UnifiedTransactionStatus.RELEASE_PENDING, "ACTIVE"),
        ("SUCCESS", "COMPLETED"),
    ]:
        r = a.update_status(utx, target, "step", "escrow-svc")
        assert r.overall_success and r.changed and r.mode is mode
        assert legacy_row(db, "escrows", lid)["status"] == legacy  # type: ignore[index]
        assert unified_row(db, utx)["legacy_status"] == legacy  # type: ignore[index]
    row = unified_row(db, utx)
    assert row is not None and row["status"] == "SUCCESS" and row["version"] == 5
    chain = [(h["from_status"], h["to_status"], h["mode"]) for h in history(db, utx)]
    assert chain == [
        (None, "PENDING", mode.value),
        ("PENDING", "AWAITING_APPROVAL", mode.value),
        ("AWAITING_APPROVAL", "FUNDS_HELD", mode.value),
        ("FUNDS_HELD", "RELEASE_PENDING", mode.value),
        ("RELEASE_PENDING", "SUCCESS", mode.value),
    ]
    assert pending(db) == []
    status, meta = a.get_transaction_status(f"escrow:{lid}")
    assert status is UnifiedTransactionStatus.SUCCESS
    assert meta["source"] == ("unified" if mode.reads_unified else "legacy")
    assert a.check_consistency(utx)["consistent"] is True


def test_unified_primary_reads_refinement_from_unified(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY)
    created = a.create_transaction("ESCROW", 4, "2", "ETH", status="FUNDS_HELD")
    a.update_status(created.entity_id, "RELEASE_PENDING", "release", "svc")
    status, meta = a.get_transaction_status(created.entity_id)
    assert status is UnifiedTransactionStatus.RELEASE_PENDING and meta["source"] == "unified"
    switch(a, db, M.DUAL_WRITE_LEGACY_PRIMARY)
    status, meta = a.get_transaction_status(created.entity_id)
    assert status is UnifiedTransactionStatus.FUNDS_HELD and meta["source"] == "legacy"


def test_unified_only_freezes_legacy_and_records_pending(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    old = a.create_transaction("EXCHANGE", 9, "100", "EUR")
    switch(a, db, M.UNIFIED_ONLY)
    legacy_before = legacy_row(db, "exchanges", old.legacy_entity_id or 0)
    r = a.update_status(f"exchange:{old.legacy_entity_id}", "AWAITING_PAYMENT", "deposit", "x")
    assert r.overall_success and r.mode is M.UNIFIED_ONLY
    assert legacy_row(db, "exchanges", old.legacy_entity_id or 0) == legacy_before
    assert unified_row(db, old.entity_id or "")["status"] == "AWAITING_PAYMENT"  # type: ignore[index]
    born = a.create_transaction("EXCHANGE", 9, "3", "EUR")
    assert born.overall_success and born.legacy_entity_id is None
    assert (born.entity_id or "").startswith("UTX9")
    row = unified_row(db, born.entity_id or "")
    assert row is not None and row["legacy_id"] is None and row["origin"] == "unified"
    a.update_status(born.entity_id, "ADMIN_PENDING", "review", "x")
    assert db.count("exchanges") == 1
    assert pending(db) == [
        (old.entity_id, "status", "AWAITING_DEPOSIT"),
        (born.entity_id, "create", "CREATED"),
        (born.entity_id, "status", "PENDING_APPROVAL"),
    ]
    assert [h["mode"] for h in history(db, born.entity_id or "")] == ["UNIFIED_ONLY"] * 2
    status, meta = a.get_transaction_status(old.entity_id)
    assert status is UnifiedTransactionStatus.AWAITING_PAYMENT and meta["source"] == "unified"


# --- rows that exist only on the legacy side ------------------------------------------


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY])
def test_write_to_unbackfilled_row_creates_unified_row(db: Database, mode: DualWriteMode) -> None:
    lid = seed_legacy(db, "escrows", "ACTIVE", user_id=77, amount=Decimal("9.87654321"))
    a = adapter_in(db, mode)
    r = a.update_status(f"escrow:{lid}", "RELEASE_PENDING", "release", "svc")
    assert r.overall_success and r.entity_id == LegacyRef("escrow", lid).utx_id  # type: ignore[arg-type]
    row = unified_row(db, r.entity_id or "")
    assert row is not None
    assert (row["status"], row["legacy_status"], row["origin"]) == (
        "RELEASE_PENDING",
        "ACTIVE",
        "dual_write",
    )
    assert (row["user_id"], Decimal(row["amount"]), row["currency"]) == (
        77,
        Decimal("9.87654321"),
        "USD",
    )
    assert (row["legacy_system"], row["legacy_id"], row["transaction_type"]) == (
        "ESCROW",
        lid,
        "ESCROW",
    )
    (h,) = history(db, r.entity_id or "")
    assert (h["from_status"], h["to_status"]) == ("FUNDS_HELD", "RELEASE_PENDING")
    assert (h["from_legacy_status"], h["to_legacy_status"]) == ("ACTIVE", "ACTIVE")
    assert a.check_consistency(f"escrow:{lid}")["consistent"]


def test_create_transaction_links_existing_legacy_row(db: Database) -> None:
    lid = seed_legacy(db, "cashouts", "APPROVED")
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    r = a.create_transaction("WALLET_CASHOUT", 11, "42.5", "USD", legacy_entity_id=lid)
    assert r.overall_success and r.status is UnifiedTransactionStatus.FUNDS_HELD
    assert unified_row(db, r.entity_id or "")["legacy_status"] == "APPROVED"  # type: ignore[index]
    again = a.create_transaction("WALLET_CASHOUT", 11, "42.5", "USD", legacy_entity_id=lid)
    assert again.overall_success and not again.changed and db.count("unified_transactions") == 1
    with pytest.raises(InputError, match="amount"):
        a.create_transaction("WALLET_CASHOUT", 11, "43", "USD", legacy_entity_id=lid)


@pytest.mark.parametrize("mode", list(M))
def test_a_link_that_changes_nothing_says_what_the_transaction_holds(db: Database, mode: M) -> None:
    """Linking a row already linked (or, in LEGACY_ONLY, a legacy row with no unified row
    yet) changes nothing and says so, with the statuses the transaction holds (they were
    None: `tx create --legacy-id` printed `? (legacy None ...)`)."""
    lid = seed_legacy(db, "cashouts", "APPROVED")
    a = adapter_in(db, mode)
    first = a.create_transaction("WALLET_CASHOUT", 11, "42.5", "USD", legacy_entity_id=lid)
    again = a.create_transaction("WALLET_CASHOUT", 11, "42.5", "USD", legacy_entity_id=lid)
    assert first.overall_success and again.overall_success and not again.changed
    assert again.status is UnifiedTransactionStatus.FUNDS_HELD, again
    if mode.writes_legacy or mode is M.LEGACY_ONLY:
        assert again.legacy_status == "APPROVED", again


@pytest.mark.parametrize("mode", list(M))
def test_a_link_to_a_legacy_row_that_does_not_exist_is_refused(db: Database, mode: M) -> None:
    """``legacy_entity_id`` links an existing legacy row. One that names no row was
    created under that id (PostgreSQL: past the table's sequence, so a later create of
    any client met it, a unique violation counted as a database failure; SQLite: the
    next id out of range, every later create refused after it committed)."""
    a = adapter_in(db, mode)
    before = snapshot(db)
    with pytest.raises(InputError, match=r"cashout:99999999999999 does not exist"):
        a.create_transaction("WALLET_CASHOUT", 11, "5", "USD", legacy_entity_id=99999999999999)
    assert snapshot(db) == before
    if mode.writes_legacy:
        assert a.create_transaction("WALLET_CASHOUT", 11, "5", "USD").overall_success


def test_a_link_asking_for_another_status_is_refused(db: Database) -> None:
    """A link never changes the row's status (update_status does, under the transition
    rules): a create that links a row and names another status than it holds was
    answered as a success in the status the row kept."""
    lid = seed_legacy(db, "cashouts", "PENDING")
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    before = snapshot(db)
    with pytest.raises(InputError, match=r"cashout:\d+ exists with status PENDING, not SUCCESS"):
        a.create_transaction(
            "WALLET_CASHOUT", 11, "42.5", "USD", legacy_entity_id=lid, status="SUCCESS"
        )
    assert snapshot(db) == before
    same = a.create_transaction(
        "WALLET_CASHOUT", 11, "42.5", "USD", legacy_entity_id=lid, status="PENDING"
    )
    assert same.overall_success and same.status is UnifiedTransactionStatus.PENDING
    linked = a.create_transaction("WALLET_CASHOUT", 11, "42.5", "USD", legacy_entity_id=lid)
    assert linked.overall_success and not linked.changed


def test_every_status_an_invalid_status_error_lists_is_accepted(db: Database) -> None:
    """The refusal of an unknown status lists the valid ones: each of them, sent as it
    is listed, is taken (the legacy values were listed as ``CASHOUT.EXECUTING``, a form
    refused in turn)."""
    a = adapter_in(db, M.LEGACY_ONLY)
    with pytest.raises(InvalidStatusError) as refused:
        a.create_transaction("WALLET_CASHOUT", 11, "5", "USD", status="BOGUS")
    listed = refused.value.valid
    assert {"PROCESSING", "EXECUTING", "COMPLETED"} <= set(listed)
    assert "legacy (CASHOUT): " in str(refused.value)
    for status in listed:
        assert a.create_transaction("WALLET_CASHOUT", 11, "5", "USD", status=status).overall_success


# --- legacy refinements, idempotence, overrides --------------------------------------


def test_legacy_change_keeping_unified_status_updates_legacy_status(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("EXCHANGE", 3, "10", "BTC")
    r = a.update_status(c.entity_id, ExchangeStatus.RATE_LOCKED, "quote locked", "fx")
    assert r.overall_success and r.changed and r.status is UnifiedTransactionStatus.PENDING
    assert legacy_row(db, "exchanges", c.legacy_entity_id or 0)["status"] == "RATE_LOCKED"  # type: ignore[index]
    row = unified_row(db, c.entity_id or "")
    assert row is not None
    assert (row["status"], row["legacy_status"], row["version"]) == ("PENDING", "RATE_LOCKED", 2)
    last = history(db, c.entity_id or "")[-1]
    assert (last["from_status"], last["to_status"]) == ("PENDING", "PENDING")
    assert (last["from_legacy_status"], last["to_legacy_status"]) == ("CREATED", "RATE_LOCKED")
    # The legacy value is exact: writing unified PENDING now keeps RATE_LOCKED (no-op).
    again = a.update_status(c.entity_id, "PENDING", "retry", "fx")
    assert again.overall_success and not again.changed
    assert len(history(db, c.entity_id or "")) == 2


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY])
def test_same_status_is_idempotent(db: Database, mode: DualWriteMode) -> None:
    a = adapter_in(db, mode)
    c = a.create_transaction("WALLET_CASHOUT", 3, "10", "BTC", status="PROCESSING")
    before = snapshot(db)
    for status in ("PROCESSING", "EXECUTING", UnifiedTransactionStatus.PROCESSING):
        r = a.update_status(c.entity_id, status, "duplicate webhook", "provider")
        assert r.overall_success and not r.changed
        assert r.status is UnifiedTransactionStatus.PROCESSING
    assert snapshot(db) == before


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY])
def test_current_legacy_value_is_kept(db: Database, mode: DualWriteMode) -> None:
    lid = seed_legacy(db, "escrows", "PENDING_SELLER")
    a = adapter_in(db, mode)
    r = a.update_status(f"escrow:{lid}", "AWAITING_APPROVAL", "seller nudged", "svc")
    assert r.overall_success and r.legacy_status == "PENDING_SELLER"
    assert legacy_row(db, "escrows", lid)["status"] == "PENDING_SELLER"  # type: ignore[index]
    # A real change away and back uses the canonical value.
    a.update_status(f"escrow:{lid}", "AWAITING_PAYMENT", "invoice", "svc")
    a.update_status(f"escrow:{lid}", "AWAITING_APPROVAL", "back", "svc")
    assert legacy_row(db, "escrows", lid)["status"] == "AWAITING_SELLER"  # type: ignore[index]


def test_admin_override_with_reason_is_recorded(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 3, "10", "BTC", status="SUCCESS")
    before = snapshot(db)
    with pytest.raises(InvalidTransitionError, match="WALLET_CASHOUT.*SUCCESS.*PROCESSING"):
        a.update_status(c.entity_id, "PROCESSING", "retry payout", "ops")
    with pytest.raises(InputError, match="reason"):
        a.update_status(c.entity_id, "PROCESSING", "", "ops", force=True)
    assert snapshot(db) == before
    r = a.update_status(c.entity_id, "PROCESSING", "provider reversed", "admin:kim", force=True)
    assert r.overall_success and r.changed
    last = history(db, c.entity_id or "")[-1]
    assert last["override"] is True or last["override"] == 1
    assert (last["from_status"], last["to_status"]) == ("SUCCESS", "PROCESSING")
    assert (last["reason"], last["triggered_by"]) == ("provider reversed", "admin:kim")
    assert legacy_row(db, "cashouts", c.legacy_entity_id or 0)["status"] == "EXECUTING"  # type: ignore[index]
    assert history(db, c.entity_id or "")[0]["override"] in (False, 0)


def test_history_keeps_reason_and_metadata(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("ESCROW", 3, "10", "BTC", metadata={"channel": "web"})
    a.update_status(c.entity_id, "AWAITING_APPROVAL", "r1", "svc", metadata={"k": [1, 2]})
    last = history(db, c.entity_id or "")[-1]
    assert last["metadata"] == {"k": [1, 2]}
    assert unified_row(db, c.entity_id or "")["metadata"] == {"channel": "web"}  # type: ignore[index]


# --- shadow reads -----------------------------------------------------------------------


def test_shadow_reads_count_mismatches_and_never_raise(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, shadow_read_rate=1.0)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    c = a.create_transaction("WALLET_CASHOUT", 3, "10", "BTC")
    status, meta = a.get_transaction_status(c.entity_id)
    assert status is UnifiedTransactionStatus.PENDING and "shadow_mismatch" not in meta
    assert a.shadow_mismatches == 0
    with db.engine.begin() as conn:
        conn.execute(sa.update(U).where(U.c.id == c.entity_id).values(status="FAILED"))
    status, meta = a.get_transaction_status(c.entity_id)
    assert status is UnifiedTransactionStatus.PENDING and meta["source"] == "legacy"
    assert meta["shadow_mismatch"] == ["status_mismatch"]
    assert a.shadow_mismatches == 1
    assert events[-1].operation == "get_transaction_status" and events[-1].shadow_mismatch
    # An unmappable legacy value and a missing unified row: reported, never raised.
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cashouts SET status = 'weird'"))
        conn.execute(sa.delete(U))
    status, meta = a.get_transaction_status(c.entity_id)
    assert status is None and "unmappable" in meta["error"]
    assert a.shadow_mismatches == 2
    # A failing observer never breaks a read or a write.
    a.observers.insert(0, lambda e: 1 / 0)  # type: ignore[func-returns-value]
    assert a.get_transaction_status("cashout:999")[0] is None
    assert a.create_transaction("WALLET_CASHOUT", 3, "10", "BTC").overall_success


def test_shadow_reads_off_by_default(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 3, "10", "BTC")
    with db.engine.begin() as conn:
        conn.execute(sa.update(U).where(U.c.id == c.entity_id).values(status="FAILED"))
    a.get_transaction_status(c.entity_id)
    assert a.shadow_mismatches == 0


# --- bad input: a typed error, a clear message, nothing written ------------------------

Call = Callable[[DualWriteAdapter, str], object]

BAD_INPUT: list[tuple[str, Call, type[UnistatusError], str]] = [
    ("unknown status", lambda a, e: a.update_status(e, "BOGUS", "r", "t"), InvalidStatusError, "BOGUS"),
    ("lower-case status", lambda a, e: a.update_status(e, "processing", "r", "t"), InvalidStatusError, "'processing' is not valid for WALLET_CASHOUT"),
    ("lower-case legacy", lambda a, e: a.update_status(e, "executing", "r", "t"), InvalidStatusError, "executing"),
    ("status of another system", lambda a, e: a.update_status(e, EscrowStatus.ACTIVE, "r", "t"), InputError, "not a status of CASHOUT"),
    ("invalid for the type", lambda a, e: a.update_status(e, "RELEASE_PENDING", "r", "t"), InvalidStatusError, "not valid for WALLET_CASHOUT"),
    ("invalid transition", lambda a, e: a.update_status(e, "SUCCESS", "r", "t"), InvalidTransitionError, "cannot go from PENDING to SUCCESS"),
    ("None status", lambda a, e: a.update_status(e, None, "r", "t"), InputError, "new_status"),
    ("malformed id", lambda a, e: a.update_status("cashout:abc", "FAILED", "r", "t"), InvalidIdentifierError, "malformed id"),
    ("malformed utx", lambda a, e: a.update_status("UTX12", "FAILED", "r", "t"), InvalidIdentifierError, "malformed id"),
    ("unknown system", lambda a, e: a.update_status("wallet:1", "FAILED", "r", "t"), InvalidIdentifierError, "unknown system"),
    ("int id", lambda a, e: a.update_status(12, "FAILED", "r", "t"), InvalidIdentifierError, "entity id"),
    ("zero id", lambda a, e: a.update_status("cashout:0", "FAILED", "r", "t"), InvalidIdentifierError, "out of range"),
    ("unknown entity", lambda a, e: a.update_status("cashout:999999", "FAILED", "r", "t"), EntityNotFoundError, "cashout:999999"),
    ("unknown utx", lambda a, e: a.update_status("UTX900000000000001", "FAILED", "r", "t"), EntityNotFoundError, "UTX900000000000001"),
    ("unknown derived utx", lambda a, e: a.update_status("UTX100000000999999", "FAILED", "r", "t"), EntityNotFoundError, "UTX100000000999999"),
    ("missing triggered_by", lambda a, e: a.update_status(e, "FAILED", "r", ""), InputError, "triggered_by"),
    ("blank triggered_by", lambda a, e: a.update_status(e, "FAILED", "r", "  "), InputError, "triggered_by"),
    ("bad metadata", lambda a, e: a.update_status(e, "FAILED", "r", "t", metadata={"x": object()}), InputError, "JSON"),
    ("negative amount", lambda a, e: a.create_transaction("WALLET_CASHOUT", 1, "-5", "USD"), InputError, "positive"),
    ("zero amount", lambda a, e: a.create_transaction("WALLET_CASHOUT", 1, Decimal(0), "USD"), InputError, "positive"),
    ("float amount", lambda a, e: a.create_transaction("WALLET_CASHOUT", 1, 1.5, "USD"), InputError, "not float"),  # type: ignore[arg-type]
    ("non-decimal amount", lambda a, e: a.create_transaction("WALLET_CASHOUT", 1, "12abc", "USD"), InputError, "not a decimal"),
    ("NaN amount", lambda a, e: a.create_transaction("WALLET_CASHOUT", 1, Decimal("NaN"), "USD"), InputError, "finite"),
    ("too precise", lambda a, e: a.create_transaction("WALLET_CASHOUT", 1, "1.000000001", "USD"), InputError, "8 decimal places"),
    ("lower currency", lambda a, e: a.create_transaction("WALLET_CASHOUT", 1, "5", "usd"), InputError, "currency"),
    ("short currency", lambda a, e: a.create_transaction("WALLET_CASHOUT", 1, "5", "US"), InputError, "currency"),
    ("numeric currency", lambda a, e: a.create_transaction("WALLET_CASHOUT", 1, "5", 840), InputError, "currency"),  # type: ignore[arg-type]
    ("bad user", lambda a, e: a.create_transaction("WALLET_CASHOUT", -1, "5", "USD"), InputError, "user_id"),
    ("bad type", lambda a, e: a.create_transaction("CARD", 1, "5", "USD"), InputError, "unknown transaction type"),
    # Not a bool: "false" was truthy, and the transition rules were overridden (fuzzing).
    ("force as text", lambda a, e: a.update_status(e, "SUCCESS", "r", "t", force="false"), InputError, "force"),  # type: ignore[arg-type]
    ("force as int", lambda a, e: a.update_status(e, "SUCCESS", "r", "t", force=1), InputError, "force"),  # type: ignore[arg-type]
    # A label of two lines showed as two writers in the history, one of them made up;
    # a C1 control (CSI) or a bidi override reached the terminal raw (fuzzing).
    ("two-line label", lambda a, e: a.update_status(e, "FAILED", "r", "x)\ntoken:admin (y"), InputError, "line break"),
    ("C1 control", lambda a, e: a.update_status(e, "FAILED", "ok\u009b2J", "t"), InputError, "U+009B"),
    ("bidi override", lambda a, e: a.update_status(e, "FAILED", "r", "t\u202e"), InputError, "U+202E"),
    # A falsy status that is not None was taken for "the default" (fuzzing).
    ("create status 0", lambda a, e: a.create_transaction("ESCROW", 1, "5", "USD", status=0), InputError, "status"),  # type: ignore[arg-type]
    ("create status ''", lambda a, e: a.create_transaction("ESCROW", 1, "5", "USD", status=""), InputError, "status"),
    # A legacy system's name (the CLI's --type cashout) says which type it means.
    ("system as type", lambda a, e: a.create_transaction("cashout", 1, "5", "USD"), InputError, "cashout's transactions are WALLET_CASHOUT"),
    ("create lower-case status", lambda a, e: a.create_transaction("ESCROW", 1, "5", "USD", status="pending"), InvalidStatusError, "pending"),
    ("create OTP escrow", lambda a, e: a.create_transaction("ESCROW", 1, "5", "USD", status="OTP_PENDING"), InvalidStatusError, "OTP_PENDING"),
]  # fmt: skip


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.UNIFIED_ONLY])
def test_bad_input_raises_typed_error_and_writes_nothing(db: Database, mode: DualWriteMode) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    entity = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id or ""
    switch(a, db, mode)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    before = snapshot(db)
    for name, call, error, fragment in BAD_INPUT:
        with pytest.raises(error) as info:
            call(a, entity)
        assert fragment in str(info.value), (name, str(info.value))
        assert snapshot(db) == before, name
    # Refusals reach observers as refusals (the caller's error), never as successes
    # that wrote something.
    assert events and all(e.refused for e in events)


def test_escrow_refuses_otp_pending_even_forced(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("ESCROW", 1, "5", "USD")
    before = snapshot(db)
    with pytest.raises(InvalidStatusError, match="OTP_PENDING"):
        a.update_status(c.entity_id, "OTP_PENDING", "admin", "ops", force=True)
    assert snapshot(db) == before


def test_unmappable_current_status_needs_override(db: Database) -> None:
    lid = seed_legacy(db, "cashouts", "executing")
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    before = snapshot(db)
    with pytest.raises(UnmappableStoredStatusError, match="unmappable") as refused:
        a.update_status(f"cashout:{lid}", "FAILED", "r", "t")
    # The stored value is named as the problem, not the requested status.
    assert refused.value.entity == f"cashout:{lid}" and refused.value.value == "executing"
    assert refused.value.requested == "FAILED" and "force" in str(refused.value)
    assert snapshot(db) == before
    r = a.update_status(f"cashout:{lid}", "FAILED", "repair typo", "ops", force=True)
    assert r.overall_success
    assert legacy_row(db, "cashouts", lid)["status"] == "FAILED"  # type: ignore[index]
    (h,) = history(db, r.entity_id or "")
    assert h["from_status"] is None and h["from_legacy_status"] == "executing"
    assert h["override"] in (True, 1)


# --- after the legacy status column is retired -----------------------------------------


def test_retired_legacy_status_column_reads_unified_and_refuses_legacy_writes(
    db: Database,
) -> None:
    from unistatus.errors import ModeError

    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY)
    c = a.create_transaction("ESCROW", 1, "5", "USD", status="FUNDS_HELD")
    switch(a, db, M.UNIFIED_ONLY)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE escrows DROP COLUMN status")
    try:
        retired = DualWriteAdapter(db.engine, settings=db.settings)
        for ref in (c.entity_id, f"escrow:{c.legacy_entity_id}"):
            status, meta = retired.get_transaction_status(ref)
            assert status is UnifiedTransactionStatus.FUNDS_HELD and meta["source"] == "unified"
        r = retired.update_status(c.entity_id, "RELEASE_PENDING", "release", "svc")
        assert r.overall_success and r.status is UnifiedTransactionStatus.RELEASE_PENDING
        with db.engine.begin() as conn:  # as if replayed: lets the test switch back
            conn.execute(sa.update(pending_legacy_changes).values(replayed_at=sa.func.now()))
        switch(retired, db, M.DUAL_WRITE_UNIFIED_PRIMARY)
        with pytest.raises(ModeError, match="retired"):
            retired.update_status(c.entity_id, "SUCCESS", "done", "svc")
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE escrows ADD COLUMN status VARCHAR(64)")


# --- construction and references --------------------------------------------------------


def test_adapter_from_url_and_every_reference_form(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    a = DualWriteAdapter(db.url, settings=db.settings)
    try:
        c = a.create_transaction("ESCROW", 1, "5", "USD")
        lid = c.legacy_entity_id or 0
        steps = [
            (LegacyRef(LegacySystemType.ESCROW, lid), "AWAITING_APPROVAL"),
            (("escrow", lid), "AWAITING_PAYMENT"),
            (f"ESCROW:{lid}", "PAYMENT_CONFIRMED"),
            (c.entity_id, "FUNDS_HELD"),
        ]
        for ref, target in steps:
            r = a.update_status(ref, target, "step", "svc")
            assert r.overall_success and r.entity_id == c.entity_id, ref
        assert len(history(db, c.entity_id or "")) == 5
    finally:
        a.engine.dispose()


@pytest.mark.parametrize("mode", [M.LEGACY_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY])
def test_created_rows_are_complete_on_every_backend(db: Database, mode: DualWriteMode) -> None:
    """A new transaction's rows, column by column: PostgreSQL writes them with one CTE
    (legacy INSERT, unified INSERT with the id derived in SQL, first history row),
    SQLite statement by statement; both must store exactly the same thing."""
    a = adapter_in(db, mode)
    r = a.create_transaction(
        "ESCROW", 42, Decimal("10.25"), "EUR", status="AWAITING_SELLER", metadata={"k": "v"}
    )
    assert r.overall_success and r.legacy_entity_id is not None
    assert r.entity_id == LegacyRef(LegacySystemType.ESCROW, r.legacy_entity_id).utx_id
    legacy = legacy_row(db, "escrows", r.legacy_entity_id)
    assert legacy is not None
    assert (legacy["user_id"], Decimal(legacy["amount"]), legacy["currency"]) == (
        42,
        Decimal("10.25"),
        "EUR",
    )
    assert legacy["status"] == r.legacy_status and legacy["created_at"] == legacy["updated_at"]
    unified = unified_row(db, r.entity_id or "")
    if mode is M.LEGACY_ONLY:
        assert unified is None and history(db, r.entity_id or "") == []
        return
    assert unified is not None
    assert {k: unified[k] for k in ("transaction_type", "legacy_system", "legacy_id")} == {
        "transaction_type": "ESCROW",
        "legacy_system": "ESCROW",
        "legacy_id": r.legacy_entity_id,
    }
    assert (unified["user_id"], Decimal(unified["amount"]), unified["currency"]) == (
        42,
        Decimal("10.25"),
        "EUR",
    )
    # AWAITING_SELLER is the legacy value asked for; it maps to AWAITING_APPROVAL.
    assert legacy["status"] == "AWAITING_SELLER"
    assert (unified["status"], unified["legacy_status"]) == ("AWAITING_APPROVAL", "AWAITING_SELLER")
    assert (unified["version"], unified["origin"], unified["metadata"]) == (
        1,
        "dual_write",
        {"k": "v"},
    )
    assert unified["created_at"] == unified["updated_at"] == legacy["created_at"]
    (h,) = history(db, r.entity_id or "")
    assert {k: h[k] for k in h if k not in ("id", "created_at")} == {
        "transaction_id": r.entity_id,
        "legacy_system": "ESCROW",
        "legacy_id": r.legacy_entity_id,
        "from_status": None,
        "to_status": "AWAITING_APPROVAL",
        "from_legacy_status": None,
        "to_legacy_status": legacy["status"],
        "reason": "created",
        "triggered_by": "create_transaction",
        "metadata": {"k": "v"},
        "operation_id": r.operation_id,
        "mode": mode.value,
        "override": False,
    }
    assert h["created_at"] == unified["created_at"]


def test_amounts_are_exact_on_every_backend(db: Database) -> None:
    """Money round-trips exactly; what SQLite cannot keep exactly is refused, not rounded."""
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    fits = Decimal("1234567.12345678")  # 15 significant digits: exact on both
    created = adapter.create_transaction("ESCROW", 1, fits, "EUR")
    with db.engine.connect() as conn:
        stored = conn.execute(
            sa.select(unified_transactions.c.amount).where(
                unified_transactions.c.id == created.entity_id
            )
        ).scalar_one()
    assert Decimal(stored) == fits
    wide = Decimal("123456789012.12345678")  # 20 significant digits
    if db.backend == "sqlite":
        before = db.count("escrows")
        with pytest.raises(InputError, match="significant digits"):
            adapter.create_transaction("ESCROW", 1, wide, "EUR")
        assert db.count("escrows") == before
    else:
        created = adapter.create_transaction("ESCROW", 1, wide, "EUR")
        with db.engine.connect() as conn:
            stored = conn.execute(
                sa.select(unified_transactions.c.amount).where(
                    unified_transactions.c.id == created.entity_id
                )
            ).scalar_one()
        assert stored == wide
