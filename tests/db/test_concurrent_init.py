"""Two `unistatus init` at once (two hosts of a rolling deploy) are serialized: the
second waits for the first's upgrade and then finds nothing to do, instead of failing
on the tables the first is creating ("relation ... already exists", a duplicate
pg_type row) or reporting an upgrade it did not make."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_migrations import new_database  # noqa: F401  (the fixture)

from conftest import Database
from unistatus.db import schema
from unistatus.db.engine import create_engine
from unistatus.db.migration_lock import MIGRATION_LOCK
from unistatus.db.mode_lock_keys import mode_lock_key, system_lock_key
from unistatus.errors import StorageError

INSTALL = schema.INSTALL_REVISION


def start_init(url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "400"}
    env.pop("UNISTATUS_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "unistatus", "--database-url", url, "init"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).parent,
    )


@pytest.mark.parametrize("start", ["empty", "0012"])
def test_two_inits_at_once_upgrade_once(
    new_database: Callable[[str], Database],  # noqa: F811
    start: str,
) -> None:
    db = new_database(f"two_inits_{start}")
    if start != "empty":
        assert schema.upgrade(db.engine, db.settings, start) == start
    db.engine.dispose()
    runs = [start_init(db.url) for _ in range(2)]
    said = [(run.wait(timeout=240), *run.communicate()) for run in runs]
    assert [code for code, _, _ in said] == [0, 0], said
    outs = sorted(" ".join(out.split()) for _, out, _ in said)
    upgraded = f"upgraded {'(empty)' if start == 'empty' else start} -> {INSTALL}"
    assert f"already at revision {INSTALL} (nothing to do)" in outs[0], outs
    assert upgraded in outs[1], outs
    engine = create_engine(db.url)
    try:
        assert schema.current_revision(engine) == INSTALL
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_init_behind_another_migration_gives_up_as_behind_a_table_lock(
    new_database: Callable[[str], Database],  # noqa: F811
) -> None:
    """The lock that serializes migrations is waited for as a table's: each attempt at
    most lock_timeout_ms, retried until the deadline, then refused, nothing changed."""
    db = new_database("init_behind_migration")
    if db.backend != "postgres":
        pytest.skip("PostgreSQL's advisory lock")
    assert schema.upgrade(db.engine, db.settings, "0012") == "0012"
    settings = db.settings.model_copy(update={"lock_timeout_ms": 200})
    key = system_lock_key(mode_lock_key(None), MIGRATION_LOCK)
    with db.engine.connect() as other:
        other.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))  # a migration running
        with pytest.raises(StorageError, match=r"holding another migration \(`init`\)"):
            schema.upgrade(db.engine, settings, deadline_seconds=1.0)
        assert schema.current_revision(db.engine) == "0012"
        other.rollback()
    assert schema.upgrade(db.engine, settings) == INSTALL
