"""Waiting, in a test, until a session of the test's own holds another one back."""

from __future__ import annotations

import time

import sqlalchemy as sa

_BLOCKED = sa.text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")


def blocks_someone(watcher: sa.Connection, pid: int) -> bool:
    """Whether the session ``pid`` holds another session back now (PostgreSQL)."""
    blocked = watcher.execute(_BLOCKED, {"pid": pid}).scalar_one()
    watcher.rollback()  # the activity view is read once per transaction
    return bool(blocked)


def wait_until_it_blocks(engine: sa.Engine, pid: int, seconds: float = 20.0) -> bool:
    """Wait (at most ``seconds``) until the session ``pid`` holds another one back;
    whether it did."""
    with engine.connect() as watcher:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if blocks_someone(watcher, pid):
                return True
            time.sleep(0.01)
    return False
