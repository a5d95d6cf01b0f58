"""A legacy table whose amount column is TEXT (or VARCHAR), as older applications keep
money: the backfill, the capture and repair copy an amount that is a plain decimal as
the number it is, and set aside one that is none ('abc', '', 'NaN') with its reason,
as the copyable rule (one rule, SQL and Python) calls it. On PostgreSQL the backfill
failed outright: "column amount is of type numeric but expression is of type text"."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from conftest import Database
from support.backfill_data import quarantined
from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill import retry_quarantine, run_backfill
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration import capture
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair

# (amount as the application stored it, the unified amount or the reason set aside)
AMOUNTS: list[tuple[str, Decimal | str]] = [
    ("12.50", Decimal("12.5")),
    (" 7 ", Decimal("7")),
    ("0.00000001", Decimal("0.00000001")),
    ("abc", "amount_out_of_range"),
    ("", "amount_out_of_range"),
    ("NaN", "amount_out_of_range"),
    ("-3.00", "negative_amount"),
    ("1.123456789", "amount_too_precise"),
    ("1e3", "amount_out_of_range"),
]


@pytest.fixture(params=["sqlite", "postgres-text", "postgres-varchar"])
def text_amounts(request: pytest.FixtureRequest) -> Database:
    fixture = "sqlite_db" if request.param == "sqlite" else "scratch_pg"
    db: Database = request.getfixturevalue(fixture)
    kind = "VARCHAR(40)" if request.param.endswith("varchar") else "TEXT"
    key = "INTEGER PRIMARY KEY AUTOINCREMENT" if db.backend == "sqlite" else "BIGSERIAL PRIMARY KEY"
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE cashouts")
        conn.exec_driver_sql(
            f"CREATE TABLE cashouts (id {key}, status VARCHAR(64), user_id BIGINT, "
            f"amount {kind}, currency VARCHAR(16), created_at TIMESTAMP, "
            "updated_at TIMESTAMP)"
        )
    return db


def insert(conn: sa.Connection, amount: str) -> int:
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO cashouts (status, user_id, amount, currency, created_at, "
                "updated_at) VALUES ('PENDING', 1, :a, 'USD', CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP) RETURNING id"
            ),
            {"a": amount},
        ).scalar_one()
    )


def unified_amounts(db: Database) -> dict[int, Decimal]:
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT legacy_id, amount FROM unified_transactions"))
        return {int(i): Decimal(str(a)) for i, a in rows}


def expected(ids: dict[int, Decimal | str]) -> tuple[dict[int, Decimal], dict[int, str]]:
    copied = {i: v for i, v in ids.items() if isinstance(v, Decimal)}
    set_aside = {i: v for i, v in ids.items() if isinstance(v, str)}
    return copied, set_aside


def test_the_backfill_copies_number_text_and_sets_the_rest_aside(
    text_amounts: Database,
) -> None:
    db = text_amounts
    with db.engine.begin() as conn:
        ids = {insert(conn, amount): want for amount, want in AMOUNTS}
    copied, set_aside = expected(ids)
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert report["complete"] is True, report
    assert (report["inserted"], report["quarantined"]) == (len(copied), len(set_aside))
    assert quarantined(db) == set_aside
    assert unified_amounts(db) == copied
    # The check finds the copies consistent with their legacy rows, and each row set
    # aside missing its unified row (no crash comparing text with a number).
    check = run_check(db.engine, db.settings).as_dict()
    assert (check["consistent"], check["inconsistent"]) == (len(copied), len(set_aside))
    assert check["inconsistencies"]["missing_unified"] == len(set_aside)
    # Mended in legacy, a set-aside row is copied by the retry of the quarantine.
    mended = next(i for i, v in set_aside.items() if v == "amount_out_of_range")
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cashouts SET amount = '4.25' WHERE id = :i"), {"i": mended})
    assert retry_quarantine(db.engine, db.settings)["inserted"] == 1
    assert unified_amounts(db)[mended] == Decimal("4.25")


def test_the_capture_copies_a_bypass_writers_number_text(text_amounts: Database) -> None:
    db = text_amounts
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    with db.engine.begin() as conn:
        ids = {insert(conn, amount): want for amount, want in AMOUNTS}
    copied, set_aside = expected(ids)
    assert quarantined(db) == set_aside
    assert unified_amounts(db) == copied
    # An update of a copied row to text that is no number: its unified row keeps what it
    # had, and the row is set aside.
    first = next(iter(copied))
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cashouts SET amount = 'x' WHERE id = :i"), {"i": first})
    assert quarantined(db)[first] == "amount_out_of_range"
    assert unified_amounts(db)[first] == copied[first]


def test_repair_copies_number_text_and_skips_the_rest(text_amounts: Database) -> None:
    db = text_amounts
    with db.engine.begin() as conn:
        ids = {insert(conn, amount): want for amount, want in AMOUNTS}
    copied, set_aside = expected(ids)
    report = run_repair(db.engine, db.settings, strategy="legacy_wins", actor="t", reason="t")
    skipped: dict[str, int] = {}
    for reason in set_aside.values():
        skipped[reason] = skipped.get(reason, 0) + 1
    assert report.as_dict()["skipped"] == skipped
    assert unified_amounts(db) == copied


def test_a_copied_amount_changed_to_text_that_is_no_number_is_a_mismatch(
    text_amounts: Database,
) -> None:
    """Changed in legacy (capture off) after its copy: the check names the mismatch
    (with the text as legacy holds it) and repair skips the row with its reason; the
    check failed on it ("decimal.InvalidOperation", comparing the text as a number)."""
    db = text_amounts
    with db.engine.begin() as conn:
        changed, kept = insert(conn, "5.00"), insert(conn, "6.00")
    run_backfill(db.engine, db.settings, workers=1)
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cashouts SET amount = 'abc' WHERE id = :i"), {"i": changed})
    check = run_check(db.engine, db.settings).as_dict()
    assert check["inconsistencies"]["field_mismatch"] == 1, check
    [example] = check["examples"]
    assert example["legacy_id"] == changed
    [detail] = example["details"]
    assert (detail["field"], detail["legacy_value"]) == ("amount", "abc")
    report = run_repair(db.engine, db.settings, strategy="legacy_wins", actor="t", reason="t")
    assert report.as_dict()["skipped"] == {"amount_out_of_range": 1}
    assert unified_amounts(db) == {changed: Decimal("5"), kept: Decimal("6")}


# Text the copyable rule reads as no amount, though Python's Decimal reads it as 1000.
NOT_PLAIN = ["1e3", "1E3", "1_000", "\u0661\u0660\u0660\u0660"]
# Plain decimals of 1000, as the rule reads them.
PLAIN = ["1000", " 1000.00 ", "+1000"]


def test_the_checks_sql_and_python_judge_a_text_amount_alike(text_amounts: Database) -> None:
    """A copied amount changed in legacy to text that is no plain decimal but that
    Python's Decimal reads as the unified amount ('1e3' for 1000): the check's SQL
    called it a mismatch (the rule reads no number in it) and its Python comparison
    called the amounts equal, so the example listed a field_mismatch with no details,
    and the adapter's check_consistency called the row consistent. One rule both ways:
    no amount, a mismatch."""
    db = text_amounts
    with db.engine.begin() as conn:
        ids = {insert(conn, "1000"): text for text in NOT_PLAIN + PLAIN}
    assert run_backfill(db.engine, db.settings, workers=1).as_dict()["inserted"] == len(ids)
    with db.engine.begin() as conn:
        for legacy_id, text in ids.items():
            conn.execute(
                sa.text("UPDATE cashouts SET amount = :a WHERE id = :i"),
                {"a": text, "i": legacy_id},
            )
    check = run_check(db.engine, db.settings).as_dict()
    assert check["inconsistencies"].get("field_mismatch") == len(NOT_PLAIN), check
    details = {e["legacy_id"]: e["details"] for e in check["examples"]}
    mismatched = {i for i, text in ids.items() if text in NOT_PLAIN}
    assert set(details) == mismatched, check["examples"]
    for legacy_id, found in details.items():
        assert [(d["field"], d["legacy_value"]) for d in found] == [("amount", ids[legacy_id])]
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    try:
        consistent = {i: adapter.check_consistency(f"cashout:{i}")["consistent"] for i in ids}
    finally:
        adapter.close()
    assert consistent == {i: i not in mismatched for i in ids}
