"""`backfill tune` checks what it stores (an unfinished job to tune, min_batch_rows not
above max_batch_rows) in the transaction that stores it: a tune made at the same time,
or the job finishing, cannot come between the check and the store.

Each test stops one tune right after its checks passed and, from there, lets another
session act on the database: until that session is done, or waits for a lock the tune
holds (PostgreSQL: ``pg_blocking_pids``; SQLite: its ``BEGIN IMMEDIATE``, which waits for
the write lock). Then the tune goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from support.backfill_data import interrupted_job
from unistatus.backfill import control, tune
from unistatus.backfill.control import stored_tuning
from unistatus.clock import utcnow
from unistatus.db.control import history
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.tables_backfill import backfill_jobs
from unistatus.errors import InputError
from unistatus.sim.seed import seed_legacy

_BLOCKED = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND cardinality(pg_blocking_pids(pid)) > 0"
)


class Other:
    """Another session's work, on a thread and an engine of its own."""

    def __init__(self, db: Any, work: Callable[[sa.Engine], Any]) -> None:
        self.db = db
        self.engine = create_engine(db.url, schema=db.settings.schema)
        self.began_immediate = threading.Event()  # SQLite: about to wait for the write lock
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

        @sa.event.listens_for(self.engine, "before_cursor_execute")
        def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.strip().upper() == "BEGIN IMMEDIATE":
                self.began_immediate.set()

        def run() -> None:
            try:
                self.result = work(self.engine)
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                self.error = exc
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)

    def start_and_wait_until_done_or_blocked(self, seconds: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + seconds
        while not self.done.is_set():
            if self._waits_for_a_lock():
                return
            assert time.monotonic() < deadline, "the other session neither ended nor waited"
            self.done.wait(0.01)

    def _waits_for_a_lock(self) -> bool:
        if self.db.backend == "sqlite":
            return self.began_immediate.is_set()
        with self.db.engine.connect() as conn:
            return bool(conn.execute(_BLOCKED).scalar_one())

    def join(self) -> Any:
        assert self.done.wait(60), "the other session never ended"
        self.thread.join()
        self.engine.dispose()
        return self.result


@contextmanager
def between_check_and_store(monkeypatch: pytest.MonkeyPatch, other: Other) -> Iterator[None]:
    """The first tune in the block runs ``other`` once its checks passed, then goes on."""
    real = control._check_bounds
    fired: list[bool] = []

    def checked(parsed: dict[str, Any], in_force: dict[str, Any]) -> None:
        real(parsed, in_force)
        if not fired:
            fired.append(True)
            other.start_and_wait_until_done_or_blocked()

    monkeypatch.setattr(control, "_check_bounds", checked)
    yield
    assert fired, "no tune reached its checks"


def test_two_tunes_at_once_never_store_min_above_max(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bound alone is fine (50,000 under the max 100,000; 10,000 over the min
    1,000), both together are not: the one checked second must see the first."""
    seed_legacy(db.engine, db.settings, 300, seed=5)
    interrupted_job(db)
    other = Other(db, lambda engine: tune(engine, actor="bob", reason="b", max_batch_rows=10_000))
    with between_check_and_store(monkeypatch, other):
        first = tune(db.engine, actor="alice", reason="a", min_batch_rows=50_000)
    other.join()
    assert first["tuned"] == {"min_batch_rows": 50_000}
    with db.engine.connect() as conn:
        stored = {name: s.value for name, s in stored_tuning(conn).items()}
    assert stored == {"min_batch_rows": 50_000}, f"stored {stored}; bob's tune: {other.result}"
    assert isinstance(other.error, InputError) and "above" in str(other.error), other.error
    assert history(db.engine, key="backfill.max_batch_rows") == []


def test_a_tune_is_never_stored_for_a_job_that_finished_before_it(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job finishes while the tune is between its check and its store: the tune
    must either come first (the job finishes after it) or be refused."""
    seed_legacy(db.engine, db.settings, 300, seed=5)
    interrupted_job(db)

    def finish(engine: sa.Engine) -> int:
        """The job's last batch done: closed, as mark_complete closes it. Returns how
        many tunes the control log held when it was."""
        with ops_for(engine).write_transaction() as conn:
            conn.execute(
                sa.update(backfill_jobs)
                .where(backfill_jobs.c.state == "running")
                .values(state="complete", finished_at=utcnow())
            )
        return len(history(engine, key="backfill.max_lock_waits"))

    other = Other(db, finish)
    try:
        with between_check_and_store(monkeypatch, other):
            tuned: dict[str, Any] | None = tune(
                db.engine, actor="alice", reason="a", max_lock_waits=0
            )
    except InputError as exc:
        assert "no backfill job" in str(exc)
        tuned = None
    tunes_when_finished = other.join()
    assert other.error is None, other.error
    if tuned is not None:
        assert tunes_when_finished == 1, "the tune was stored after its job had finished"
    else:
        assert history(db.engine, key="backfill.max_lock_waits") == []
