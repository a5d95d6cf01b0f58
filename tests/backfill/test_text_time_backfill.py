"""A legacy table whose times are TEXT (or VARCHAR), as older applications keep them:
ISO text (``'2025-01-02 03:04:05'``, ``'2025-01-02T03:04:05+02:00'``). The backfill,
the capture, repair, the adapter, ``check --since`` and a mode switch's staleness count
read a time the rule reads (a plain ISO date and time, or a Unix time:
``unistatus.db.text_times``) as the instant it is (no offset: UTC), and one it cannot
read (``'not a date'``, ``'2025-02-30'``, ``'epoch'``) as a missing time: the other time,
or the copy's, stands in, as for SQLite's value that is no time and PostgreSQL's
infinity. On PostgreSQL the backfill failed outright ("function isfinite(text) does not
exist"), the capture refused the application's INSERT, ``check --since`` and the
staleness count failed ("operator does not exist: text >= timestamp with time zone"),
and the adapter's dual write failed on a time PostgreSQL's own cast refuses. On SQLite
the text was copied as it was (``'not a date'``, an offset not applied)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.backfill import run_backfill
from unistatus.db.control import set_mode, unified_staleness
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration import capture
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair

UPDATED = "2025-06-01 00:00:00"  # each row's updated_at, unless said
# (created_at as the application stored it, the unified created_at; None: missing, the
# updated_at stands in)
TIMES: list[tuple[str, datetime | None]] = [
    ("2025-01-02 03:04:05", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2025-01-02T03:04:05.25", datetime(2025, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)),
    ("2025-01-02T03:04:05+02:00", datetime(2025, 1, 2, 1, 4, 5, tzinfo=UTC)),
    ("2025-01-02 03:04:05Z", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2026-12-07 02:08:43.123456+00", datetime(2026, 12, 7, 2, 8, 43, 123456, tzinfo=UTC)),
    ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),  # a Unix time
    ("2025-01-02", datetime(2025, 1, 2, tzinfo=UTC)),
    ("2024-02-29 12:00:00", datetime(2024, 2, 29, 12, tzinfo=UTC)),
    ("not a date", None),
    ("", None),
    ("2025-02-30 00:00:00", None),  # no such day: PostgreSQL's cast refused it
    ("2025-02-29", None),  # nor this one (2025 is no leap year)
    ("2025-01-02 25:00:00", None),
    ("epoch", None),  # PostgreSQL reads it, Python does not: no plain ISO time
    (" 2025-01-02 ", None),  # nor with spaces around
    ("infinity", None),
]
STAND_IN = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres-text", "postgres-varchar"])
def text_times(request: pytest.FixtureRequest) -> Database:
    fixture = "sqlite_db" if request.param == "sqlite" else "scratch_pg"
    db: Database = request.getfixturevalue(fixture)
    kind = "VARCHAR(40)" if request.param.endswith("varchar") else "TEXT"
    key = "INTEGER PRIMARY KEY AUTOINCREMENT" if db.backend == "sqlite" else "BIGSERIAL PRIMARY KEY"
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE cashouts")
        conn.exec_driver_sql(
            f"CREATE TABLE cashouts (id {key}, status VARCHAR(64), user_id BIGINT, "
            f"amount NUMERIC(20, 8), currency VARCHAR(16), created_at {kind}, "
            f"updated_at {kind})"
        )
    return db


def insert(conn: sa.Connection, created: str, updated: str = UPDATED) -> int:
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO cashouts (status, user_id, amount, currency, created_at, "
                "updated_at) VALUES ('PENDING', 1, 5, 'USD', :c, :u) RETURNING id"
            ),
            {"c": created, "u": updated},
        ).scalar_one()
    )


def insert_all(db: Database) -> dict[int, datetime]:
    """Each of TIMES as a row's created_at; by id, the unified created_at wanted."""
    with db.engine.begin() as conn:
        return {insert(conn, text): want or STAND_IN for text, want in TIMES}


def unified_times(db: Database) -> dict[int, tuple[Any, Any]]:
    """By legacy id, the unified row's (created_at, updated_at), as aware UTC times."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT legacy_id, created_at, updated_at FROM unified_transactions")
        )
        return {int(i): (utc(c), utc(u)) for i, c, u in rows}


def utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite, read raw: as SQLAlchemy or SQLite write it
        try:
            value = datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
        except ValueError:
            try:
                value = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
            except ValueError:
                return value  # as it is, for the failure to show
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_the_backfill_copies_each_text_time_it_reads(text_times: Database) -> None:
    db = text_times
    wanted = insert_all(db)
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert report["complete"] is True, report
    assert (report["inserted"], report["quarantined"]) == (len(wanted), 0), report
    got = unified_times(db)
    assert {i: c for i, (c, _) in got.items()} == wanted
    assert {u for _, u in got.values()} == {STAND_IN}
    check = run_check(db.engine, db.settings).as_dict()
    assert check["consistent"] == len(wanted), check


def test_both_times_unreadable_the_copys_time_stands_in(text_times: Database) -> None:
    db = text_times
    with db.engine.begin() as conn:
        legacy_id = insert(conn, "not a date", "nor this")
    before = datetime.now(UTC) - timedelta(minutes=1)
    report = run_backfill(db.engine, db.settings, workers=1).as_dict()
    assert report["inserted"] == 1, report
    created, updated = unified_times(db)[legacy_id]
    assert created is not None and created >= before
    assert updated is not None and updated >= before


def test_the_capture_copies_a_bypass_writers_text_times(text_times: Database) -> None:
    db = text_times
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    capture.enable(db.engine, db.settings, actor="t", reason="t")
    wanted = insert_all(db)
    got = unified_times(db)
    assert {i: c for i, (c, _) in got.items()} == wanted
    # An update (the status) keeps the unified row's created_at.
    first = next(iter(wanted))
    with db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE cashouts SET status = 'PROCESSING', updated_at = :u WHERE id = :i"),
            {"u": "2025-07-01T00:00:00Z", "i": first},
        )
    assert unified_times(db)[first][0] == wanted[first]


def test_repair_copies_rows_with_text_times(text_times: Database) -> None:
    db = text_times
    wanted = insert_all(db)
    report = run_repair(db.engine, db.settings, strategy="legacy_wins", actor="t", reason="t")
    assert report.as_dict()["skipped"] == {}, report.as_dict()
    assert_made_by_the_adapter(db, wanted)


def assert_made_by_the_adapter(db: Database, wanted: dict[int, datetime]) -> None:
    """The unified rows the adapter (or repair, through it) made: each readable legacy
    created_at copied; a missing one, the time of the write (not the updated_at)."""
    got = {i: c for i, (c, _) in unified_times(db).items()}
    assert set(got) == set(wanted), got
    readable = {i: w for i, w in wanted.items() if w != STAND_IN}
    assert {i: got[i] for i in readable} == readable
    recent = datetime.now(UTC) - timedelta(minutes=5)
    assert all(
        isinstance(got[i], datetime) and got[i] > recent for i in wanted if i not in readable
    ), got


def test_a_check_since_reads_a_text_updated_at_as_the_time_it_is(text_times: Database) -> None:
    """The --since scope compares the legacy updated_at with a time: PostgreSQL
    compares no text with a time ("operator does not exist: text >= timestamp with
    time zone")."""
    db = text_times
    with db.engine.begin() as conn:
        old = insert(conn, "2025-01-01 00:00:00", "2025-01-01 00:00:00")
        recent = insert(conn, "2025-01-01 00:00:00", "2026-11-30T12:00:00+00:00")
        unreadable = insert(conn, "2025-01-01 00:00:00", "not a date")
    run_backfill(db.engine, db.settings, workers=1)
    with db.engine.begin() as conn:  # unified's own times are old too: legacy decides
        conn.execute(sa.text("UPDATE unified_transactions SET updated_at = :t"), {"t": STAND_IN})
    since = datetime(2026, 11, 1, tzinfo=UTC)
    check = run_check(db.engine, db.settings, since=since).as_dict()
    assert check["total"] == 1, (check, old, recent, unreadable)
    assert check["consistent"] == 1, check


def test_the_adapter_makes_a_unified_row_from_text_times(text_times: Database) -> None:
    db = text_times
    wanted = insert_all(db)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    try:
        for legacy_id in wanted:
            result = adapter.update_status(f"cashout:{legacy_id}", "PROCESSING", "t", "t")
            assert result.overall_success, (legacy_id, result.error)
    finally:
        adapter.close()
    assert_made_by_the_adapter(db, wanted)


def test_the_staleness_of_unified_reads_a_text_updated_at_as_the_time_it_is(
    text_times: Database,
) -> None:
    """A switch into a mode that reads unified counts the legacy rows written while
    unified was not (db.control.unified_staleness), by their updated_at: PostgreSQL
    compares no text with a time."""
    db = text_times
    with db.engine.begin() as conn:
        insert(conn, "2025-01-01 00:00:00", "2025-01-01 00:00:00")
        insert(conn, "2025-01-01 00:00:00", "2026-11-30T12:00:00+00:00")
        insert(conn, "2025-01-01 00:00:00", "not a date")
    tables = resolve_legacy_tables(db.engine, db.settings)
    with db.engine.connect() as conn:
        stale = unified_staleness(conn, tables, since=datetime(2026, 11, 1, tzinfo=UTC))
    assert stale is not None and stale.rows == {"CASHOUT": 1}, stale
