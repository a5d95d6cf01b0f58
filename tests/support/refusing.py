"""The database refuses a row for real: a constraint (PostgreSQL) or triggers (SQLite),
or an application's own trigger refusing some users' INSERTs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import Database
from support.app_triggers import installed
from unistatus.db.catalog import metadata
from unistatus.errors import WriteRefusedError


@contextmanager
def refuse(db: Database, table: str, status: str) -> Iterator[str]:
    """Make the database refuse ``status`` in ``table``, inserted or updated to (a real
    constraint, dropped at the end); yields its name, which the database's error carries."""
    name = f"t_no_{status.lower()}"
    if db.backend == "postgres":
        ddl = [f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK (status <> '{status}') NOT VALID"]
        undo = [f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"]
    else:
        body = f"WHEN NEW.status = '{status}' BEGIN SELECT RAISE(ABORT, '{name}'); END"
        ddl = [
            f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} {body}",
            f"CREATE TRIGGER {name}_insert BEFORE INSERT ON {table} {body}",
        ]
        undo = [f"DROP TRIGGER IF EXISTS {name}", f"DROP TRIGGER IF EXISTS {name}_insert"]
    with installed(db, ddl, undo):
        yield name


@contextmanager
def refusing_inserts(
    db: Database, table: str, *users: int, errcode: str | None = None
) -> Iterator[str]:
    """``table`` refuses an INSERT for any of ``users`` (a trigger, as the application's
    own would; dropped at the end); yields the trigger's name, which the database's error
    carries. ``errcode`` (PostgreSQL): the condition it raises (default: P0001,
    raise_exception), e.g. ``insufficient_privilege`` as a row-level security policy."""
    name = f"t_refuse_{table}"
    marked = ", ".join(str(u) for u in users)
    if db.backend == "postgres":
        using = f" USING ERRCODE = '{errcode}'" if errcode else ""
        create = [
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.user_id IN ({marked}) THEN RAISE EXCEPTION '{name}'{using}; END IF; "
            "RETURN NEW; END $$",
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
        ]
        drop = [f"DROP TRIGGER IF EXISTS {name} ON {table}", f"DROP FUNCTION IF EXISTS {name}()"]
    else:
        create = [
            # A pooled connection may still hold the schema from before another one
            # dropped this trigger (an earlier block): a read makes it load it afresh,
            # else its CREATE is refused as "already exists".
            "SELECT count(*) FROM sqlite_master",
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
            f"WHEN NEW.user_id IN ({marked}) BEGIN SELECT RAISE(ABORT, '{name}'); END",
        ]
        drop = [f"DROP TRIGGER IF EXISTS {name}"]
    with installed(db, create, drop):
        yield name


def by_a_rule(db: Database, table: str) -> bool:
    """Whether :func:`refuse` on ``table`` is a rule of the application's to unistatus
    (``db.retry.refused_by_application``): a constraint of a table it does not own, or
    a trigger raising (SQLite's), against a constraint of its own table (a failure)."""
    return db.backend == "sqlite" or table not in metadata.tables


def refused(write: Callable[[], Any], *, rule: bool) -> str:
    """Run ``write``, which the database refuses: its error. A rule of the application's
    raises WriteRefusedError (nothing written, counted refused); any other refusal is a
    failure, returned as a failed result."""
    if rule:
        with pytest.raises(WriteRefusedError) as raised:
            write()
        return str(raised.value)
    result = write()
    assert not result.overall_success and not result.changed, result
    return str(result.error)
