"""A command behind another connection holding a SQLite database's write lock (another
command, the application, a ``sqlite3`` shell in a transaction): it waits the busy
timeout, then says what it waited for and what to do, as a command behind a lock on
PostgreSQL does (tests/cli/test_lock_wait_named.py). It said "cannot switch mode:
database is locked" after 30 silent seconds (found by hand)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app
from unistatus.db import engine as engine_module


@pytest.fixture
def write_lock_held(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The database's write lock held by a ``sqlite3`` connection of its own; the
    busy timeout cut to 0.2 s (30 s shipped)."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = sqlite_db.url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield sqlite_db.url
    finally:
        holder.rollback()
        holder.close()


def test_a_write_behind_the_write_lock_says_what_it_waited_for(write_lock_held: str) -> None:
    args = ["--database-url", write_lock_held, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY"]
    shown = CliRunner().invoke(app, [*args, "--reason", "probe"])
    assert shown.exit_code == 2, shown.output
    said = " ".join(shown.output.split())
    assert "cannot switch mode: gave up waiting (busy_timeout, 0.2 s)" in said, said
    assert "for a lock held by another connection (the SQLite database's write lock" in said, said
    assert "then run it again" in said, said
    assert "database is locked" not in said, said


def test_the_same_under_json(write_lock_held: str) -> None:
    args = ["--database-url", write_lock_held, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY"]
    shown = CliRunner().invoke(app, [*args, "--reason", "probe", "--json"])
    assert shown.exit_code == 2, shown.output
    said = json.loads(shown.stdout.strip().splitlines()[-1])
    assert said["exit_code"] == 2
    assert "gave up waiting (busy_timeout, 0.2 s) for a lock held by another" in said["detail"], (
        said
    )


def test_a_read_goes_on_beside_the_write_lock(write_lock_held: str) -> None:
    shown = CliRunner().invoke(app, ["--database-url", write_lock_held, "mode", "get"])
    assert shown.exit_code == 0, shown.output
