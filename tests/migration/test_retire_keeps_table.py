"""A SQLite legacy table through a retirement and its undo: its definition kept.

SQLite has no ``ALTER COLUMN``; a table copy made from reflection (``batch_alter_table``)
writes a CREATE TABLE of its own: ``AUTOINCREMENT`` gone (and the table's
``sqlite_sequence`` row with it, so the newest row's id is handed out again once it is
deleted: the id reuse README.md warns against), a restored column last, the status
column's DEFAULT and CHECK lost. The retirement drops the column in place (the table's
CREATE statement otherwise as it was, its sequence untouched); the undo creates the table
again from the CREATE statement it had before the retirement (``sqlite_master.sql``), its
sequence, indexes and triggers as they were.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_retire import freeze_and_archive, seed

from conftest import Database
from unistatus.errors import UnistatusError
from unistatus.migration.retire import retire_legacy_columns, status_checksum, undo_cleanup

LEGACY = ("cashouts", "escrows", "exchanges")

# cashouts as an application may declare it: constraints, defaults and a collation on
# its columns, the status NOT NULL with a DEFAULT and a CHECK of its own; an index and a
# table referencing it (a foreign key without an action) beside it.
RICH_CASHOUTS = (
    "DROP TABLE cashouts",
    "CREATE TABLE cashouts (\n"
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "  user_id BIGINT NOT NULL,\n"
    "  amount NUMERIC(20, 8) NOT NULL CHECK (amount >= 0),\n"
    "  currency VARCHAR(10) NOT NULL DEFAULT 'USD' COLLATE NOCASE,\n"
    "  status VARCHAR(64) NOT NULL DEFAULT 'PENDING' CHECK (status <> ''),\n"
    "  created_at DATETIME NOT NULL,\n"
    "  updated_at DATETIME NOT NULL,\n"
    "  UNIQUE (user_id, created_at)\n"
    ")",
    "CREATE INDEX app_cashouts_user ON cashouts (user_id, currency)",
    "CREATE TABLE app_cashout_notes (cashout_id INTEGER NOT NULL REFERENCES cashouts (id), "
    "note TEXT)",
)


def definitions(db: Database) -> dict[str, Any]:
    """Each legacy table's CREATE statement, column order, indexes and triggers
    (``sqlite_master``), and its ``sqlite_sequence`` value."""
    with db.engine.connect() as conn:
        found: dict[str, Any] = {}
        for table in LEGACY:
            rows = conn.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY type, name",
                (table,),
            ).all()
            columns = [r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({table})")]
            sequence = conn.exec_driver_sql(
                "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
            ).scalar_one_or_none()
            found[table] = {
                "objects": [tuple(r) for r in rows],
                "columns": columns,
                "sequence": sequence,
            }
        return found


def id_after_deleting_the_newest(db: Database, table: str) -> tuple[int, int]:
    """(the newest row's id, the id a raw INSERT is given once it is deleted): in a
    transaction rolled back, so nothing stays."""
    with db.engine.connect() as conn, conn.begin() as tx:
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")  # a note on the row
        newest = int(conn.exec_driver_sql(f"SELECT max(id) FROM {table}").scalar_one())
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE id = ?", (newest,))
        conn.exec_driver_sql(
            f"INSERT INTO {table} (user_id, amount, currency, created_at, updated_at) "
            "VALUES (1, 1, 'USD', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        )
        given = int(conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one())
        tx.rollback()
    return newest, given


def no_id_reused(db: Database) -> None:
    for table in LEGACY:
        newest, given = id_after_deleting_the_newest(db, table)
        assert given > newest, f"{table}: id {newest} handed out again"


@pytest.fixture
def frozen(sqlite_db: Database, tmp_path: Path) -> Iterator[Database]:
    db = sqlite_db
    seed(db)
    freeze_and_archive(db, tmp_path)
    # A sequence ahead of the newest row (a row deleted long ago): kept as it is.
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sqlite_sequence SET seq = seq + 5 WHERE name = 'escrows'")
    yield db


def test_retire_and_undo_keep_autoincrement_sequence_and_column_order(frozen: Database) -> None:
    db = frozen
    before = definitions(db)
    checksum = status_checksum(db.engine, db.settings)
    assert all("AUTOINCREMENT" in d["objects"][0][2] for d in before.values())

    assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    retired = definitions(db)
    for table in LEGACY:
        sql = retired[table]["objects"][0][2]
        assert "PRIMARY KEY AUTOINCREMENT" in sql, sql
        assert retired[table]["columns"] == [c for c in before[table]["columns"] if c != "status"]
        assert retired[table]["sequence"] == before[table]["sequence"], table
    no_id_reused(db)

    assert undo_cleanup(db.engine, db.settings, actor="test")["undone"]
    assert definitions(db) == before
    assert status_checksum(db.engine, db.settings) == checksum
    no_id_reused(db)


def test_undo_restores_the_tables_own_definition_exactly(
    sqlite_db: Database, tmp_path: Path
) -> None:
    db = sqlite_db
    rich_cashouts(db, tmp_path, "", "")
    before = definitions(db)
    checksum = status_checksum(db.engine, db.settings)

    assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    no_id_reused(db)
    assert undo_cleanup(db.engine, db.settings, actor="test")["undone"]

    assert definitions(db) == before
    assert status_checksum(db.engine, db.settings) == checksum
    no_id_reused(db)
    with db.engine.connect() as conn:
        notes = conn.exec_driver_sql("SELECT count(*) FROM app_cashout_notes").scalar_one()
        assert notes == 3
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []


def rich_cashouts(db: Database, tmp_path: Path, table_constraint: str, notes_fk: str) -> None:
    """Seeded, frozen, archived, cashouts declared with ``table_constraint`` and
    referenced by app_cashout_notes (``notes_fk``: its foreign key's action)."""
    statements = list(RICH_CASHOUTS)
    statements[1] = statements[1].replace("created_at)\n", f"created_at){table_constraint}\n")
    statements[3] = statements[3].replace("(id)", f"(id) {notes_fk}")
    with db.engine.begin() as conn:
        for sql in statements:
            conn.exec_driver_sql(sql)
    seed(db)
    freeze_and_archive(db, tmp_path)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO app_cashout_notes SELECT id, 'kept' FROM cashouts")


def test_a_table_sqlite_cannot_drop_the_column_of_in_place_keeps_autoincrement(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A table CHECK naming the status: SQLite refuses ``DROP COLUMN``; the table is
    copied, its key still AUTOINCREMENT and its sequence kept; the undo exact."""
    db = sqlite_db
    rich_cashouts(db, tmp_path, ",\n  CHECK (length(status) > 0)", "")
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sqlite_sequence SET seq = seq + 5 WHERE name = 'cashouts'")
    before = definitions(db)
    checksum = status_checksum(db.engine, db.settings)

    assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    retired = definitions(db)["cashouts"]
    (sql,) = [sql for kind, _name, sql in retired["objects"] if kind == "table"]
    assert "AUTOINCREMENT" in sql
    assert retired["sequence"] == before["cashouts"]["sequence"]
    no_id_reused(db)
    assert undo_cleanup(db.engine, db.settings, actor="test")["undone"]
    assert definitions(db) == before
    assert status_checksum(db.engine, db.settings) == checksum


def test_a_table_referenced_with_an_action_is_not_dropped_by_retire_or_undo(
    sqlite_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ON DELETE CASCADE on cashouts: dropping the table would delete the notes. The
    retirement drops the column in place; the undo adds it back (last), says so, and
    every note stays."""
    db = sqlite_db
    rich_cashouts(db, tmp_path, "", "ON DELETE CASCADE")
    checksum = status_checksum(db.engine, db.settings)
    assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    assert db.scalar("SELECT count(*) FROM app_cashout_notes") == 3
    assert undo_cleanup(db.engine, db.settings, actor="test")["undone"]
    assert db.scalar("SELECT count(*) FROM app_cashout_notes") == 3
    assert status_checksum(db.engine, db.settings) == checksum
    assert "app_cashout_notes on it act on a delete" in caplog.text
    assert definitions(db)["cashouts"]["columns"][-1] == "status"


def test_a_column_added_while_retired_is_kept_by_the_undo(frozen: Database) -> None:
    db = frozen
    checksum = status_checksum(db.engine, db.settings)
    assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE exchanges ADD COLUMN note TEXT DEFAULT 'n'")
    assert undo_cleanup(db.engine, db.settings, actor="test")["undone"]
    assert status_checksum(db.engine, db.settings) == checksum
    columns = definitions(db)["exchanges"]["columns"]
    assert columns[-2:] == ["note", "status"]
    assert db.scalar("SELECT count(*) FROM exchanges WHERE note = 'n'") == 3


def test_a_table_that_must_be_copied_but_is_referenced_with_an_action_is_refused(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A table CHECK naming the status (no in-place drop) and ON DELETE CASCADE on it (a
    copy would delete the notes): the retirement is refused as a gate says it, nothing
    changed, not an "unexpected RuntimeError" (review)."""
    db = sqlite_db
    rich_cashouts(db, tmp_path, ",\n  CHECK (length(status) > 0)", "ON DELETE CASCADE")
    before = definitions(db)
    with pytest.raises(UnistatusError, match="act on"):
        retire_legacy_columns(db.engine, db.settings, actor="test")
    assert definitions(db) == before
    assert db.scalar("SELECT count(*) FROM app_cashout_notes") == 3


def amount_check_holds(db: Database) -> bool:
    """Whether cashouts still refuses a negative amount (RICH_CASHOUTS' unnamed
    ``CHECK (amount >= 0)``): a raw INSERT in a transaction rolled back."""
    with db.engine.connect() as conn, conn.begin() as tx:
        try:
            conn.exec_driver_sql(
                "INSERT INTO cashouts (user_id, amount, currency, created_at, updated_at) "
                "VALUES (99, -1, 'USD', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
            )
        except sa.exc.IntegrityError as exc:
            assert "CHECK constraint failed" in str(exc), exc
            return True
        finally:
            tx.rollback()
    return False


def test_a_copied_table_keeps_the_applications_unnamed_checks(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A table CHECK naming the status makes the retirement copy cashouts; the copy made
    from reflection omitted every unnamed CHECK (Alembic's "Unnamed CHECK constraint ...
    omitted from the table recreate"): the application's ``CHECK (amount >= 0)`` was
    gone while retired. It is kept; the ones naming the status go with the column (and
    come back with the undo, exactly)."""
    db = sqlite_db
    rich_cashouts(db, tmp_path, ",\n  CHECK (length(status) > 0)", "")
    before = definitions(db)
    assert amount_check_holds(db)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    assert amount_check_holds(db)
    assert [str(w.message) for w in caught if "CHECK" in str(w.message)] == []

    assert undo_cleanup(db.engine, db.settings, actor="test")["undone"]
    assert definitions(db) == before
    assert amount_check_holds(db)


def test_a_copied_table_drops_a_named_check_on_the_status_with_it(
    sqlite_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A named table CHECK on the status (no in-place drop either): the copy restated it
    and failed ("no such column: status"). It goes with the column, logged by name; the
    undo gives it back with the table's CREATE statement."""
    db = sqlite_db
    rich_cashouts(db, tmp_path, ",\n  CONSTRAINT app_status_set CHECK (length(status) > 0)", "")
    before = definitions(db)
    checksum = status_checksum(db.engine, db.settings)

    assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    assert "app_status_set" not in definitions(db)["cashouts"]["objects"][0][2]
    assert "app_status_set" in caplog.text
    assert amount_check_holds(db)

    assert undo_cleanup(db.engine, db.settings, actor="test")["undone"]
    assert definitions(db) == before
    assert status_checksum(db.engine, db.settings) == checksum
