"""A retirement that a view over a status column would stop is refused by its gates,
naming the view, before anything changes (docs/retire.md, "When the drop may run").

PostgreSQL refuses to drop a column a view (or a materialized view, a rule) depends on;
SQLite's table copy fails on a view that names the column. Either way the gates find
them first and say so, with every other reason, as a refusal (exit 2), not a database
error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_retire import _assert_unchanged, freeze_and_archive, seed
from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT, Database
from unistatus.cli import app
from unistatus.db import schema
from unistatus.db.revisions import RETIRE_REVISION
from unistatus.errors import GateError, StorageError
from unistatus.migration.retire import retire_legacy_columns, status_checksum, undo_cleanup

VIEWS = {
    "postgres": (
        "CREATE VIEW pending_cashouts AS SELECT id, status FROM cashouts WHERE status = 'PENDING'",
        "CREATE MATERIALIZED VIEW escrow_counts AS SELECT status, count(*) AS n FROM escrows "
        "GROUP BY status",
    ),
    "sqlite": (
        "CREATE VIEW pending_cashouts AS SELECT id, status FROM cashouts WHERE status = 'PENDING'",
        "CREATE VIEW escrow_counts AS SELECT status, count(*) AS n FROM escrows GROUP BY status",
    ),
}
DROP = {
    "postgres": ("DROP VIEW pending_cashouts", "DROP MATERIALIZED VIEW escrow_counts"),
    "sqlite": ("DROP VIEW pending_cashouts", "DROP VIEW escrow_counts"),
}


@pytest.fixture
def viewed(db: Database, tmp_path: Path) -> Iterator[Database]:
    """Seeded, frozen, archived, with the application's views over two status columns
    (dropped again after the test)."""
    seed(db)
    with db.app_engine.begin() as conn:
        for sql in VIEWS[db.backend]:
            conn.exec_driver_sql(sql)
    try:
        freeze_and_archive(db, tmp_path)
        yield db
    finally:
        with db.app_engine.begin() as conn:
            for sql in DROP[db.backend]:
                conn.exec_driver_sql(sql)


@IN_EVERY_LAYOUT
def test_a_view_over_a_status_column_is_a_refusal_naming_it(viewed: Database) -> None:
    db = viewed
    before = status_checksum(db.engine, db.settings)
    with pytest.raises(GateError) as refused:
        retire_legacy_columns(db.engine, db.settings, actor="test")
    message = str(refused.value)
    assert "nothing changed" in message
    assert "pending_cashouts" in message and "cashouts.status" in message, message
    assert "escrow_counts" in message and "escrows.status" in message, message
    _assert_unchanged(db, before)


@IN_EVERY_LAYOUT
def test_the_cli_refuses_with_exit_2_and_every_reason(viewed: Database) -> None:
    db = viewed
    before = status_checksum(db.engine, db.settings)
    args = ["--database-url", db.url, "retire", "legacy-columns", "--reason", "retire"]
    if db.backend == "postgres":
        args.append("--compat-views")
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "refusing to drop" in refused.output and "database error" not in refused.output
    assert "pending_cashouts" in refused.output and "escrow_counts" in refused.output
    _assert_unchanged(db, before)


def test_a_view_made_after_the_gates_stops_the_drop_with_nothing_changed(
    pg: Database, tmp_path: Path
) -> None:
    """The gates ran; a view over a status column appeared before the drop (here: the
    revision run without the gates). PostgreSQL refuses the drop: that was a raw
    DependentObjectsStillExist (an InternalError); it is the migration's StorageError
    saying nothing changed."""
    seed(pg)
    freeze_and_archive(pg, tmp_path)
    before = status_checksum(pg.engine, pg.settings)
    with pg.app_engine.begin() as conn:
        conn.exec_driver_sql(VIEWS["postgres"][0])
    try:
        with pytest.raises(StorageError, match=r"nothing changed.*pending_cashouts"):
            schema.upgrade(pg.engine, pg.settings, RETIRE_REVISION)
    finally:
        with pg.app_engine.begin() as conn:
            conn.exec_driver_sql(DROP["postgres"][0])
    assert schema.current_revision(pg.engine) != RETIRE_REVISION
    assert status_checksum(pg.engine, pg.settings) == before


AUDIT = (
    "CREATE TABLE status_audit (id serial, old_status text, new_status text)",
    "CREATE FUNCTION audit_status() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF NEW.status IS DISTINCT FROM OLD.status THEN INSERT INTO status_audit "
    "(old_status, new_status) VALUES (OLD.status, NEW.status); END IF; RETURN NEW; END $$",
    "CREATE TRIGGER audit AFTER UPDATE ON cashouts FOR EACH ROW EXECUTE FUNCTION audit_status()",
    "CREATE FUNCTION stamp_escrow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    'IF new."STATUS" IS NULL OR new . "status" = \'\' THEN RETURN NULL; END IF; RETURN NEW; END $$',
    "CREATE TRIGGER stamp BEFORE UPDATE ON escrows FOR EACH ROW EXECUTE FUNCTION stamp_escrow()",
    "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "NEW.updated_at := now(); RETURN NEW; END $$",
    "CREATE TRIGGER touch BEFORE UPDATE ON exchanges FOR EACH ROW EXECUTE FUNCTION touch()",
)
NO_AUDIT = (
    "DROP TRIGGER IF EXISTS audit ON cashouts",
    "DROP TRIGGER IF EXISTS stamp ON escrows",
    "DROP TRIGGER IF EXISTS touch ON exchanges",
    "DROP FUNCTION IF EXISTS audit_status()",
    "DROP FUNCTION IF EXISTS stamp_escrow()",
    "DROP FUNCTION IF EXISTS touch()",
    "DROP TABLE IF EXISTS status_audit",
)


@pytest.mark.postgres
def test_a_plpgsql_trigger_reading_the_status_column_is_a_refusal_naming_it(
    pg: Database, tmp_path: Path
) -> None:
    """pg_depend does not see what a PL/pgSQL body reads: after the drop every UPDATE of
    cashouts failed with 'record "new" has no field "status"' (an exploratory tester).
    A trigger whose function does not read it (``touch``) is no reason."""
    seed(pg)
    with pg.app_engine.begin() as conn:
        for sql in AUDIT:
            conn.exec_driver_sql(sql)
    try:
        freeze_and_archive(pg, tmp_path)
        before = status_checksum(pg.engine, pg.settings)
        with pytest.raises(GateError) as refused:
            retire_legacy_columns(pg.engine, pg.settings, actor="test")
        message = str(refused.value)
        assert "trigger audit" in message and "audit_status" in message, message
        assert "trigger stamp" in message and "stamp_escrow" in message, message
        assert "touch" not in message, message
        _assert_unchanged(pg, before)
    finally:
        undo_cleanup(pg.engine, pg.settings)
        with pg.app_engine.begin() as conn:
            for sql in NO_AUDIT:
                conn.exec_driver_sql(sql)
