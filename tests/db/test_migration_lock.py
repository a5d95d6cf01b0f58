"""Who holds the migration lock, as one waiting for it names them (PostgreSQL): each
migration tags its hold with its command (unistatus.db.migration_lock). The commands
that wait for it: tests/migration/test_ddl_lock_waits.py, tests/db/test_concurrent_init.py."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus.db.ddl_wait import Changes, table_holders
from unistatus.db.migration_lock import (
    INIT_COMMAND,
    RETIRE_COMMAND,
    UNDO_COMMAND,
    migration_lock,
    migration_lock_key,
    take_migration_lock,
)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("command", "named"),
    [
        (INIT_COMMAND, "another migration (`init`)"),
        (RETIRE_COMMAND, "a retirement (`unistatus retire legacy-columns`)"),
        (f"{RETIRE_COMMAND} --compat-views", "a retirement (`unistatus retire legacy-columns`)"),
        (UNDO_COMMAND, "the undo of a retirement (`unistatus retire legacy-columns --undo`)"),
    ],
)
def test_the_holder_is_named_by_its_command(scratch_pg: Database, command: str, named: str) -> None:
    engine = scratch_pg.engine
    with engine.connect() as holder, engine.connect() as look:
        holder.exec_driver_sql("SET LOCAL lock_timeout = 1000")
        take_migration_lock(holder, command)
        key, name = migration_lock(look)
        assert (key, name) == (migration_lock_key(look), named)
        held = table_holders(look, Changes(advisory=[(key, name)]))
        assert [h["locks"] for h in held] == [[named]], held
        holder.rollback()
        assert not table_holders(look, Changes(advisory=[(key, name)]))


@pytest.mark.postgres
def test_a_holder_of_the_lock_alone_is_named_as_an_init(scratch_pg: Database) -> None:
    """An older release's `init` took the lock without a tag."""
    engine = scratch_pg.engine
    with engine.connect() as holder, engine.connect() as look:
        holder.execute(sa.select(sa.func.pg_advisory_xact_lock(migration_lock_key(holder))))
        assert migration_lock(look)[1] == "another migration (`init`)"
        holder.rollback()
