"""Waiting, in a test, until a session of the test's own holds another one back."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from unistatus.db import mode_lock_wait

# The longest an adapter write may take while a mode switch or a retirement waits for
# the mode lock the polite way (db/mode_lock_wait.py): queued behind one of its attempts
# at the longest (LONGEST_ATTEMPT_MS, the mode lock let go after it), and the write
# itself, with a margin for a machine loaded by the rest of the suite: 2.5 s. A writer
# that waits out a caller's transaction or a whole lock_timeout (5 s) instead, as
# before the polite wait, waits longer than this.
LOADED_MACHINE_MARGIN_SECONDS = 0.5
WRITE_BESIDE_A_WAITING_SWITCH_SECONDS = (
    mode_lock_wait.LONGEST_ATTEMPT_MS / 1000 + LOADED_MACHINE_MARGIN_SECONDS
)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off for the block, where a test times a write by its own
    clock (an adapter's write, client side): late in the suite a full collection of a
    worker's heap stops every thread of the process, for up to seconds, which the test
    would take for the write's wait."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def write_waited(
    conn: sa.Connection, update: str, params: dict[str, object] | None = None
) -> float:
    """Run ``update`` (an UPDATE without RETURNING) on ``conn``; how long the server took
    from receiving it to writing its row (PostgreSQL): the lock waits of a writer, not the
    pauses of the test's own process. A writer thread timed by the test's clock counted
    those too: a full garbage collection of a worker's heap late in the suite stopped it
    for 2.3 s beside a command that held no lock it needed."""
    waited = conn.execute(
        sa.text(
            f"{update} RETURNING extract(epoch FROM clock_timestamp() - statement_timestamp())"
        ),
        params or {},
    ).scalar_one()
    return float(waited)


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


def queue_behind_any_holder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a mode switch (a retirement, a rollback) of this test queue for the mode lock
    however long its holder's transaction has been open, so that ``wait_until_it_blocks``
    sees it wait. The test opened that transaction itself before the switch began: on a
    machine loaded by the rest of the suite the switch may reach the lock after
    ``LONG_SECONDS``, and then it looks again without queueing, by design (invisible to
    ``pg_blocking_pids``)."""
    monkeypatch.setattr(mode_lock_wait, "LONG_SECONDS", 3600.0)
