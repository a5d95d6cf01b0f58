"""An adapter built before the process forks (gunicorn --preload, multiprocessing's fork)
keeps working in the child, whatever it was doing at the fork: statistics on or off, a
write of another thread in flight.

With statistics off nothing replaced the engine's pool in the child, so parent and child
wrote on one PostgreSQL connection: creates reported as failed (no ``outcome_unknown``)
were committed, and a caller retrying them duplicated them. A write slot (SQLite's one,
or one of PostgreSQL's) held at the fork by a thread that does not exist in the child
was held for ever: every write of the child waited out its queue timeout, and failed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")

CREATES = 40
CHILD_SECONDS = 30


def _creates(adapter: DualWriteAdapter, user: int) -> list[list[Any]]:
    out = []
    for _ in range(CREATES):
        r = adapter.create_transaction("WALLET_CASHOUT", user, "5", "USD")
        out.append([r.overall_success, r.outcome_unknown, r.error])
    return out


def _in_child(adapter: DualWriteAdapter, user: int, results: Path) -> list[list[Any]]:
    """Fork; the child makes its creates and writes their results to ``results``; the
    parent makes its own meanwhile, then returns the child's (the child killed if it
    hangs)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            results.write_text(json.dumps(_creates(adapter, user + 1)))
            code = 0
        finally:
            os._exit(code)
    parent = _creates(adapter, user)
    deadline = time.monotonic() + CHILD_SECONDS
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"the child hung for {CHILD_SECONDS} s")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    child: list[list[Any]] = json.loads(results.read_text())
    assert all(ok for ok, _, _ in parent), [r for r in parent if not r[0]][:3]
    return child


def _rows_of(db: Database, user: int) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM cashouts WHERE user_id = :u"), {"u": user}
            ).scalar_one()
        )


@pytest.mark.parametrize("record_stats", [False, True])
def test_a_forked_child_writes_on_connections_of_its_own(
    pg: Database, record_stats: bool, tmp_path: Path
) -> None:
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(pg.url, settings=pg.settings, record_stats=record_stats)
    try:
        assert adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD").overall_success
        child = _in_child(adapter, 1000 + record_stats * 10, tmp_path / "child.json")
    finally:
        adapter.close()
    assert len(child) == CREATES and all(ok for ok, _, _ in child), child[:3]
    for user in (1000 + record_stats * 10, 1001 + record_stats * 10):
        assert _rows_of(pg, user) == CREATES


def test_a_write_slot_held_at_the_fork_is_free_in_the_child(pg: Database, tmp_path: Path) -> None:
    """One write slot (write_concurrency=1), taken all through the fork by a thread of the
    parent that writes without a pause. (Not on SQLite: a SQLite connection in use at a
    fork leaves its locks to the child's SQLite for ever, as SQLite documents.)"""
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    settings = pg.settings.model_copy(
        update={"write_concurrency": 1, "write_queue_timeout_seconds": 5.0}
    )
    adapter = DualWriteAdapter(pg.url, settings=settings, record_stats=False)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            adapter.create_transaction("WALLET_CASHOUT", 7, "5", "USD")

    writer = threading.Thread(target=busy, daemon=True)
    writer.start()
    try:
        time.sleep(0.2)
        child = _in_child(adapter, 2000, tmp_path / "child.json")
    finally:
        stop.set()
        writer.join(timeout=30)
        adapter.close()
    assert len(child) == CREATES and all(ok for ok, _, _ in child), child[:3]
    assert _rows_of(pg, 2001) == CREATES
