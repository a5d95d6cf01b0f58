"""A partitioned or inherited legacy table (PostgreSQL): writes that name a partition or
an inheriting table are captured as writes to the table (docs/capture.md, "Partitions
and inheriting tables").

A statement fires the statement triggers of the table it names only, so the capture's
triggers on the parent never saw ``UPDATE cashouts_p1 ...``: the unified row stayed
behind, no history row, and ``capture status`` said all was well.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.capture_data import history_of, legacy_status, raw, unified_of
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration import capture
from unistatus.migration.check import run_check

pytestmark = pytest.mark.postgres

T0 = "2026-01-01 00:00:00+00"
COLUMNS = "id, user_id, amount, currency, status, created_at, updated_at"


def partitioned(db: Database, how: str) -> None:
    """cashouts made a tree: ``range`` partitions (one of them partitioned again), or an
    ``inherits`` parent with a child table of its own rows."""
    statements = ["ALTER TABLE cashouts RENAME TO cashouts_plain"]
    if how == "range":
        statements += [
            "CREATE TABLE cashouts (LIKE cashouts_plain INCLUDING DEFAULTS, PRIMARY KEY (id))"
            " PARTITION BY RANGE (id)",
            "CREATE TABLE cashouts_p1 PARTITION OF cashouts FOR VALUES FROM (0) TO (100)",
            "CREATE TABLE cashouts_p2 PARTITION OF cashouts FOR VALUES FROM (100) TO (1000)"
            " PARTITION BY RANGE (id)",
            "CREATE TABLE cashouts_p2a PARTITION OF cashouts_p2 FOR VALUES FROM (100) TO (500)",
            "CREATE TABLE cashouts_p2b PARTITION OF cashouts_p2 FOR VALUES FROM (500) TO (1000)",
        ]
    else:
        statements += [
            "CREATE TABLE cashouts (LIKE cashouts_plain INCLUDING DEFAULTS, PRIMARY KEY (id))",
            "CREATE TABLE cashouts_child (PRIMARY KEY (id)) INHERITS (cashouts)",
        ]
    statements += ["ALTER SEQUENCE cashouts_id_seq OWNED BY NONE", "DROP TABLE cashouts_plain"]
    with db.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def insert(db: Database, table: str, legacy_id: int, status: str = "PENDING") -> None:
    raw(
        db,
        f"INSERT INTO {table} ({COLUMNS}) VALUES ({legacy_id}, 1, 10, 'USD', '{status}', '{T0}', '{T0}')",
    )


def statuses(db: Database, legacy_id: int) -> tuple[Any, ...]:
    u = unified_of(db, "CASHOUT", legacy_id)
    return (
        legacy_status(db, "cashouts", legacy_id),
        None if u is None else (u["status"], u["legacy_status"]),
        len(history_of(db, "CASHOUT", legacy_id)),
    )


def consistent(db: Database) -> None:
    report = run_check(db.engine, db.settings, store=False)
    assert report.consistent == report.total, report.as_dict()


def enabled(db: Database) -> None:
    capture.enable(db.engine, db.settings, actor="test", reason="test")
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")


@pytest.mark.parametrize("table", ["cashouts_p1", "cashouts_p2", "cashouts_p2a"])
def test_writes_naming_a_partition_are_captured(scratch_pg: Database, table: str) -> None:
    db = scratch_pg
    partitioned(db, "range")
    enabled(db)
    key = 5 if table == "cashouts_p1" else 120
    insert(db, table, key)
    assert statuses(db, key) == ("PENDING", ("PENDING", "PENDING"), 1)
    raw(db, f"UPDATE {table} SET status = 'EXECUTING' WHERE id = {key}")
    assert statuses(db, key) == ("EXECUTING", ("PROCESSING", "EXECUTING"), 2)
    consistent(db)
    raw(db, f"DELETE FROM {table} WHERE id = {key}")
    deleted = history_of(db, "CASHOUT", key)
    assert len(deleted) == 3 and deleted[-1]["to_legacy_status"] is None


def test_writes_naming_an_inheriting_table_are_captured(scratch_pg: Database) -> None:
    db = scratch_pg
    partitioned(db, "inherits")
    enabled(db)
    insert(db, "cashouts_child", 7)
    raw(db, "UPDATE cashouts_child SET status = 'EXECUTING' WHERE id = 7")
    assert statuses(db, 7) == ("EXECUTING", ("PROCESSING", "EXECUTING"), 2)
    # Through the parent the child's rows are its rows: captured once, not twice.
    raw(db, "UPDATE cashouts SET status = 'AWAITING_RESPONSE' WHERE id = 7")
    assert statuses(db, 7) == ("AWAITING_RESPONSE", ("AWAITING_RESPONSE", "AWAITING_RESPONSE"), 3)
    consistent(db)


def test_a_truncate_records_each_row_once_whichever_table_it_names(scratch_pg: Database) -> None:
    db = scratch_pg
    partitioned(db, "range")
    enabled(db)
    for key, table in [(1, "cashouts"), (2, "cashouts"), (120, "cashouts"), (600, "cashouts")]:
        insert(db, table, key)
    raw(db, "TRUNCATE cashouts_p2a")
    assert [len(history_of(db, "CASHOUT", k)) for k in (1, 2, 120, 600)] == [1, 1, 2, 1]
    raw(db, "TRUNCATE cashouts")
    assert [len(history_of(db, "CASHOUT", k)) for k in (1, 2, 120, 600)] == [2, 2, 2, 2]


def test_status_names_a_partition_added_since_and_enable_covers_it(scratch_pg: Database) -> None:
    db = scratch_pg
    partitioned(db, "range")
    enabled(db)
    assert capture.status(db.engine, db.settings).ok
    raw(db, "CREATE TABLE cashouts_p3 PARTITION OF cashouts FOR VALUES FROM (1000) TO (2000)")
    found = capture.status(db.engine, db.settings)
    assert not found.ok
    assert {m["table"] for m in found.as_dict()["missing"]} == {"cashouts_p3"}
    capture.enable(db.engine, db.settings, actor="test", reason="test")
    assert capture.status(db.engine, db.settings).ok
    insert(db, "cashouts_p3", 1500)
    assert statuses(db, 1500) == ("PENDING", ("PENDING", "PENDING"), 1)
    capture.disable(db.engine, db.settings, actor="test", reason="test")
    with db.engine.connect() as conn:
        left = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND starts_with(tgname, :p)"
            ),
            {"p": "unistatus_capture_"},
        ).scalar_one()
    assert left == 0
    consistent(db)


def test_retired_and_restored_with_the_status_columns_of_a_partitioned_table(
    scratch_pg: Database, tmp_path: Any
) -> None:
    """The partitions' triggers that name the status column go before the column is
    dropped (the drop would be refused), the rest with it; the undo brings them all back."""
    from unistatus.migration.archive import export_archive, record_verified, verify_archive
    from unistatus.migration.retire import retire_legacy_columns, undo_cleanup

    db = scratch_pg
    partitioned(db, "range")
    enabled(db)
    insert(db, "cashouts_p1", 3)
    full = capture.status(db.engine, db.settings)
    assert full.ok and "cashouts_p2a" in {t.table for t in full.installed}
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="test: phase 4", actor="test")
    export_archive(db.engine, db.settings, tmp_path / "archive")
    record_verified(db.engine, verify_archive(db.engine, tmp_path / "archive"), actor="t")
    retire_legacy_columns(db.engine, db.settings, actor="test", reason="test")
    retired = capture.status(db.engine, db.settings)
    assert retired.ok and {t.table for t in retired.installed} == {"unified_transactions"}
    undo_cleanup(db.engine, db.settings, actor="test", reason="test")
    back = capture.status(db.engine, db.settings)
    assert back.ok and sorted(back.installed, key=str) == sorted(full.installed, key=str)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    raw(db, "UPDATE cashouts_p1 SET status = 'EXECUTING' WHERE id = 3")
    assert statuses(db, 3)[1] == ("PROCESSING", "EXECUTING")


def test_a_truncate_after_a_partition_was_dropped_or_renamed_still_works(
    scratch_pg: Database,
) -> None:
    """Dropping or renaming an old partition is routine upkeep: the application's next
    TRUNCATE failed (UndefinedTable: a partition the trigger function named), and a
    renamed one's rows went unrecorded (review)."""
    db = scratch_pg
    partitioned(db, "range")
    enabled(db)
    for key in (1, 120, 600):
        insert(db, "cashouts", key)
    raw(db, "DROP TABLE cashouts_p1")
    raw(db, "ALTER TABLE cashouts_p2a RENAME TO cashouts_p2a_old")
    raw(db, "TRUNCATE cashouts")
    # 1 went with its partition (no trigger fires for a DROP); 120 and 600 recorded.
    assert [len(history_of(db, "CASHOUT", k)) for k in (1, 120, 600)] == [1, 2, 2]


def test_a_foreign_partition_is_left_out_not_a_failed_enable(scratch_pg: Database) -> None:
    """PostgreSQL refuses transition-table triggers on a foreign table: capture enable
    failed on a table with one foreign partition (review). Its rows are another
    server's; the others are captured."""
    db = scratch_pg
    partitioned(db, "inherits")
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS file_fdw")
        conn.exec_driver_sql("CREATE SERVER files FOREIGN DATA WRAPPER file_fdw")
        conn.exec_driver_sql(
            "CREATE FOREIGN TABLE cashouts_far () INHERITS (cashouts) "
            "SERVER files OPTIONS (filename '/dev/null', format 'csv')"
        )
    enabled(db)
    assert capture.status(db.engine, db.settings).ok
    insert(db, "cashouts_child", 5)
    assert statuses(db, 5) == ("PENDING", ("PENDING", "PENDING"), 1)
