"""The statistics of multiprocessing's children reach the table when they end.

A ``multiprocessing`` child started by fork or by the fork server (``Process``, a
``Pool``'s workers) ends through ``os._exit()``: the interpreter's exit handlers never
run there, so the statistics recorded since the child's last interval flush
(everything, for a task shorter than ``stats_flush_seconds``) were lost. multiprocessing runs its own exit
finalizers first when the child's target returns; the recorder flushes there.

The flush interval is a minute in these tests: whatever reaches the table was flushed
when the child ended, not by its flusher thread.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.config import Settings

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")

WRITES = 10
JOIN_SECONDS = 30
FORK = multiprocessing.get_context("fork")

# The adapter of the Pool's tasks: a Pool pickles its task function by name.
_adapter: DualWriteAdapter | None = None


def _writes(adapter: DualWriteAdapter, n: int) -> int:
    for _ in range(n):
        assert adapter.create_transaction("WALLET_CASHOUT", 5, "3", "USD").overall_success
    return os.getpid()


def _task(n: int) -> int:
    assert _adapter is not None
    return _writes(_adapter, n)


@pytest.fixture
def adapter(db: Database) -> Iterator[DualWriteAdapter]:
    """An adapter built before the fork, one write of the parent's recorded, unflushed."""
    global _adapter
    settings = db.settings.model_copy(update={"stats_flush_seconds": 60.0})
    _adapter = DualWriteAdapter(db.engine, settings=settings)
    assert _adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD").overall_success
    try:
        yield _adapter
    finally:
        _adapter.close()
        _adapter = None


def _per_process(db: Database, adapter: DualWriteAdapter) -> dict[str, int]:
    """The operations in the table per process: the parent's under "parent", each
    child's under its pid (the process id's middle part, host:pid:random)."""
    assert adapter.stats is not None
    parent = adapter.stats.process_id
    adapter.close()  # the parent's own operation flushed
    q = f"SELECT process_id, sum(count) FROM {db.table('unistatus_operation_stats')} GROUP BY 1"
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text(q)).all()
    return {
        "parent" if process == parent else process.split(":")[-2]: int(n) for process, n in rows
    }


def test_a_multiprocessing_child_flushes_when_its_target_returns(
    db: Database, adapter: DualWriteAdapter
) -> None:
    child = FORK.Process(target=_writes, args=(adapter, WRITES))
    child.start()
    child.join(JOIN_SECONDS)
    assert child.exitcode == 0
    assert _per_process(db, adapter) == {"parent": 1, str(child.pid): WRITES}


def test_pool_workers_closed_then_joined_flush(db: Database, adapter: DualWriteAdapter) -> None:
    """``close(); join()`` lets the workers end normally (leaving ``with Pool(...)``
    terminates them instead: SIGTERM, and what they had not flushed is lost)."""
    pool = FORK.Pool(2)
    try:
        pids = pool.map(_task, [WRITES // 2] * 4, chunksize=1)
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    expected = {"parent": 1}
    for pid in pids:
        expected[str(pid)] = expected.get(str(pid), 0) + WRITES // 2
    assert _per_process(db, adapter) == expected


def _own_adapter_writes(url: str, settings: Settings) -> None:
    _writes(DualWriteAdapter(url, settings=settings), WRITES)


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="forkserver only"
)
def test_a_forkserver_child_flushes_the_adapter_it_built(db: Database) -> None:
    """Forked from the fork server, not from this process (Python 3.14's default on
    Linux): its adapter is its own, built after the fork, and it ends by ``os._exit()``."""
    settings = db.settings.model_copy(update={"stats_flush_seconds": 60.0})
    child = multiprocessing.get_context("forkserver").Process(
        target=_own_adapter_writes, args=(db.url, settings)
    )
    child.start()
    child.join(JOIN_SECONDS)
    assert child.exitcode == 0
    q = f"SELECT process_id, sum(count) FROM {db.table('unistatus_operation_stats')} GROUP BY 1"
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text(q)).all()
    assert [(process.split(":")[-2], int(n)) for process, n in rows] == [(str(child.pid), WRITES)]
