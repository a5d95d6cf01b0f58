"""SQLite keeps any value in any column, whatever the column's declared type: a user id
of ``'x'`` or ``1.5`` in a BIGINT column, a Unix time (``1700000000``) or ``'not a date'``
in a TIMESTAMP column. Applications do store Unix times there.

A user id that is not an integer cannot make a unified row (whose user_id is one): the
backfill and the capture set the row aside (``user_id_not_integer``) as they do a NULL
one; they copied it, and check called it consistent. A time its column cannot read
stopped every read and write of that transaction through the adapter ("unexpected
TypeError: fromisoformat"), in every mode, before any backfill: a Unix time is now read
as one (seconds, UTC), and a value that is no time at all as unknown (None).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from support.backfill_data import quarantined
from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill import run_backfill
from unistatus.cli import app
from unistatus.db.control import set_mode
from unistatus.domain.copyable import uncopyable
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import UncopyableLegacyRowError
from unistatus.migration import capture


def insert(conn: sa.Connection, user: Any, created: Any = "2026-01-01 10:00:00") -> int:
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO cashouts (status, user_id, amount, currency, created_at, "
                "updated_at) VALUES ('PENDING', :u, 1, 'USD', :t, :t) RETURNING id"
            ),
            {"u": user, "t": created},
        ).scalar_one()
    )


def test_a_user_id_that_is_not_an_integer_is_set_aside(sqlite_db: Database) -> None:
    db = sqlite_db
    with db.engine.begin() as conn:
        text, fraction, whole = insert(conn, "x"), insert(conn, 1.5), insert(conn, 7)
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert (report["inserted"], report["quarantined"]) == (1, 2), report
    assert quarantined(db) == {text: "user_id_not_integer", fraction: "user_id_not_integer"}
    with db.engine.connect() as conn:
        users = conn.execute(sa.text("SELECT legacy_id, user_id FROM unified_transactions"))
        assert [tuple(r) for r in users] == [(whole, 7)]
    # A bypass writer's row of that kind too (the capture's rule is the backfill's).
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    with db.engine.begin() as conn:
        bypass = insert(conn, "y")
    assert quarantined(db)[bypass] == "user_id_not_integer"


def test_a_time_its_column_cannot_read_does_not_stop_the_transaction(
    sqlite_db: Database,
) -> None:
    db = sqlite_db
    with db.engine.begin() as conn:
        unix, garbage, iso = (insert(conn, 1, t) for t in (1700000000, "not a date", "2026-01-01"))
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    try:
        for legacy_id in (unix, garbage, iso):
            ref = f"cashout:{legacy_id}"
            assert adapter.update_status(ref, "OTP_PENDING", "t", "t").overall_success
            assert adapter.get_transaction_status(ref)[0] is not None
        # Dual writes make the unified rows from the legacy rows' times.
        set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
        adapter.modes.refresh()
        for legacy_id in (unix, garbage, iso):
            result = adapter.update_status(f"cashout:{legacy_id}", "PROCESSING", "t", "t")
            assert result.overall_success, result.error
    finally:
        adapter.close()
    with db.engine.connect() as conn:
        created = dict(
            conn.execute(sa.select(sa.text("legacy_id, created_at FROM unified_transactions")))
            .tuples()
            .all()
        )
    assert str(created[unix]).startswith("2023-11-14 22:13:20"), created
    assert str(created[iso]).startswith("2026-01-01"), created
    assert created[garbage] is not None  # the time of the write stands in
    for legacy_id in (unix, garbage):
        shown = CliRunner().invoke(
            app, ["--database-url", db.url, "tx", "show", f"cashout:{legacy_id}"]
        )
        assert shown.exit_code == 0, shown.output


def test_the_backfill_and_the_adapter_judge_a_user_id_alike(sqlite_db: Database) -> None:
    """The rule is written twice (SQL for the backfill, Python for the adapter): a TEXT
    column's '42' passed the SQL and was refused by the adapter; 1e20 (beyond BIGINT)
    the reverse. Each value below is judged the same way by both (text as SQLite reads
    it as a number: ' 42' and '042' are 42)."""
    db = sqlite_db
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE cashouts")
        conn.exec_driver_sql(
            "CREATE TABLE cashouts (id INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT, "
            "user_id TEXT, amount NUMERIC, currency TEXT, created_at TIMESTAMP, "
            "updated_at TIMESTAMP)"
        )
        values: list[Any] = ["42", " 42", "042", "x", 1.5, 7.0, 1e20, -(2**63), 2**63 - 1]
        values += ["1e3", "4_2", "\u0664\u0662"]  # SQLite's CAST reads digits only
        ids = {insert(conn, v): v for v in values}
    run_backfill(db.engine, db.settings, workers=1)
    set_aside = set(quarantined(db))
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    try:
        adapter.modes.refresh()
        with db.engine.begin() as conn:  # the adapter's own judgement: a fresh unified row
            conn.exec_driver_sql("DELETE FROM unified_transactions")
        refused = set()
        for legacy_id in ids:
            try:
                result = adapter.update_status(f"cashout:{legacy_id}", "PROCESSING", "t", "t")
                assert result.overall_success, result.error
            except UncopyableLegacyRowError:
                refused.add(legacy_id)
    finally:
        adapter.close()
    judged = {ids[i]: (i in set_aside) for i in ids}
    assert judged == {
        "42": False,
        " 42": False,
        "042": False,
        "x": True,
        1.5: True,
        7.0: False,
        1e20: True,
        -(2**63): False,
        2**63 - 1: False,
        "1e3": True,
        "4_2": True,
        "\u0664\u0662": True,
    }, judged
    assert refused == set_aside, {ids[i]: (i in refused) for i in ids}


def _cashouts_with_a_text_amount(conn: sa.Connection) -> None:
    """The cashouts table as a STRICT-minded application declares it: the amount TEXT."""
    conn.exec_driver_sql("DROP TABLE cashouts")
    conn.exec_driver_sql(
        "CREATE TABLE cashouts (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT "
        "NULL, amount TEXT NOT NULL, currency TEXT NOT NULL, status TEXT, created_at TEXT "
        "NOT NULL, updated_at TEXT NOT NULL)"
    )


def test_an_amount_kept_as_text_is_judged_as_its_number(sqlite_db: Database) -> None:
    """A TEXT amount column (a STRICT table's, or any): '3.00' compared with the bound as
    text was past it, and every row was set aside as amount_out_of_range (an exploratory
    tester)."""
    db = sqlite_db
    with db.engine.begin() as conn:
        _cashouts_with_a_text_amount(conn)
        conn.exec_driver_sql(
            "INSERT INTO cashouts (user_id, amount, currency, status, created_at, updated_at) "
            "VALUES (1, '3.00', 'USD', 'APPROVED', '2025-01-01 00:00:00', '2025-01-01 00:00:00'),"
            " (2, '12.5', 'USD', 'PENDING', '2025-01-01 00:00:00', '2025-01-01 00:00:00'),"
            " (3, '-1', 'USD', 'PENDING', '2025-01-01 00:00:00', '2025-01-01 00:00:00')"
        )
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert (report["inserted"], report["quarantined"]) == (2, 1), report
    assert quarantined(db) == {3: "negative_amount"}


def test_a_text_amount_that_is_no_number_is_set_aside(sqlite_db: Database) -> None:
    """Judged as a number, a TEXT amount that is none ('abc', '', '12abc') read as 0 or
    12 (SQLite's CAST takes the leading digits) and was copied into unified, where the
    adapter's own judgement (``uncopyable``) refuses it: set aside, as amount_out_of_range,
    both ways (a reviewer)."""
    db = sqlite_db
    rows = {1: "3.00", 2: "abc", 3: "", 4: "12abc", 5: " 7.5 ", 6: "1.2.3", 7: "+4", 8: "5-"}
    with db.engine.begin() as conn:
        _cashouts_with_a_text_amount(conn)
        for key, amount in rows.items():
            conn.exec_driver_sql(
                "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
                "updated_at) VALUES (?, 1, ?, 'USD', 'PENDING', '2025-01-01 00:00:00', "
                "'2025-01-01 00:00:00')",
                (key, amount),
            )
    run_backfill(db.engine, db.settings, workers=1)
    expected = {
        key: reason
        for key, amount in rows.items()
        if (reason := uncopyable({"user_id": 1, "amount": amount, "currency": "USD"}))
    }
    assert expected == {
        2: "amount_out_of_range",
        3: "amount_out_of_range",
        4: "amount_out_of_range",
        6: "amount_out_of_range",
        8: "amount_out_of_range",
    }
    assert quarantined(db) == expected
