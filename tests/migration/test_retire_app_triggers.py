"""The undo's refill restores the legacy statuses without firing the application's own
triggers (docs/retire.md, "The undo"): a trigger that audits, queues a payout or stamps
``updated_at`` on a status change must not act on every legacy row because unistatus put
the column back. The triggers are there and enabled (those disabled, still disabled)
once the undo has committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_retire import freeze_and_archive, seed

from conftest import IN_EVERY_LAYOUT, Database
from unistatus.migration.retire import retire_legacy_columns, status_checksum, undo_cleanup

# The application's audit of status changes: an AFTER UPDATE row trigger on cashouts
# (and, on PostgreSQL, one the application keeps disabled, which must stay so).
PG_SETUP = (
    "CREATE TABLE app_audit_log (legacy_id bigint, old_status text, new_status text)",
    "CREATE FUNCTION app_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF NEW.status IS DISTINCT FROM OLD.status THEN INSERT INTO app_audit_log "
    "VALUES (NEW.id, OLD.status, NEW.status); END IF; RETURN NULL; END $$",
)
# Created on the retired table (the retirement refuses a trigger whose function reads the
# status column: every write it fires on would fail without it), as on SQLite.
PG_TRIGGERS = (
    "CREATE TRIGGER app_audit AFTER UPDATE ON cashouts FOR EACH ROW EXECUTE FUNCTION app_audit()",
    "CREATE TRIGGER app_audit_off AFTER UPDATE ON cashouts FOR EACH ROW "
    "EXECUTE FUNCTION app_audit()",
    "ALTER TABLE cashouts DISABLE TRIGGER app_audit_off",
)
PG_TEARDOWN = (
    "DROP TRIGGER IF EXISTS app_audit ON cashouts",
    "DROP TRIGGER IF EXISTS app_audit_off ON cashouts",
    "DROP FUNCTION IF EXISTS app_audit()",
    "DROP TABLE IF EXISTS app_audit_log",
)
SQLITE_SETUP = (
    "CREATE TABLE app_audit_log (legacy_id INTEGER, old_status TEXT, new_status TEXT)",
    # ON CASHOUTS: SQLite keeps the table's name as the trigger spelled it.
    "CREATE TRIGGER app_audit AFTER UPDATE ON CASHOUTS WHEN NEW.status IS NOT OLD.status "
    "BEGIN INSERT INTO app_audit_log VALUES (NEW.id, OLD.status, NEW.status); END",
)


@pytest.fixture
def audited(db: Database, tmp_path: Path) -> Iterator[Database]:
    """Seeded, frozen, archived, cashouts audited by the application's trigger (SQLite:
    the table made for it, the trigger by :func:`audit`); the columns restored and the
    trigger gone again after the test."""
    seed(db)
    postgres = db.backend == "postgres"
    with db.app_engine.begin() as conn:
        for sql in PG_SETUP if postgres else SQLITE_SETUP[:1]:
            conn.exec_driver_sql(sql)
    try:
        freeze_and_archive(db, tmp_path)
        yield db
    finally:
        undo_cleanup(db.engine, db.settings)
        if postgres:
            with db.app_engine.begin() as conn:
                for sql in PG_TEARDOWN:
                    conn.exec_driver_sql(sql)


def audit(db: Database) -> None:
    """The application's trigger, created on the retired table. SQLite: a retirement there
    copies the table, which does not keep a trigger on it: the application creates it
    again; SQLite resolves NEW.status when the trigger fires. PostgreSQL: the retirement
    refuses a trigger whose function reads the column; PL/pgSQL resolves it at run time."""
    with db.app_engine.begin() as conn:
        for sql in PG_TRIGGERS if db.backend == "postgres" else SQLITE_SETUP[1:]:
            conn.exec_driver_sql(sql)


def audit_rows(db: Database) -> int:
    with db.app_engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM app_audit_log").scalar_one())


def trigger_states(db: Database) -> dict[str, str]:
    """The application's triggers on cashouts: name -> enabled state (SQLite: its SQL)."""
    with db.app_engine.connect() as conn:
        if db.backend == "postgres":
            rows = conn.exec_driver_sql(
                "SELECT tgname, tgenabled FROM pg_trigger "
                "WHERE tgrelid = 'cashouts'::regclass AND NOT tgisinternal"
            ).all()
        else:
            rows = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = 'cashouts' COLLATE NOCASE"
            ).all()
    return {str(name): str(state) for name, state in rows}


@IN_EVERY_LAYOUT
def test_the_undo_refills_without_firing_the_applications_triggers(audited: Database) -> None:
    db = audited
    before = status_checksum(db.engine, db.settings)
    assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    audit(db)
    triggers = trigger_states(db)
    assert "app_audit" in triggers
    undone = undo_cleanup(db.engine, db.settings, actor="test")
    assert undone["undone"] and undone["checksum_after"] == before
    # The refill wrote every cashout's status, and the application heard of none of it.
    assert audit_rows(db) == 0
    # Its triggers are as they were (the disabled one still disabled), and fire again.
    assert trigger_states(db) == triggers
    with db.app_engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE cashouts SET status = 'FAILED' WHERE id = (SELECT min(id) FROM cashouts)"
            )
        )
    assert audit_rows(db) == 1
