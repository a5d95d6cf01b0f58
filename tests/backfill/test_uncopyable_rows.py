"""Legacy rows whose shared fields cannot be copied into a unified row (a NULL user,
amount or currency; a currency longer, or an amount larger, than the unified columns
hold, a negative amount), as real legacy
data has them: the backfill sets each aside in the quarantine with its reason and
copies the rest (it failed every batch holding one, and never finished); a bypass
writer's row of that kind goes to the quarantine too, and its statement succeeds."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.backfill_data import quarantined
from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill import retry_quarantine, run_backfill
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import InputError
from unistatus.migration import capture
from unistatus.migration.repair import run_repair


@pytest.fixture(params=["sqlite", "postgres"])
def loose(request: pytest.FixtureRequest) -> Database:
    """A database whose cashout table, like many an application's, allows NULL in its
    user, amount and currency and a currency of 16 characters."""
    fixture = "sqlite_db" if request.param == "sqlite" else "scratch_pg"
    db: Database = request.getfixturevalue(fixture)
    key = "INTEGER PRIMARY KEY AUTOINCREMENT" if db.backend == "sqlite" else "BIGSERIAL PRIMARY KEY"
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE cashouts")
        conn.exec_driver_sql(
            f"CREATE TABLE cashouts (id {key}, status VARCHAR(64), user_id BIGINT, "
            "amount NUMERIC(30, 8), currency VARCHAR(16), created_at TIMESTAMP, "
            "updated_at TIMESTAMP)"
        )
    return db


def insert(
    conn: sa.Connection, user: Any, amount: Any, currency: Any, status: str = "PENDING"
) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO cashouts (status, user_id, amount, currency, created_at, updated_at) "
            "VALUES (:s, :u, :a, :c, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        ),
        {"s": status, "u": user, "a": amount, "c": currency},
    )


def test_the_backfill_sets_uncopyable_rows_aside_and_copies_the_rest(loose: Database) -> None:
    db = loose
    with db.engine.begin() as conn:
        insert(conn, 1, "1.00", "USD")
        insert(conn, None, "2.00", "USD")
        insert(conn, 3, None, "USD")
        insert(conn, 4, "4.00", None)
        insert(conn, 5, "5.00", "USDC-POLYGON-ERC")
        insert(conn, 6, "6.00", "EUR")
        insert(conn, 7, "10000000000000.00", "EUR")
        insert(conn, 8, "-8.00", "EUR")
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert report["complete"] is True
    assert (report["inserted"], report["quarantined"]) == (2, 6)
    assert quarantined(db) == {
        2: "null_user_id",
        3: "null_amount",
        4: "null_currency",
        5: "currency_too_long",
        7: "amount_out_of_range",
        8: "negative_amount",
    }
    # Mended in legacy, the row is copied by the retry of the quarantine.
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE cashouts SET currency = 'USD' WHERE id = 4")
    again = retry_quarantine(db.engine, db.settings)
    assert again["inserted"] == 1
    assert set(quarantined(db)) == {2, 3, 5, 7, 8}


def test_a_bypass_writers_uncopyable_row_is_quarantined_and_its_write_succeeds(
    loose: Database,
) -> None:
    db = loose
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    with db.engine.begin() as conn:
        insert(conn, 1, "1.00", "USD")
        insert(conn, 2, "2.00", None)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE cashouts SET currency = NULL, status = 'OTP_PENDING' WHERE id = 1"
        )
    assert quarantined(db) == {1: "null_currency", 2: "null_currency"}
    with db.engine.connect() as conn:
        unified = conn.execute(
            sa.text("SELECT legacy_id, status, currency FROM unified_transactions")
        ).all()
    # Row 1 keeps what it had before the write it could not copy; row 2 has none.
    assert [(int(r[0]), r[1], r[2]) for r in unified] == [(1, "PENDING", "USD")]


def test_a_row_without_its_times_is_copied_with_the_other_one_or_now(loose: Database) -> None:
    """Older legacy rows may lack created_at or updated_at (added to the table later):
    the other stands in, else the time of the copy (unified needs both)."""
    db = loose
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO cashouts (status, user_id, amount, currency, created_at, updated_at) "
            "VALUES ('PENDING', 1, 1, 'USD', NULL, '2020-01-02 03:04:05'), "
            "('PENDING', 2, 2, 'USD', '2020-01-02 03:04:05', NULL), "
            "('PENDING', 3, 3, 'USD', NULL, NULL)"
        )
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert (report["inserted"], report["quarantined"]) == (3, 0)
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT legacy_id, created_at, updated_at FROM unified_transactions "
                "ORDER BY legacy_id"
            )
        ).all()
    assert all(r[1] is not None and r[2] is not None for r in rows)
    assert str(rows[0][1]).startswith("2020-01-02") and str(rows[1][2]).startswith("2020-01-02")
    # A bypass writer's row without its times gets its unified row too.
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO cashouts (status, user_id, amount, currency, created_at, updated_at) "
            "VALUES ('PENDING', 4, 4, 'USD', NULL, NULL)"
        )
    with db.engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM unified_transactions")).scalar()
    assert count == 4


def test_the_adapter_refuses_a_change_its_unified_row_cannot_take(loose: Database) -> None:
    """A change to a legacy row without a unified row, whose fields a unified row cannot
    take: refused as input before anything is written (it was a database failure, with
    the legacy write rolled back, counted in the error rate)."""
    db = loose
    with db.engine.begin() as conn:
        insert(conn, 1, "1.00", None)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    events: list[Any] = []
    adapter.observers.append(events.append)
    try:
        with pytest.raises(InputError, match=r"cashout:1 .*null_currency.*retry-quarantine"):
            adapter.update_status("cashout:1", "OTP_PENDING", "t", "t")
    finally:
        adapter.close()
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM cashouts")).scalar() == "PENDING"
        assert conn.execute(sa.text("SELECT count(*) FROM unified_transactions")).scalar() == 0
    # Refused as input: not counted in the error rate (success stays True).
    assert [(e.success, e.refused) for e in events] == [(True, True)]


def test_repair_skips_a_row_it_cannot_copy_and_names_why(loose: Database) -> None:
    db = loose
    with db.engine.begin() as conn:
        insert(conn, 1, "1.00", "USD")
        insert(conn, 2, "-2.00", "USD")
    report = run_repair(db.engine, db.settings, strategy="legacy_wins", actor="t", reason="t")
    assert report.as_dict()["skipped"] == {"negative_amount": 1}
    with db.engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT legacy_id FROM unified_transactions")).scalars()
        assert [int(i) for i in ids] == [1]


def test_an_amount_finer_than_the_unified_column_is_set_aside_not_rounded(
    loose: Database,
) -> None:
    """A legacy amount of more than 8 decimal places (an exchange's NUMERIC(38, 18)):
    a unified amount would round it, changing the money, and the check would then
    report the row for ever (repair writes the same rounded amount again). It is set
    aside as ``amount_too_precise``; amounts the unified column holds exactly, 0.1
    included, are copied as they are."""
    db = loose
    if db.backend == "postgres":
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE cashouts ALTER COLUMN amount TYPE NUMERIC(38, 18)")
    with db.engine.begin() as conn:
        insert(conn, 1, "1.123456789012", "ETH")
        insert(conn, 2, "2.5", "USD")
        insert(conn, 3, "0.1", "USD")
        insert(conn, 4, "999999999999.12345678", "USD")
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert (report["inserted"], report["quarantined"]) == (3, 1)
    assert quarantined(db) == {1: "amount_too_precise"}
    with db.engine.connect() as conn:
        amounts = conn.execute(
            sa.text("SELECT legacy_id, amount FROM unified_transactions ORDER BY legacy_id")
        ).all()
    assert [(int(i), str(a).rstrip("0")) for i, a in amounts][:2] == [(2, "2.5"), (3, "0.1")]
    assert [int(i) for i, _ in amounts] == [2, 3, 4]
    # The adapter refuses to make a unified row from it; a bypass writer's is set aside.
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    with db.engine.begin() as conn:
        insert(conn, 6, "1234567.89", "USD")  # a float on SQLite: still exactly 2 places
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    try:
        with pytest.raises(InputError, match=r"cashout:1 .*amount_too_precise"):
            adapter.update_status("cashout:1", "OTP_PENDING", "t", "t")
        assert adapter.update_status("cashout:5", "OTP_PENDING", "t", "t").primary_success
    finally:
        adapter.close()
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    with db.engine.begin() as conn:
        insert(conn, 7, "5.000000001", "ETH")
    assert quarantined(db) == {1: "amount_too_precise", 6: "amount_too_precise"}
