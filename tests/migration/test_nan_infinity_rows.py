"""Legacy values PostgreSQL's stock columns take and Python's types do not: a NaN or
infinite amount (``numeric``, PostgreSQL 14+ for the infinities) and an infinite time
(``timestamptz``). A NaN amount crashed repair, monitor's repair and the adapter for the
whole database (``Decimal('NaN') >= bound`` raises); an infinite time was copied into
the unified row and then every read of it into Python (tx show, check, repair,
continuous verification, the adapter) failed with psycopg's DataError. SQLite has
neither value: PostgreSQL only."""

from __future__ import annotations

import json
from decimal import Decimal
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
from unistatus.migration.verify import verify_changes


def _insert(
    conn: sa.Connection,
    table: str,
    legacy_id: int,
    amount: str,
    status: str,
    created: str = "now()",
    updated: str = "now()",
) -> None:
    conn.exec_driver_sql(
        f"INSERT INTO {table} (id, user_id, amount, currency, status, created_at, updated_at) "
        f"VALUES ({legacy_id}, 1, '{amount}', 'USD', '{status}', {created}, {updated})"
    )


def _adapter_update(db: Database, ref: str, status: str) -> tuple[Any, list[Any]]:
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    events: list[Any] = []
    adapter.observers.append(events.append)
    try:
        try:
            return adapter.update_status(ref, status, "t", "t"), events
        except Exception as error:  # the refusal, returned for the caller to judge
            return error, events
    finally:
        adapter.close()


def _show(db: Database, ref: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, ["--database-url", db.url, "tx", "show", ref, "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


def test_the_rule_names_a_nan_or_infinite_amount() -> None:
    """In Python as the SQL judges it (PostgreSQL orders NaN above every number)."""
    row = {"user_id": 1, "currency": "USD"}
    expected = {
        Decimal("NaN"): "amount_nan",
        float("nan"): "amount_nan",  # a double precision column's
        Decimal("Infinity"): "amount_out_of_range",
        Decimal("-Infinity"): "negative_amount",
        float("inf"): "amount_out_of_range",
    }
    assert {a: uncopyable({**row, "amount": a}) for a in expected} == expected


def test_a_nan_or_infinite_amount_is_set_aside_skipped_and_refused(scratch_pg: Database) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        _insert(conn, "escrows", 5001, "NaN", "CREATED")  # the stock numeric(20, 8) takes it
        # An infinity needs an unconstrained NUMERIC (PostgreSQL 14+).
        conn.exec_driver_sql("ALTER TABLE escrows ALTER COLUMN amount TYPE NUMERIC")
        _insert(conn, "escrows", 5002, "Infinity", "CREATED")
        _insert(conn, "escrows", 5003, "-Infinity", "CREATED")
        _insert(conn, "escrows", 5004, "10", "CREATED")
    # Before any backfill: repair copies what is missing, and skips what it cannot copy.
    for dry_run in (True, False):
        report = run_repair(
            db.engine, db.settings, strategy="legacy_wins", dry_run=dry_run, actor="t", reason="t"
        ).as_dict()
        assert report["skipped"] == {
            "amount_nan": 1,
            "amount_out_of_range": 1,
            "negative_amount": 1,
        }
    assert db.scalar("SELECT count(*) FROM unified_transactions") == 1
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert report["complete"] is True
    assert quarantined(db, "ESCROW") == {
        5001: "amount_nan",
        5002: "amount_out_of_range",
        5003: "negative_amount",
    }
    assert not run_check(db.engine, db.settings).is_consistent  # missing_unified, reported
    assert verify_changes(db.engine, db.settings, chunk=10, max_seconds=None).complete
    # The adapter refuses as input: nothing written, not counted as a database error.
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    for legacy_id, why in ((5001, "amount_nan"), (5002, "amount_out_of_range")):
        error, events = _adapter_update(db, f"escrow:{legacy_id}", "EXECUTING")
        assert isinstance(error, UncopyableLegacyRowError), error
        assert why in str(error)
        assert [(e.success, e.refused) for e in events] == [(True, True)]
    assert db.scalar("SELECT status FROM escrows WHERE id = 5001") == "CREATED"
    # A bypass writer's NaN row is set aside under the same reason.
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    with db.engine.begin() as conn:
        _insert(conn, "escrows", 5005, "NaN", "CREATED")
    assert quarantined(db, "ESCROW")[5005] == "amount_nan"


def test_an_infinite_legacy_time_is_read_as_a_missing_time(scratch_pg: Database) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        _insert(conn, "cashouts", 5000, "10", "PENDING", "'infinity'", "'infinity'")
        _insert(conn, "cashouts", 5001, "10", "PENDING", "'-infinity'", "'2020-01-02'")
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert (report["inserted"], report["quarantined"]) == (2, 0)
    # Never an infinite unified time: the other time stands in, else the copy's.
    finite = "isfinite(created_at) AND isfinite(updated_at)"
    assert db.scalar(f"SELECT count(*) FROM unified_transactions WHERE {finite}") == 2
    assert (
        str(db.scalar("SELECT created_at FROM unified_transactions WHERE legacy_id = 5001"))[:10]
        == "2020-01-02"
    )
    assert _show(db, "cashout:5000")["status"] == "PENDING"
    assert run_check(db.engine, db.settings).is_consistent
    # Rows the backfill did not see: repair and the adapter copy them the same way.
    with db.engine.begin() as conn:
        _insert(conn, "cashouts", 5003, "10", "PENDING", "'infinity'", "'infinity'")
        _insert(conn, "cashouts", 5004, "10", "PENDING", "'-infinity'", "'infinity'")
    report = run_repair(db.engine, db.settings, strategy="legacy_wins", actor="t", reason="t")
    assert report.as_dict()["skipped"] == {}
    assert db.scalar(f"SELECT count(*) FROM unified_transactions WHERE {finite}") == 4
    with db.engine.begin() as conn:
        _insert(conn, "cashouts", 5005, "10", "PENDING", "'infinity'", "'-infinity'")
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    result, events = _adapter_update(db, "cashout:5005", "OTP_PENDING")
    assert not isinstance(result, Exception), result
    assert [e.success for e in events] == [True]
    assert db.scalar(f"SELECT count(*) FROM unified_transactions WHERE {finite}") == 5
    assert run_check(db.engine, db.settings).is_consistent
    # A bypass writer's row of that kind gets finite unified times too.
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    with db.engine.begin() as conn:
        _insert(conn, "cashouts", 5002, "10", "PENDING", "'infinity'", "'-infinity'")
    assert db.scalar(f"SELECT count(*) FROM unified_transactions WHERE {finite}") == 6


def test_an_infinite_unified_time_an_older_version_copied_is_read_safely(
    scratch_pg: Database,
) -> None:
    """A unified row with an infinite time (copied before this rule), inconsistent:
    check, its --since, continuous verification, repair, tx show and the adapter work
    on it instead of failing with psycopg's DataError."""
    db = scratch_pg
    with db.engine.begin() as conn:
        _insert(conn, "cashouts", 5000, "10", "PENDING", "'infinity'", "'infinity'")
        _insert(conn, "cashouts", 5001, "10", "PENDING", "'infinity'", "'infinity'")
    run_backfill(db.engine, db.settings, workers=1)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE unified_transactions SET created_at = 'infinity', updated_at = 'infinity', "
            "amount = 11 WHERE legacy_id IN (5000, 5001)"
        )
    assert _show(db, "cashout:5000")["consistent"] is False
    full = run_check(db.engine, db.settings)
    assert not full.is_consistent
    assert not run_check(db.engine, db.settings, since="2000-01-01T00:00:00Z").is_consistent
    assert verify_changes(db.engine, db.settings, chunk=10, max_seconds=None).complete
    # The adapter writes the row (its unified row already exists: updated, times now).
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    result, events = _adapter_update(db, "cashout:5001", "OTP_PENDING")
    assert not isinstance(result, Exception), result
    assert [e.success for e in events] == [True]
    report = run_repair(db.engine, db.settings, strategy="legacy_wins", actor="t", reason="t")
    assert report.as_dict()["skipped"] == {}
    assert run_check(db.engine, db.settings).is_consistent
