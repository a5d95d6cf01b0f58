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
from test_migrations import new_database  # noqa: F401  (the fixture)

from conftest import Database
from unistatus.db import schema
from unistatus.db.engine import create_engine

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
