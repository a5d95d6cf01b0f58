"""SQLite legacy tables whose amount and times are declared TEXT (``STRICT`` too).

SQLite applications keep money as text for exactness, and times as ISO text. The adapter
bound a Decimal amount to the TEXT column (``Error binding parameter 2: type
'decimal.Decimal' is not supported``: every create failed) and copied a legacy TEXT
``created_at`` into the unified row's time column (``SQLite DateTime type only accepts
Python datetime and date objects as input``: every first dual write of a legacy row
failed). Such a column is converted at the boundary, by its type: an amount is written as
its exact text and read as a number, a time written as text and read as a UTC time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.backfill import run_backfill
from unistatus.db.control import get_mode
from unistatus.db.legacy_text import convert_text_columns
from unistatus.migration import archive, capture, phases, rollback
from unistatus.migration.check import run_check
from unistatus.migration.replay import pending_count

M = DualWriteMode
TEXT_TABLE = (
    "CREATE TABLE {name} (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT NULL, "
    "amount TEXT NOT NULL, currency TEXT NOT NULL, status TEXT, created_at TEXT NOT NULL, "
    "updated_at TEXT NOT NULL) STRICT"
)
OLD = "2025-01-01 00:00:00"


@pytest.fixture
def text_db(sqlite_db: Database) -> Iterator[Database]:
    """The legacy tables as TEXT columns (STRICT), with two cashouts of the application's."""
    db = sqlite_db
    with db.engine.begin() as conn:
        for name in ("cashouts", "escrows", "exchanges"):
            conn.exec_driver_sql(f"DROP TABLE {name}")
            conn.exec_driver_sql(TEXT_TABLE.format(name=name))
        conn.exec_driver_sql(
            "INSERT INTO cashouts (user_id, amount, currency, status, created_at, updated_at) "
            f"VALUES (1, '3.00', 'USD', 'APPROVED', '{OLD}', '{OLD}'), "
            f"(2, '12.5', 'USD', 'PENDING', '{OLD}', '{OLD}')"
        )
    yield db


def advance(db: Database, phase: int) -> DualWriteAdapter:
    for _ in range(phase):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    adapter.modes.refresh()
    return adapter


def cashouts(db: Database) -> dict[int, dict[str, Any]]:
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM cashouts").mappings().all()
    return {int(r["id"]): dict(r) for r in rows}


def unified(db: Database, legacy_id: int) -> dict[str, Any]:
    with db.engine.connect() as conn:
        q = "SELECT * FROM unified_transactions WHERE legacy_system = 'CASHOUT' AND legacy_id = ?"
        return dict(conn.exec_driver_sql(q, (legacy_id,)).mappings().one())


def all_consistent(db: Database) -> dict[str, Any]:
    report = run_check(db.engine, db.settings, store=False).as_dict()
    assert report["consistency_rate"] == 1.0, report
    assert report["total"] >= 2, report
    return report


@pytest.fixture
def adapter(text_db: Database) -> Iterator[DualWriteAdapter]:
    adapter = advance(text_db, 1)
    assert adapter.mode is M.DUAL_WRITE_LEGACY_PRIMARY
    yield adapter
    adapter.close()


def test_a_create_writes_the_amount_as_its_exact_text(
    text_db: Database, adapter: DualWriteAdapter
) -> None:
    made = adapter.create_transaction(
        "WALLET_CASHOUT", user_id=1, amount=Decimal("12.34"), currency="USD", triggered_by="t"
    )
    assert made.overall_success, made.error
    with text_db.engine.begin() as conn:  # the caller's own transaction
        inside = adapter.create_transaction(
            "WALLET_CASHOUT", 3, Decimal("0.10"), "USD", connection=conn
        )
        assert inside.overall_success, inside.error
    rows = cashouts(text_db)
    made_id, inside_id = (int(str(r.legacy_entity_id)) for r in (made, inside))
    # Exact text in the application's column, times as text it can sort.
    assert (rows[made_id]["amount"], rows[inside_id]["amount"]) == ("12.34", "0.10")
    assert rows[made_id]["created_at"] > OLD
    assert adapter.check_consistency(str(made.entity_id))["consistent"]
    run_backfill(text_db.engine, text_db.settings, workers=1)  # the application's rows
    assert all_consistent(text_db)["total"] == 4


def test_an_update_makes_the_unified_row_from_text_columns(
    text_db: Database, adapter: DualWriteAdapter
) -> None:
    changed = adapter.update_status("cashout:2", "CANCELLED", reason="x", triggered_by="t")
    assert changed.overall_success, changed.error
    rows = cashouts(text_db)
    assert rows[2]["status"] == "CANCELLED" and rows[2]["updated_at"] > OLD
    # The unified row made from the legacy row keeps its creation time.
    assert str(unified(text_db, 2)["created_at"]).startswith(OLD)
    assert Decimal(str(unified(text_db, 2)["amount"])) == Decimal("12.5")
    assert adapter.check_consistency("cashout:2")["consistent"]


def test_a_create_linked_to_a_text_row(text_db: Database, adapter: DualWriteAdapter) -> None:
    linked = adapter.create_transaction(
        "WALLET_CASHOUT", 1, Decimal("3.00"), "USD", legacy_entity_id=1
    )
    assert linked.overall_success, linked.error
    assert str(unified(text_db, 1)["created_at"]).startswith(OLD)
    assert adapter.check_consistency("cashout:1")["consistent"]
    run_backfill(text_db.engine, text_db.settings, workers=1)
    all_consistent(text_db)


def test_a_text_time_is_read_as_a_utc_time(text_db: Database) -> None:
    db = text_db
    adapter = advance(db, 1)
    try:
        assert adapter.legacy  # the tables as resolved
        lt = adapter.legacy[next(iter(adapter.legacy))]
        with db.engine.connect() as conn:
            got = conn.execute(sa.select(lt.created_at, lt.amount).where(lt.id == 1)).one()
    finally:
        adapter.close()
    assert got[0] == datetime(2025, 1, 1, tzinfo=UTC)
    assert Decimal(got[1]) == Decimal("3.00")


def test_backfill_check_and_a_rollback_replay_on_text_columns(text_db: Database) -> None:
    db = text_db
    advance(db, 1).close()
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert (report["inserted"], report["quarantined"]) == (2, 0), report
    all_consistent(db)
    adapter = advance(db, 3)
    assert get_mode(db.engine) is M.UNIFIED_ONLY
    try:
        born = adapter.create_transaction("WALLET_CASHOUT", 9, Decimal("7.25"), "USD")
        assert born.overall_success, born.error
        assert adapter.update_status("cashout:1", "PROCESSING", "t", "t").overall_success
    finally:
        adapter.close()
    change = rollback.rollback_current_phase(db.engine, db.settings, actor="ops", reason="t")
    assert change.to_mode is M.DUAL_WRITE_LEGACY_PRIMARY
    assert pending_count(db.engine) == 0, change.details
    rows = cashouts(db)
    replayed = [r for r in rows.values() if r["user_id"] == 9]
    # The unified row's amount as it holds it: NUMERIC(20, 8), exact.
    assert [r["amount"] for r in replayed] == ["7.25000000"], rows
    assert rows[1]["status"] != "APPROVED"
    all_consistent(db)


def test_the_capture_copies_text_columns(text_db: Database) -> None:
    db = text_db
    advance(db, 1).close()
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    try:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO cashouts (user_id, amount, currency, status, created_at, "
                f"updated_at) VALUES (4, '99.99', 'USD', 'PENDING', '{OLD}', '{OLD}')"
            )
        run_backfill(db.engine, db.settings, workers=1)
        all_consistent(db)
        assert Decimal(str(unified(db, 3)["amount"])) == Decimal("99.99")
    finally:
        capture.disable(db.engine, db.settings, actor="t", reason="t")


def test_the_archive_keeps_text_columns_as_stored(text_db: Database, tmp_path: Any) -> None:
    """The conversion is the adapter's reading, not the table's content: the archive
    records the columns' types and values as the database holds them."""
    db = text_db
    out = tmp_path / "archive"
    manifest = archive.export_archive(db.engine, db.settings, out).as_dict()
    cashout = next(t for t in manifest["tables"] if t["name"] == "cashouts")
    types = {c["name"]: c["type"] for c in cashout["columns"]}
    assert (types["amount"], types["created_at"]) == ("TEXT", "TEXT"), types
    assert archive.verify_archive(db.engine, out).problems == []


@pytest.mark.parametrize("role", ["amount", "created_at", "updated_at"])
def test_a_text_column_on_postgresql_is_taken_as_it_is(
    role: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Statements read a PostgreSQL text time as the time the rule reads in it, and cast a
    text amount where they copy or compare it (tests/backfill/test_text_time_backfill.py,
    test_text_amount_backfill.py): no warning (it told to declare the column timestamptz),
    nothing converted."""
    columns = {role: sa.Column(role, sa.Text())}
    with caplog.at_level("WARNING"):
        convert_text_columns(columns, "postgresql")
    assert caplog.text == ""
    assert isinstance(columns[role].type, sa.Text)


def test_a_sqlite_column_with_no_declared_type_is_left_as_it_is() -> None:
    """A reviewer: a type-less column took TEXT conversions, so an integer amount an
    application stored as INTEGER would have been written as TEXT '100' (which SQLite
    compares above every number). Only declared text columns are converted."""
    columns = {
        "amount": sa.Column("amount", sa.types.NullType()),
        "created_at": sa.Column("created_at", sa.types.NullType()),
    }
    convert_text_columns(columns, "sqlite")
    assert all(isinstance(c.type, sa.types.NullType) for c in columns.values())
