"""Which of the application's triggers may hold a status the adapter writes
(``db/app_triggers.py``, PostgreSQL): a table found so has its dual-mode changes written
with their hold in one transaction (test_before_update_triggers.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import Database
from support.app_triggers import installed
from unistatus.db.app_triggers import may_hold_updates

HOLD = (
    "CREATE FUNCTION t_hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF NEW.amount > 1000 THEN NEW.status := 'ADMIN_PENDING'; END IF; RETURN NEW; END $$"
)
# Names no column: told which by its arguments.
BY_NAME = (
    "CREATE FUNCTION t_by_name() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], TG_ARGV[1])); "
    "RETURN NEW; END $$"
)
TOUCH = (
    "CREATE FUNCTION t_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "NEW.updated_at := now(); RETURN NEW; END $$"
)
TABLE = "CREATE TABLE t_app (id bigint, status text, amount numeric, updated_at timestamptz)"
PARTITIONED = (
    "CREATE TABLE t_app (id bigint, status text, amount numeric, updated_at timestamptz) "
    "PARTITION BY RANGE (id)",
    "CREATE TABLE t_app_1 PARTITION OF t_app FOR VALUES FROM (0) TO (1000)",
)
CHILD = "CREATE TABLE t_app_child () INHERITS (t_app)"
FUNCTIONS = "DROP FUNCTION IF EXISTS t_hold(), t_by_name(), t_touch()"

CASES = {
    "a BEFORE UPDATE row trigger naming the status": (
        [
            TABLE,
            HOLD,
            "CREATE TRIGGER h BEFORE UPDATE ON t_app FOR EACH ROW EXECUTE FUNCTION t_hold()",
        ],
        True,
    ),
    "one that only touches updated_at": (
        [
            TABLE,
            TOUCH,
            "CREATE TRIGGER h BEFORE UPDATE ON t_app FOR EACH ROW EXECUTE FUNCTION t_touch()",
        ],
        False,
    ),
    "one that fires AFTER": (
        [
            TABLE,
            HOLD,
            "CREATE TRIGGER h AFTER UPDATE ON t_app FOR EACH ROW EXECUTE FUNCTION t_hold()",
        ],
        False,
    ),
    "one disabled": (
        [
            TABLE,
            HOLD,
            "CREATE TRIGGER h BEFORE UPDATE ON t_app FOR EACH ROW EXECUTE FUNCTION t_hold()",
            "ALTER TABLE t_app DISABLE TRIGGER h",
        ],
        False,
    ),
    "one told the status by its arguments": (
        [
            TABLE,
            BY_NAME,
            "CREATE TRIGGER h BEFORE UPDATE ON t_app FOR EACH ROW "
            "EXECUTE FUNCTION t_by_name('status', 'ADMIN_PENDING')",
        ],
        True,
    ),
    "one only on a partition": (
        [
            *PARTITIONED,
            HOLD,
            "CREATE TRIGGER h BEFORE UPDATE ON t_app_1 FOR EACH ROW EXECUTE FUNCTION t_hold()",
        ],
        True,
    ),
    "one only on an inheriting table": (
        [
            TABLE,
            CHILD,
            HOLD,
            "CREATE TRIGGER h BEFORE UPDATE ON t_app_child FOR EACH ROW EXECUTE FUNCTION t_hold()",
        ],
        True,
    ),
    "one OF a column the adapter never sets": (
        [
            TABLE,
            HOLD,
            "CREATE TRIGGER h BEFORE UPDATE OF amount ON t_app FOR EACH ROW "
            "EXECUTE FUNCTION t_hold()",
        ],
        False,
    ),
    "one OF updated_at, which the adapter sets": (
        [
            TABLE,
            HOLD,
            "CREATE TRIGGER h BEFORE UPDATE OF updated_at ON t_app FOR EACH ROW "
            "EXECUTE FUNCTION t_hold()",
        ],
        True,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_trigger_that_may_hold_the_status_is_found(pg: Database, case: str) -> None:
    ddl, expected = CASES[case]
    undo = ["DROP TABLE IF EXISTS t_app_child, t_app CASCADE", FUNCTIONS]
    with installed(pg, ddl, undo):
        table = sa.Table("t_app", sa.MetaData())
        with pg.engine.connect() as conn:
            assert may_hold_updates(conn, table, "status", "updated_at") is expected


def test_sqlite_has_no_trigger_that_changes_the_row(sqlite_db: Database) -> None:
    with sqlite_db.engine.connect() as conn:
        assert may_hold_updates(conn, sa.Table("cashouts", sa.MetaData()), "status") is False
