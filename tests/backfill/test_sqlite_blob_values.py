"""SQLite keeps a BLOB in any column: a status, an amount or a currency as bytes
(``X'50454E44494E47'`` is 'PENDING' as bytes) from a legacy writer that bound bytes.

A blob status was set aside as ``wrong_case`` (SQLite's upper() reads the bytes as text,
so it looked like a lower-case value), and ``check`` then failed storing the row as an
example ("Object of type bytes is not JSON serializable"), leaving an unfinished run each
time. A blob amount or currency was copied into unified as a blob, called consistent by
``check``, and ``tx show`` failed on it ("must be real number, not bytes"). Each is now
set aside with a reason naming what is wrong, by the backfill, the capture, the adapter
and repair alike (an exploratory tester, on dirty legacy data).
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
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair

ROW = (
    "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, updated_at) "
    "VALUES ({id}, 1, {amount}, {currency}, {status}, '2026-01-01', '2026-01-01')"
)


def insert(
    conn: sa.Connection,
    key: int,
    *,
    amount: str = "10",
    currency: str = "'USD'",
    status: str = "'PENDING'",
) -> int:
    conn.exec_driver_sql(ROW.format(id=key, amount=amount, currency=currency, status=status))
    return key


def test_check_shows_a_blob_status_without_failing(sqlite_db: Database) -> None:
    db = sqlite_db
    with db.engine.begin() as conn:
        insert(conn, 1025, status="X'50454E44494E47'")
        insert(conn, 1026)
    run_backfill(db.engine, db.settings, workers=1)
    for _ in range(2):
        shown = CliRunner().invoke(app, ["--database-url", db.url, "check"])
        assert shown.exit_code in (0, 1), shown.output
    with db.engine.connect() as conn:
        unfinished = conn.exec_driver_sql(
            "SELECT count(*) FROM unistatus_check_runs WHERE finished_at IS NULL "
            "AND run != 'continuous'"
        ).scalar_one()
    assert unfinished == 0


def test_a_blob_status_is_set_aside_as_not_text(sqlite_db: Database) -> None:
    db = sqlite_db
    with db.engine.begin() as conn:
        blob = insert(conn, 1025, status="X'50454E44494E47'")
        insert(conn, 1026)
    run_backfill(db.engine, db.settings, workers=1)
    assert quarantined(db) == {blob: "status_not_text"}
    with db.engine.connect() as conn:
        kept = conn.exec_driver_sql(
            "SELECT typeof(raw_status), raw_status FROM unistatus_backfill_quarantine"
        ).one()
    # Shown as the SQL literal of the bytes: never the text 'PENDING' it is not.
    assert tuple(kept) == ("text", "X'50454E44494E47'"), kept


def test_tx_show_reads_a_blob_amount(sqlite_db: Database) -> None:
    db = sqlite_db
    with db.engine.begin() as conn:
        amount = insert(conn, 1020, amount="X'3130'")
        currency = insert(conn, 1021, currency="X'555344'")
    run_backfill(db.engine, db.settings, workers=1)
    for key in (amount, currency):
        shown = CliRunner().invoke(app, ["--database-url", db.url, "tx", "show", f"cashout:{key}"])
        assert shown.exit_code == 0, shown.output


def test_a_blob_amount_or_currency_is_set_aside(sqlite_db: Database) -> None:
    db = sqlite_db
    with db.engine.begin() as conn:
        amount = insert(conn, 1020, amount="X'3130'")
        currency = insert(conn, 1021, currency="X'555344'")
        good = insert(conn, 1022, amount="'10.5'")
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert (report["inserted"], report["quarantined"]) == (1, 2), report
    assert quarantined(db) == {amount: "amount_not_number", currency: "currency_not_text"}
    with db.engine.connect() as conn:
        copied = conn.exec_driver_sql(
            "SELECT legacy_id, typeof(amount), typeof(currency) FROM unified_transactions"
        ).all()
    assert [tuple(r) for r in copied] == [(good, "real", "text")] or [tuple(r) for r in copied] == [
        (good, "text", "text")
    ], copied
    # A bypass writer's row of that kind too (the capture's rule is the backfill's).
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    with db.engine.begin() as conn:
        later = insert(conn, 1030, amount="X'3130'")
        later_currency = insert(conn, 1031, currency="X'555344'")
    assert quarantined(db)[later] == "amount_not_number"
    assert quarantined(db)[later_currency] == "currency_not_text"


def test_the_adapter_refuses_and_repair_skips_a_blob_amount(sqlite_db: Database) -> None:
    db = sqlite_db
    assert uncopyable({"user_id": 1, "amount": b"10", "currency": "USD"}) == ("amount_not_number")
    assert uncopyable({"user_id": 1, "amount": 10, "currency": b"USD"}) == "currency_not_text"
    with db.engine.begin() as conn:
        amount = insert(conn, 1020, amount="X'3130'")
        currency = insert(conn, 1021, currency="X'555344'")
        drifted = insert(conn, 1022)
    run_backfill(db.engine, db.settings, workers=1)
    with db.engine.begin() as conn:  # a writer past unistatus binds bytes later
        conn.exec_driver_sql(f"UPDATE cashouts SET amount = X'3130' WHERE id = {drifted}")
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    refused: dict[int, Any] = {}
    try:
        adapter.modes.refresh()
        for key in (amount, currency):
            try:
                adapter.update_status(f"cashout:{key}", "PROCESSING", "t", "t")
            except UncopyableLegacyRowError as exc:
                refused[key] = str(exc)
    finally:
        adapter.close()
    assert set(refused) == {amount, currency}, refused
    assert "amount_not_number" in refused[amount], refused
    run_check(db.engine, db.settings)
    report = run_repair(db.engine, db.settings, strategy="legacy_wins", actor="t")
    # The quarantined row (no unified row to make) and the drifted one (none to overwrite).
    assert report.skipped == {"amount_not_number": 2, "currency_not_text": 1}, report
    with db.engine.connect() as conn:
        kinds = conn.exec_driver_sql(
            f"SELECT typeof(amount) FROM unified_transactions WHERE legacy_id = {drifted}"
        ).scalar_one()
    assert kinds != "blob"
