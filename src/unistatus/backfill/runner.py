"""``run_backfill``: plan (or join) the jobs, run the workers, report.

With ``workers > 1`` on PostgreSQL, N threads run :class:`Worker` against the same
chunk table, one connection each (more hosts can join with their own ``unistatus
backfill``). SQLite runs one worker.

Batch sizes: ``batch_size`` is where batches start, and the size of every batch when
``target_batch_ms`` is 0 (fixed). Otherwise each worker sizes its batches to take about
``target_batch_ms`` (:mod:`unistatus.backfill.sizing`) within ``[min(min_batch_rows,
batch_size), max_batch_rows]``; a new job's chunks are planned at that minimum, and a
batch claims as many chunks as its size asks for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.backfill.connections import limit_named
from unistatus.backfill.control import Tuning, effective_tuning, stored_tuning, unfinished_since
from unistatus.backfill.pacing import Clock
from unistatus.backfill.plan import Job, mark_complete, plan_or_join
from unistatus.backfill.progress import progress as read_progress
from unistatus.backfill.statements import dry_run_counts
from unistatus.backfill.worker import BatchResult, Tally, Worker, worker_name
from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine, session_name
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.revisions import require_current_schema
from unistatus.db.server_clock import database_now
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, StorageError, UnistatusError

log = logging.getLogger("unistatus.backfill")

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``(system, done_rows, total_rows)`` while the backfill runs."""

POLL_SECONDS = 0.5


@dataclass
class SystemReport:
    system: str
    total: int = 0
    done: int = 0
    inserted: int = 0
    already_present: int = 0
    quarantined: int = 0
    complete: bool = False
    state: str = "not_started"
    high_water_mark: int | None = None
    resumed: bool = False
    this_run: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "percent": 100.0 if not self.total else round(100.0 * self.done / self.total, 2),
            "inserted": self.inserted,
            "already_present": self.already_present,
            "quarantined": self.quarantined,
            "complete": self.complete,
            "state": self.state,
            "high_water_mark": self.high_water_mark,
            "resumed": self.resumed,
            "this_run": dict(self.this_run),
        }


@dataclass
class BackfillReport:
    """What a backfill did. Counts are for the whole job (all runs that resumed it)."""

    systems: dict[str, SystemReport]
    dry_run: bool = False
    workers: int = 1
    batch_size: int = 1000
    duration_seconds: float = 0.0
    rows_this_run: int = 0
    tuning: dict[str, Any] = field(default_factory=dict)
    # Where each value of ``tuning`` came from (the run's option, a tune, the settings).
    tuning_sources: dict[str, str] = field(default_factory=dict)
    batches_this_run: int = 0

    def _sum(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.systems.values())

    @property
    def inserted(self) -> int:
        return self._sum("inserted")

    @property
    def already_present(self) -> int:
        return self._sum("already_present")

    @property
    def quarantined(self) -> int:
        return self._sum("quarantined")

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.systems.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows_this_run / self.duration_seconds if self.duration_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "already_present": self.already_present,
            "quarantined": self.quarantined,
            "complete": self.complete,
            "dry_run": self.dry_run,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "duration_seconds": round(self.duration_seconds, 3),
            "rows_this_run": self.rows_this_run,
            "batches_this_run": self.batches_this_run,
            "rows_per_second": round(self.rows_per_second, 1),
            "tuning": dict(self.tuning),
            "tuning_sources": dict(self.tuning_sources),
            "systems": {k: v.as_dict() for k, v in self.systems.items()},
        }


def run_backfill(
    engine: sa.Engine,
    settings: Settings,
    *,
    systems: list[LegacySystemType] | None = None,
    batch_size: int = 1000,
    workers: int | None = None,
    max_rows_per_second: float | None = None,
    target_batch_ms: float | None = None,
    min_batch_rows: int | None = None,
    max_batch_rows: int | None = None,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    clock: Clock | None = None,
) -> BackfillReport:
    """Backfill ``unified_transactions`` from the legacy tables (see the package docs).

    ``workers``, ``max_rows_per_second``, ``target_batch_ms``, ``min_batch_rows``,
    ``max_batch_rows``: None takes the settings' ``[backfill]`` value; ``backfill tune``
    changes all but ``workers`` while the run goes (:mod:`unistatus.backfill.control`).
    ``clock``: the workers' time (tests).
    """
    if workers is None:
        workers = settings.backfill.workers
    _validate(batch_size, workers, max_rows_per_second)
    # A connection refused for a limit says what these workers need (a rerun needs it).
    with limit_named(workers):
        given = {
            "max_rows_per_second": max_rows_per_second,
            "target_batch_ms": target_batch_ms,
            "min_batch_rows": min_batch_rows,
            "max_batch_rows": max_batch_rows,
        }
        tuning = Tuning.from_settings(settings.backfill, **given)
        if tuning.min_batch_rows > tuning.max_batch_rows:
            raise InputError(
                f"min batch rows ({tuning.min_batch_rows}) is above max batch rows "
                f"({tuning.max_batch_rows})"
            )
        explicit = frozenset(name for name, value in given.items() if value is not None)
        started = time.perf_counter()
        ops = ops_for(engine)
        require_current_schema(engine, "backfill")  # an older release's: its tables are missing
        # The database's time, as a tune's (one given since the run started wins over
        # its option), whatever this host's clock says.
        run_started = _database_now(engine)
        tables = resolve_legacy_tables(engine, settings, systems=systems, columns_only=True)
        if dry_run:
            report = _dry_run(engine, tables)
            report.batch_size = batch_size
            report.duration_seconds = time.perf_counter() - started
            return report
        if not ops.supports_skip_locked:
            workers = 1  # SQLite: one writer at a time anyway
        # The planned chunk is the smallest step a batch can take.
        chunk = batch_size if not tuning.target_batch_ms else min(batch_size, tuning.min_batch_rows)
        try:
            jobs = plan_or_join(ops, tables, chunk)
        except sa.exc.OperationalError as exc:
            raise StorageError(f"cannot plan the backfill: {exc.orig}") from None
        ops.say_if_activity_hidden("the backfill's pace beside live traffic", log)
        how = _How(tuning, explicit, run_started, batch_size, clock)
        tally = _run_workers(engine, settings, tables, jobs, how, progress, workers)
        # As the workers had it last (a tune of the job since it was planned over the run's
        # options older than it), read while the job is still unfinished.
        in_force, sources = _tuning_in_force(engine, how)
        mark_complete(ops, list(tables))
        report = _report(engine, settings, jobs, tally)
        report.workers = workers
        report.batch_size = batch_size
        report.tuning, report.tuning_sources = in_force.as_dict(), sources
        report.batches_this_run = tally.batches
        report.duration_seconds = time.perf_counter() - started
        return report


@dataclass(frozen=True)
class _How:
    """How this run's workers size and pace their batches (the run's options)."""

    tuning: Tuning
    given: frozenset[str]
    run_started: datetime
    batch_size: int
    clock: Clock | None = None

    def worker(
        self,
        engine: sa.Engine,
        settings: Settings,
        tables: dict[LegacySystemType, LegacyTable],
        *,
        stop: threading.Event | None = None,
        **kwargs: Any,
    ) -> Worker:
        """A worker of this run; with ``stop``, one that ends when it is set: checked
        before each batch and each retry, and every wait (pacing, holds, back-off)
        cut short by it."""
        clock = self.clock
        if stop is not None:

            def sleep(seconds: float) -> None:
                stop.wait(seconds)

            base = clock or Clock()
            clock = Clock(timer=base.timer, sleep=sleep, now=base.now)
            kwargs["keep_going"] = lambda: not stop.is_set()
        return Worker(
            engine,
            ops_for(engine),
            settings,
            tables,
            tuning=self.tuning,
            given=self.given,
            run_started=self.run_started,
            batch_size=self.batch_size,
            clock=clock,
            **kwargs,
        )


def _tuning_in_force(engine: sa.Engine, how: _How) -> tuple[Tuning, dict[str, str]]:
    """The tuning the run's workers use now, and where each value comes from."""
    try:
        with engine.connect() as conn:
            stored, job_started = stored_tuning(conn), unfinished_since(conn)
            now = database_now(conn)  # the clock tunes are stamped on
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot read the backfill's tuning: {exc.orig}") from None
    return effective_tuning(how.tuning, set(how.given), now, job_started, stored)


def _database_now(engine: sa.Engine) -> datetime:
    try:
        with engine.connect() as conn:
            return database_now(conn)
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot read the database's clock: {exc.orig}") from None


def _validate(batch_size: int, workers: int, rate: float | None) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise InputError(f"workers must be between 1 and 64, got {workers!r}")
    if rate is not None and not rate > 0:
        raise InputError(f"max rows per second must be positive, got {rate!r}")


def _run_workers(
    engine: sa.Engine,
    settings: Settings,
    tables: dict[LegacySystemType, LegacyTable],
    jobs: dict[LegacySystemType, Job],
    how: _How,
    progress: ProgressCallback | None,
    workers: int,
) -> Tally:
    """Run the workers: one in this thread, or ``workers`` threads sharing the chunks.

    Threads, not processes: a batch is one statement the server runs, so a worker
    waits on its connection (psycopg lets the others run meanwhile), and threads start
    at once, die with the process (a killed backfill leaves no copier behind) and map
    with this process's registered values. They copy on the caller's engine (one of
    their own if its pool is too small), one connection each, while this thread reports
    the progress of every worker (other hosts' too) from the database. An error or Ctrl-C stops the others after their
    batch (a batch is one transaction: nothing half-copied).

    The run ends once every worker has ended, its row written ``finished``: after a
    Ctrl-C the process exits at once, and a worker still in its batch would die with it,
    its row ``running`` (``backfill status``: a backfill nobody runs). Each worker says
    so with an event of its own, waited for here instead of ``Thread.join``: a join that
    Ctrl-C interrupts takes the thread it waited for as ended (CPython gh-90882, in 3.11
    at least), so the joins after it would not wait for that worker.
    """
    if workers == 1:
        return _run_here(engine, settings, tables, jobs, how, progress)
    own = _pool_too_small(engine, workers)
    if own:
        url = engine.url.render_as_string(hide_password=False)
        shared = create_engine(
            url,
            schema=settings.schema,
            pool_size=workers,
            max_overflow=workers,
            prepared_statements=settings.prepared_statements,
            application_name=session_name("backfill"),
            network=settings.network,
        )
    else:
        shared = engine  # its connect arguments, events and credentials, as one worker's
    stop = threading.Event()
    lock = threading.Lock()
    tally, errors = Tally(), []
    ended = [threading.Event() for _ in range(workers)]  # the worker's row says finished

    def copy(index: int) -> None:
        try:
            # The second and later workers wait while the adapter serves live traffic.
            worker = how.worker(
                shared, settings, tables, stop=stop, name=worker_name(index), extra=index > 0
            )
            result = worker.run()
            with lock:
                tally.merge(result)
        except BaseException as exc:  # raised again in the caller's thread
            with lock:
                errors.append(exc)
            stop.set()
        finally:
            ended[index].set()

    threads = [
        threading.Thread(target=copy, args=(i,), name=f"backfill-{i}", daemon=True)
        for i in range(workers)
    ]
    try:
        for t in threads:
            t.start()
        while running := [e for e in ended if not e.is_set()]:
            running[0].wait(POLL_SECONDS)
            if progress is not None:
                _report_progress(engine, settings, jobs, progress)
    finally:
        stop.set()  # Ctrl-C: the others end after their batch
        for t, e in zip(threads, ended, strict=True):
            if t.ident is not None:
                e.wait()  # not t.join(): see above
        if own:
            shared.dispose()
    if errors:
        first = errors[0]
        if isinstance(first, UnistatusError):
            raise first
        raise StorageError(f"backfill worker failed: {type(first).__name__}: {first}") from first
    return tally


def _pool_too_small(engine: sa.Engine, workers: int) -> bool:
    """Whether the caller's engine cannot give every worker and the progress a connection
    at once (a QueuePool smaller than that): then the workers copy on an engine of their
    own, made from its URL. Otherwise on the caller's engine, as one worker does."""
    pool = engine.pool
    if not isinstance(pool, sa.pool.QueuePool):
        return False  # NullPool and the like: a connection whenever one is asked for
    overflow = pool._max_overflow  # no public reader; -1: unlimited
    return overflow >= 0 and pool.size() + overflow < workers + 1


def _run_here(
    engine: sa.Engine,
    settings: Settings,
    tables: dict[LegacySystemType, LegacyTable],
    jobs: dict[LegacySystemType, Job],
    how: _How,
    progress: ProgressCallback | None,
) -> Tally:
    """One worker in this thread, the progress counted from its own batches."""
    done = _report_progress(engine, settings, jobs, progress) if progress is not None else {}

    def on_batch(b: BatchResult) -> None:
        if progress is None:
            return
        key = b.system.value
        done[key] = done.get(key, 0) + b.rows
        progress(key, done[key], jobs[b.system].total)

    return how.worker(engine, settings, tables, on_batch=on_batch).run()


def _report_progress(
    engine: sa.Engine,
    settings: Settings,
    jobs: dict[LegacySystemType, Job],
    progress: ProgressCallback,
) -> dict[str, int]:
    """Every worker's progress as the database has it, to ``progress``; the rows done."""
    snapshot = read_progress(engine, settings)
    done: dict[str, int] = {}
    for system in jobs:
        p = snapshot[system.value]
        done[system.value] = int(p["done"])
        progress(system.value, done[system.value], int(p["total"]))
    return done


def _report(
    engine: sa.Engine, settings: Settings, jobs: dict[LegacySystemType, Job], tally: Tally
) -> BackfillReport:
    snapshot = read_progress(engine, settings)
    systems: dict[str, SystemReport] = {}
    for system, job in jobs.items():
        p = snapshot[system.value]
        systems[system.value] = SystemReport(
            system=system.value,
            total=int(p["total"]),
            done=int(p["done"]),
            inserted=int(p["inserted"]),
            already_present=int(p["already_present"]),
            quarantined=int(p["quarantined"]),
            complete=bool(p["complete"]),
            state=str(p["state"]),
            high_water_mark=job.high_water_mark,
            resumed=job.resumed,
            this_run=tally.per_system.get(
                system.value,
                {"batches": 0, "inserted": 0, "already_present": 0, "quarantined": 0, "retries": 0},
            ),
        )
    return BackfillReport(systems=systems, rows_this_run=tally.rows)


def _dry_run(engine: sa.Engine, tables: dict[LegacySystemType, LegacyTable]) -> BackfillReport:
    """Count what a run would insert and quarantine now; writes nothing."""
    systems: dict[str, SystemReport] = {}
    try:
        with engine.connect() as conn:
            for system, lt in tables.items():
                hwm = conn.execute(sa.select(sa.func.max(lt.id))).scalar_one_or_none()
                rows = unmappable = would_insert = 0
                if hwm is not None:
                    rows, unmappable, would_insert = (
                        int(v) for v in conn.execute(dry_run_counts(lt, int(hwm))).one()
                    )
                systems[system.value] = SystemReport(
                    system=system.value,
                    total=rows,
                    inserted=would_insert,
                    already_present=rows - unmappable - would_insert,
                    quarantined=unmappable,
                    state="dry_run",
                    high_water_mark=hwm,
                )
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read the legacy tables: {exc.orig}") from None
    return BackfillReport(systems=systems, dry_run=True)
