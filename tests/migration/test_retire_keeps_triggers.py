"""The application's triggers on a legacy table through a retirement (docs/retire.md,
"The application's triggers").

PostgreSQL drops a column in place: a trigger that does not name it stays, one that
depends on it stops the drop (the dependents gate). SQLite drops a column by copying
its table, which drops the table's triggers with the old table: a trigger that does not
name the status column is created again after the copy, in the same transaction, and
is there (and fires) while the column is retired and after the undo; one that names it
could not work without the column (SQLite would create it again and fail each write
when it fires), so the retirement is refused by its gates, naming it, before anything
changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_retire import _assert_unchanged, freeze_and_archive, seed
from test_retire_app_triggers import trigger_states

from conftest import IN_EVERY_LAYOUT, Database
from unistatus.errors import GateError
from unistatus.migration.retire import retire_legacy_columns, status_checksum, undo_cleanup

# An audit of amount changes: it names no status column.
AMOUNTS = {
    "postgres": (
        "CREATE TABLE app_amount_log (legacy_id bigint, amount numeric)",
        "CREATE FUNCTION app_amounts() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO app_amount_log VALUES (NEW.id, NEW.amount); RETURN NULL; END $$",
        "CREATE TRIGGER app_amounts AFTER UPDATE OF amount ON cashouts FOR EACH ROW "
        "EXECUTE FUNCTION app_amounts()",
    ),
    "sqlite": (
        "CREATE TABLE app_amount_log (legacy_id INTEGER, amount NUMERIC)",
        "CREATE TRIGGER app_amounts AFTER UPDATE OF amount ON CASHOUTS "
        "BEGIN INSERT INTO app_amount_log VALUES (NEW.id, NEW.amount); END",
    ),
}
# An audit of status changes: it names the status column.
STATUSES = {
    "postgres": (
        "CREATE TABLE app_status_log (legacy_id bigint, status text)",
        "CREATE FUNCTION app_statuses() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO app_status_log VALUES (NEW.id, NEW.status); RETURN NULL; END $$",
        "CREATE TRIGGER app_statuses AFTER UPDATE OF status ON escrows FOR EACH ROW "
        "EXECUTE FUNCTION app_statuses()",
    ),
    "sqlite": (
        "CREATE TABLE app_status_log (legacy_id INTEGER, status TEXT)",
        "CREATE TRIGGER app_statuses AFTER UPDATE ON Escrows WHEN NEW.status IS NOT "
        "OLD.status BEGIN INSERT INTO app_status_log VALUES (NEW.id, NEW.status); END",
    ),
}
DROP = {
    "postgres": (
        "DROP TRIGGER IF EXISTS app_amounts ON cashouts",
        "DROP FUNCTION IF EXISTS app_amounts()",
        "DROP TABLE IF EXISTS app_amount_log",
        "DROP TRIGGER IF EXISTS app_statuses ON escrows",
        "DROP FUNCTION IF EXISTS app_statuses()",
        "DROP TABLE IF EXISTS app_status_log",
    ),
    "sqlite": (
        "DROP TRIGGER IF EXISTS app_amounts",
        "DROP TABLE IF EXISTS app_amount_log",
        "DROP TRIGGER IF EXISTS app_statuses",
        "DROP TABLE IF EXISTS app_status_log",
    ),
}


def run(db: Database, statements: tuple[str, ...]) -> None:
    with db.app_engine.begin() as conn:
        for sql in statements:
            conn.exec_driver_sql(sql)


@pytest.fixture
def frozen(db: Database, tmp_path: Path) -> Iterator[Database]:
    """Seeded, frozen, archived; the columns restored and the triggers gone after."""
    seed(db)
    try:
        freeze_and_archive(db, tmp_path)
        yield db
    finally:
        undo_cleanup(db.engine, db.settings)
        run(db, DROP[db.backend])


def amount_audits(db: Database) -> int:
    with db.app_engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM app_amount_log").scalar_one())


def change_an_amount(db: Database) -> None:
    run(db, ("UPDATE cashouts SET amount = amount + 1 WHERE id = (SELECT min(id) FROM cashouts)",))


@IN_EVERY_LAYOUT
def test_a_trigger_that_names_no_status_column_survives_the_retirement_and_its_undo(
    frozen: Database,
) -> None:
    db = frozen
    run(db, AMOUNTS[db.backend])
    triggers = trigger_states(db)
    assert "app_amounts" in triggers
    assert retire_legacy_columns(db.engine, db.settings, actor="test")["dropped"]
    assert trigger_states(db) == triggers
    change_an_amount(db)
    assert amount_audits(db) == 1  # it fires while the column is retired
    assert undo_cleanup(db.engine, db.settings, actor="test")["undone"]
    assert trigger_states(db) == triggers
    change_an_amount(db)
    assert amount_audits(db) == 2


@IN_EVERY_LAYOUT
def test_a_trigger_that_names_a_status_column_is_a_refusal_naming_it(frozen: Database) -> None:
    db = frozen
    run(db, AMOUNTS[db.backend] + STATUSES[db.backend])
    before = status_checksum(db.engine, db.settings)
    with pytest.raises(GateError) as refused:
        retire_legacy_columns(db.engine, db.settings, actor="test")
    message = str(refused.value)
    assert "nothing changed" in message
    assert "app_statuses" in message and "escrows.status" in message, message
    assert "app_amounts" not in message, message
    _assert_unchanged(db, before)
