"""The retirement's undo restores the status column's DEFAULT, indexes and constraints.

PostgreSQL drops them with the column; the retirement records their definitions
(``pg_get_expr``, ``pg_get_indexdef``, ``pg_get_constraintdef``) and the undo creates
them again, exactly. A retirement done before they were recorded is undone as before,
and the undo says what it could not restore. SQLite drops a column by copying its
table, which cannot keep an index on it: the retirement refuses there, naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_retire import freeze_and_archive, seed

from conftest import Database
from unistatus.db.tables import control_log, unified_transactions
from unistatus.errors import GateError
from unistatus.migration.retire import legacy_columns_dropped, retire_legacy_columns, undo_cleanup

SETUP = (
    "CREATE INDEX cashouts_status_idx ON cashouts (status)",
    "CREATE INDEX cashouts_open_idx ON cashouts (user_id, lower(status)) WHERE status <> 'FAILED'",
    "ALTER TABLE cashouts ALTER COLUMN status SET DEFAULT 'PENDING'",
    "ALTER TABLE cashouts ADD CONSTRAINT cashouts_status_chk CHECK (status <> '')",
    "ALTER TABLE cashouts ADD CONSTRAINT cashouts_user_status_key UNIQUE (user_id, status)",
)
TEARDOWN = (
    "DROP INDEX IF EXISTS cashouts_status_idx",
    "DROP INDEX IF EXISTS cashouts_open_idx",
    "ALTER TABLE cashouts ALTER COLUMN status DROP DEFAULT",
    "ALTER TABLE cashouts DROP CONSTRAINT IF EXISTS cashouts_status_chk",
    "ALTER TABLE cashouts DROP CONSTRAINT IF EXISTS cashouts_user_status_key",
)


def definitions(db: Database) -> dict[str, Any]:
    """The catalog's definitions on cashouts: the status column's default, every index,
    every constraint."""
    with db.app_engine.connect() as conn:
        default = conn.exec_driver_sql(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
            "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
            "WHERE d.adrelid = 'cashouts'::regclass AND a.attname = 'status'"
        ).scalar_one_or_none()
        indexes = conn.exec_driver_sql(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indrelid = 'cashouts'::regclass ORDER BY 1"
        ).all()
        constraints = conn.exec_driver_sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'cashouts'::regclass ORDER BY 1"
        ).all()
    return {
        "default": default,
        "indexes": [tuple(r) for r in indexes],
        "constraints": [tuple(r) for r in constraints],
    }


@pytest.fixture
def defined(pg: Database, tmp_path: Path) -> Iterator[Database]:
    """Seeded, frozen, archived, cashouts.status with a default, indexes, constraints;
    all of it gone again after the test (the database is shared by the run)."""
    seed(pg)
    with pg.app_engine.begin() as conn:
        for sql in SETUP:
            conn.exec_driver_sql(sql)
    try:
        freeze_and_archive(pg, tmp_path)
        yield pg
    finally:
        undo_cleanup(pg.engine, pg.settings)
        with pg.app_engine.begin() as conn:
            for sql in TEARDOWN:
                conn.exec_driver_sql(sql)


@pytest.mark.postgres
def test_the_undo_restores_the_default_indexes_and_constraints(defined: Database) -> None:
    db = defined
    before = definitions(db)
    assert before["default"] is not None and len(before["indexes"]) == 4
    retire_legacy_columns(db.engine, db.settings, actor="test")
    undone = undo_cleanup(db.engine, db.settings, actor="test")
    assert undone["undone"]
    assert definitions(db) == before
    # An application's insert that relies on the default works again.
    with db.app_engine.begin() as conn:
        status = conn.exec_driver_sql(
            "INSERT INTO cashouts (user_id, amount, currency, created_at, updated_at) "
            "VALUES (99, 1, 'EUR', now(), now()) RETURNING status"
        ).scalar_one()
    assert status == "PENDING"


@pytest.mark.postgres
def test_an_undo_of_a_retirement_that_recorded_no_definitions_says_so(
    defined: Database,
) -> None:
    """Retired by the code before (length, nullability and type recorded, nothing else):
    the column comes back as it did then, and the undo says what it did not restore."""
    db = defined
    retire_legacy_columns(db.engine, db.settings, actor="test")
    with db.engine.begin() as conn:
        row = conn.execute(
            sa.select(control_log.c.id, control_log.c.meta)
            .where(control_log.c.key == "legacy_columns", control_log.c.new_value == "dropped")
            .order_by(control_log.c.id.desc())
            .limit(1)
        ).one()
        old = {
            system: {k: info[k] for k in ("table", "column", "length", "nullable", "type")}
            for system, info in row.meta.items()
        }
        conn.execute(sa.update(control_log).where(control_log.c.id == row.id).values(meta=old))
    undone = undo_cleanup(db.engine, db.settings, actor="test")
    assert undone["undone"]
    notes = " ".join(undone["notes"]).lower()
    assert "not recorded" in notes and "default" in notes, notes
    assert definitions(db)["default"] is None


def test_sqlite_refuses_to_retire_an_indexed_status_column_naming_the_index(
    sqlite_db: Database, tmp_path: Path
) -> None:
    db = sqlite_db
    seed(db)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX cashouts_status_idx ON cashouts (status)")
    freeze_and_archive(db, tmp_path)
    with pytest.raises(GateError, match=r"cashouts_status_idx"):
        retire_legacy_columns(db.engine, db.settings, actor="test")
    assert "status" in {c["name"] for c in sa.inspect(db.engine).get_columns("cashouts")}
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX cashouts_status_idx")
    assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    assert undo_cleanup(db.engine, db.settings, actor="test")["undone"]


def status_types(db: Database) -> dict[str, tuple[str, str | None]]:
    """Each legacy table's status column: its type as SQL names it, its collation."""
    with db.app_engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT c.relname, format_type(a.atttypid, a.atttypmod), co.collname "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
            "WHERE c.relname IN ('cashouts', 'escrows', 'exchanges') "
            "AND c.relnamespace = 'public'::regnamespace AND a.attname = 'status' "
            "AND NOT a.attisdropped"
        ).all()
    return {name: (kind, collation) for name, kind, collation in rows}


@pytest.mark.postgres
def test_the_undo_restores_the_status_columns_type_and_collation(
    pg: Database, tmp_path: Path
) -> None:
    """char(30) came back varchar(30), text COLLATE "C" varchar(64), and the status
    checksum no longer matched (an exploratory tester)."""
    from unistatus.migration.retire import status_checksum

    installed = status_types(pg)
    with pg.app_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ALTER COLUMN status TYPE char(30)")
        conn.exec_driver_sql('ALTER TABLE escrows ALTER COLUMN status TYPE text COLLATE "C"')
    try:
        seed(pg)
        freeze_and_archive(pg, tmp_path)
        before, checksum = status_types(pg), status_checksum(pg.engine, pg.settings)
        assert before["cashouts"][0] == "character(30)" and before["escrows"][1] == "C"
        retire_legacy_columns(pg.engine, pg.settings, actor="test")
        assert undo_cleanup(pg.engine, pg.settings, actor="test")["undone"]
        assert status_types(pg) == before
        assert status_checksum(pg.engine, pg.settings) == checksum
    finally:
        undo_cleanup(pg.engine, pg.settings)
        with pg.app_engine.begin() as conn:
            for table in ("cashouts", "escrows"):
                kind, collation = installed[table]
                conn.exec_driver_sql(
                    f'ALTER TABLE {table} ALTER COLUMN status TYPE {kind} COLLATE "{collation}"'
                )


@pytest.mark.postgres
def test_the_undo_refuses_a_legacy_status_longer_than_the_status_column(
    pg: Database, tmp_path: Path
) -> None:
    """A varchar(20) status column, retired; a legacy_status of 24 characters stored
    meanwhile (phase 4 writes it). The undo cast the refill to character varying(20),
    which PostgreSQL truncates without an error, and restored the status cut short: it
    is refused now, naming the row, before anything changes."""
    long = "AWAITING_MANUAL_REVIEW_2"
    installed = status_types(pg)
    with pg.app_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ALTER COLUMN status TYPE varchar(20)")
    cashout = (unified_transactions.c.legacy_system == "CASHOUT",)
    try:
        seed(pg)
        freeze_and_archive(pg, tmp_path)
        retire_legacy_columns(pg.engine, pg.settings, actor="test")
        with pg.engine.begin() as conn:
            legacy_id, was = conn.execute(
                sa.select(unified_transactions.c.legacy_id, unified_transactions.c.legacy_status)
                .where(*cashout)
                .order_by(unified_transactions.c.legacy_id)
                .limit(1)
            ).one()
            conn.execute(
                sa.update(unified_transactions)
                .where(*cashout, unified_transactions.c.legacy_id == legacy_id)
                .values(legacy_status=long)
            )
        with pytest.raises(GateError) as refused:
            undo_cleanup(pg.engine, pg.settings, actor="test")
        message = str(refused.value)
        assert "cashouts" in message and str(legacy_id) in message, message
        assert "20" in message, message
        assert legacy_columns_dropped(pg.engine, pg.settings)  # nothing changed
        with pg.engine.connect() as conn:
            kept = conn.execute(
                sa.select(unified_transactions.c.legacy_status).where(
                    *cashout, unified_transactions.c.legacy_id == legacy_id
                )
            ).scalar_one()
        assert kept == long
        with pg.engine.begin() as conn:  # shortened: the undo goes on
            conn.execute(
                sa.update(unified_transactions)
                .where(*cashout, unified_transactions.c.legacy_id == legacy_id)
                .values(legacy_status=was)
            )
        assert undo_cleanup(pg.engine, pg.settings, actor="test")["undone"]
        assert status_types(pg)["cashouts"][0] == "character varying(20)"
    finally:
        undo_cleanup(pg.engine, pg.settings)
        with pg.app_engine.begin() as conn:
            kind, collation = installed["cashouts"]
            conn.exec_driver_sql(
                f'ALTER TABLE cashouts ALTER COLUMN status TYPE {kind} COLLATE "{collation}"'
            )
