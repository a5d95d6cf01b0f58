"""Waiting, in a test, until the database's other sessions are quiet (PostgreSQL)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from unistatus.db.dialect import DialectOps


def until_no_other_at_work(ops: DialectOps, conn: sa.Connection, seconds: float = 20.0) -> None:
    """Wait until no session of another name is at work, or was in the last second, as
    ``conn`` sees it. A test that closed the fixture's connections (``dispose()``) to
    look at live traffic waits here first: a closed connection's backend stays in
    ``pg_stat_activity``, idle since a moment ago, until it has exited, on a loaded
    machine a while after its client let go."""
    deadline = time.monotonic() + seconds
    while True:
        others = ops.live_sessions(conn)
        conn.rollback()  # the activity view is read once per transaction
        if others == 0:
            return
        assert time.monotonic() < deadline, f"{others} other session(s) stayed at work"
        time.sleep(0.05)
