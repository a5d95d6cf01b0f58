"""An application's own trigger on a legacy table, for a test's block (PostgreSQL's
database is shared by the whole run: each is dropped afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from conftest import Database


@contextmanager
def holding_large_approvals(db: Database) -> Iterator[None]:
    """The application's rule: a cashout over 1000 approved is held ADMIN_PENDING (on
    PostgreSQL a BEFORE UPDATE trigger changing NEW; SQLite's triggers cannot, so there
    an AFTER UPDATE trigger writes the row again). Dropped afterwards."""
    if db.backend == "postgres":
        add = [
            "CREATE FUNCTION t_hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.status = 'APPROVED' AND NEW.amount > 1000 THEN "
            "NEW.status := 'ADMIN_PENDING'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER t_hold BEFORE UPDATE ON cashouts FOR EACH ROW "
            "EXECUTE FUNCTION t_hold()",
        ]
        drop = ["DROP TRIGGER t_hold ON cashouts", "DROP FUNCTION t_hold()"]
    else:
        add = [
            "CREATE TRIGGER t_hold AFTER UPDATE ON cashouts WHEN NEW.status = 'APPROVED' "
            "AND NEW.amount > 1000 BEGIN UPDATE cashouts SET status = 'ADMIN_PENDING' "
            "WHERE id = NEW.id; END"
        ]
        drop = ["DROP TRIGGER t_hold"]
    with installed(db, add, drop):
        yield


@contextmanager
def installed(db: Database, ddl: list[str], undo: list[str]) -> Iterator[None]:
    """``ddl`` run (one transaction), ``undo`` run at the block's end, whatever happens."""
    with db.engine.begin() as conn:
        for sql in ddl:
            conn.exec_driver_sql(sql)
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            for sql in undo:
                conn.exec_driver_sql(sql)
