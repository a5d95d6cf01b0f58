"""The per-process statistics of the adapter's operations, recorded by default.

Every :class:`~unistatus.adapter.model.OperationEvent` is folded into an in-memory
aggregate (a dict update under a lock held for microseconds), and a daemon thread writes
one row per (operation, mode, legacy system) per interval to ``unistatus_operation_stats``. A failing
flush is logged and its counts are kept for the next attempt; it never reaches the write
that produced the event. A write in the caller's transaction that the caller rolled back
is counted in ``rolled_back`` only: not in ``count`` (completed operations), ``errors``,
the latency sum or the buckets, so an application's own rollbacks neither raise the error
rate nor move the latency figures. A write refused for its caller's input after it began
(an unknown transaction, an invalid transition) wrote nothing: it is counted in
``refused`` only, the same way, so a client retrying a 404 can neither dilute the error
rate nor pull the p95 down nor make up a gate's minimum of operations. Reading them back (the cross-process window, percentiles) is
:mod:`unistatus.observe.stats`.

Every :class:`~unistatus.adapter.core.DualWriteAdapter` records unless
``record_stats=False`` or ``UNISTATUS_RECORD_STATS=false``. The adapters of one process
on one engine share one :class:`OperationStats` (:func:`acquire`): a process writes one
row per (operation, mode) per interval however many adapters it builds, and its
operations are counted once. The flusher stops and flushes when the last adapter sharing
it is closed, within an interval of the last one being garbage-collected, and at exit:
the interpreter's (``atexit``), or multiprocessing's in its children, which end through
``os._exit()`` and never run ``atexit`` (:func:`_close_at_multiprocessing_exit`). An exit
that runs neither (SIGKILL, a signal whose default action ends the process, a bare
``os._exit()``) loses what was recorded since the last interval's flush.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import threading
import uuid
import weakref
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from unistatus.adapter.forks import fresh_pool
from unistatus.adapter.model import OperationEvent
from unistatus.clock import utcnow
from unistatus.db.dialect import ops_for
from unistatus.db.failures import one_line
from unistatus.db.retry import fails_every_write
from unistatus.db.server_clock import clock_of
from unistatus.db.tables_ops import (
    BUCKET_COLUMNS,
    COARSE_OF_FINE,
    ERROR_KIND_COLUMNS,
    ERROR_KINDS,
    FINE_BUCKETS_MS,
    FINE_COLUMNS,
    LATENCY_BUCKETS_MS,
    operation_stats,
    stores_error_kinds,
    stores_fine_latency,
    stores_refused,
    stores_rolled_back,
    stores_system,
)
from unistatus.errors import InputError

__all__ = [
    "LATENCY_BUCKETS_MS",
    "OperationStats",
    "acquire",
    "bucket_index",
    "close_all",
    "prune",
    "release",
]

log = logging.getLogger("unistatus.observe.stats")

S = operation_stats
N_BUCKETS = len(BUCKET_COLUMNS)
N_FINE = len(FINE_COLUMNS)
# Rows older than this are folded by the flusher now and then (a week of history).
RETENTION_SECONDS = 7 * 24 * 3600.0
# A flush's bounds: its lock waits, its statement (the application's engine has none).
FLUSH_LOCK_MS = 2000
FLUSH_STATEMENT_MS = 10000
PRUNE_EVERY_SECONDS = 3600.0
# The process_id of the rows that carry the sums of pruned rows (see prune).
CARRIED = "unistatus:pruned"
# The columns that add up across rows (latency_max_ms takes the maximum instead).
_SUMMED = ("count", "errors", "shadow_mismatches", "latency_sum_ms", *BUCKET_COLUMNS)


class Observable(Protocol):
    """What :meth:`OperationStats.attach` needs: an adapter's observer list."""

    @property
    def observers(self) -> list[Callable[[OperationEvent], None]]: ...


def bucket_index(duration_ms: float, bounds: tuple[float, ...] = LATENCY_BUCKETS_MS) -> int:
    """The bucket a latency falls in: the first bound >= it, else the +Inf bucket."""
    return bisect_left(bounds, duration_ms)


def coarse_buckets(fine: list[int]) -> list[int]:
    """The counts of the fine buckets (FINE_BUCKETS_MS) in the coarse ones."""
    out = [0] * N_BUCKETS
    for i, n in enumerate(fine):
        out[COARSE_OF_FINE[i]] += n
    return out


_KIND_INDEX = {kind: i for i, kind in enumerate(ERROR_KINDS)}


@dataclass
class _Agg:
    count: int = 0  # completed operations: successes and errors, never rolled back
    errors: int = 0
    shadow_mismatches: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * N_FINE)  # FINE_BUCKETS_MS
    rolled_back: int = 0  # rolled back by the caller: in nothing else
    refused: int = 0  # refused for the caller's input, nothing written: in nothing else
    # Of errors, those of each kind of ERROR_KINDS (the rest: the database's).
    error_kinds: list[int] = field(default_factory=lambda: [0] * len(ERROR_KINDS))

    def add(self, event: OperationEvent) -> None:
        if event.rolled_back:
            self.rolled_back += 1
            return
        if event.refused:
            self.refused += 1
            return
        self.count += 1
        if not event.success:
            self.errors += 1
            # A write that may have committed is that, whatever labelled it (or nothing).
            kind = "outcome_unknown" if event.outcome_unknown else event.error_kind
            if kind in _KIND_INDEX:
                self.error_kinds[_KIND_INDEX[kind]] += 1
        if event.shadow_mismatch:
            self.shadow_mismatches += 1
        duration = max(float(event.duration_ms), 0.0)
        self.latency_sum_ms += duration
        self.latency_max_ms = max(self.latency_max_ms, duration)
        self.buckets[bucket_index(duration, FINE_BUCKETS_MS)] += 1

    def merge(self, other: _Agg) -> None:
        self.count += other.count
        self.errors += other.errors
        self.shadow_mismatches += other.shadow_mismatches
        self.rolled_back += other.rolled_back
        self.refused += other.refused
        self.latency_sum_ms += other.latency_sum_ms
        self.latency_max_ms = max(self.latency_max_ms, other.latency_max_ms)
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.error_kinds = [a + b for a, b in zip(self.error_kinds, other.error_kinds, strict=True)]


def default_process_id() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OperationStats:
    """Aggregates one process's adapter operations and flushes them every interval."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        flush_seconds: float = 5.0,
        process_id: str | None = None,
        start: bool = True,
    ) -> None:
        if flush_seconds <= 0:
            raise InputError(f"flush_seconds must be positive, got {flush_seconds}")
        self.engine = engine
        self._warned_old_schema = False
        self.flush_seconds = flush_seconds
        self.process_id = (process_id or default_process_id())[:128]
        self._ops = ops_for(engine)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._current: dict[tuple[str, str, str | None], _Agg] = {}
        self._interval_start = utcnow()
        self._stop = threading.Event()
        self._last_prune = 0.0
        # Shared recorders only (see acquire): False once no adapter uses it any more.
        self._in_use: Callable[[], bool] | None = None
        self.flush_errors = 0
        self._thread: threading.Thread | None = None
        # A shared recorder's flusher starts with the first operation (see _start).
        self._start_on_record = False
        self._thread_lock = threading.Lock()
        if start:
            self._start_thread()

    def _start_thread(self) -> None:
        with self._thread_lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._loop, name=f"unistatus-stats-{self.process_id}", daemon=True
            )
            self._thread.start()

    # --- collecting -------------------------------------------------------------------

    def attach(self, adapter: Observable) -> OperationStats:
        """Observe every operation of ``adapter`` (returns self, for chaining)."""
        adapter.observers.append(self.record)
        return self

    def record(self, event: OperationEvent) -> None:
        """The observer: fold one event in. Cheap, and never raises into the caller."""
        try:
            system = event.system.value if event.system is not None else None
            key = (str(event.operation), str(event.mode), system)
            with self._lock:
                agg = self._current.get(key)
                if agg is None:
                    agg = self._current[key] = _Agg()
                agg.add(event)
            if self._thread is None and self._start_on_record:
                self._start_thread()
        except Exception:  # metrics must never break a write
            log.exception("could not record an operation event")

    __call__ = record

    # --- flushing ---------------------------------------------------------------------

    def _warn_old_schema(self) -> None:
        if not self._warned_old_schema:
            self._warned_old_schema = True
            log.warning(
                "the schema is older than revision 0023: rolled-back operations (0010), "
                "the legacy system of operations (0016), the fine latency buckets (0019), "
                "refused writes (0020) or the kinds of errors (0023) "
                "are not stored until `unistatus init` upgrades it (the other figures are)"
            )

    def flush(self, *, wait: float = -1) -> int:
        """Write the aggregate since the last flush (one row per operation, mode, system).

        Returns the number of rows written. On a database error the counts are put
        back, to be written with the next interval, and the error is logged. ``wait``:
        seconds to wait for a flush under way (-1: as long as it takes), 0 written if
        it is still under way then.
        """
        if not self._flush_lock.acquire(timeout=wait):
            return 0
        try:
            return self._flush_held()
        finally:
            self._flush_lock.release()

    def _flush_held(self) -> int:
        """:meth:`flush`, its lock held."""
        with self._lock:
            taken, self._current = self._current, {}
            start, end = self._interval_start, utcnow()
            self._interval_start = end
        if not taken:
            return 0
        rows = [
            {
                "process_id": self.process_id,
                "interval_start": start,
                "interval_end": end,
                "operation": op,
                "mode": mode,
                "system": system,
                "count": agg.count,
                "errors": agg.errors,
                "shadow_mismatches": agg.shadow_mismatches,
                "rolled_back": agg.rolled_back,
                "refused": agg.refused,
                "latency_sum_ms": agg.latency_sum_ms,
                "latency_max_ms": agg.latency_max_ms,
                **dict(zip(BUCKET_COLUMNS, coarse_buckets(agg.buckets), strict=True)),
                **dict(zip(FINE_COLUMNS, agg.buckets, strict=True)),
                **dict(zip(ERROR_KIND_COLUMNS, agg.error_kinds, strict=True)),
            }
            for (op, mode, system), agg in taken.items()
        ]
        try:
            with self._ops.write_transaction() as conn:
                # Bounded on any engine (the application's has no lock_timeout): a
                # flush behind a held table waited as long as it was held (its columns'
                # reads too), and close() (the interpreter's exit) behind it.
                self._ops.bound_statements(conn, FLUSH_STATEMENT_MS, FLUSH_LOCK_MS)
                # On the database's clock, as windows are read; what the adapter stamps
                # follows the lead measured here.
                lead = clock_of(self.engine).measure(conn)
                for row in rows:  # (a host ten minutes behind emptied them: a probe)
                    row["interval_start"], row["interval_end"] = start + lead, end + lead
                for columns, stored in (
                    (("rolled_back",), stores_rolled_back),
                    (("refused",), stores_refused),
                    (("system",), stores_system),
                    (FINE_COLUMNS, stores_fine_latency),
                    (ERROR_KIND_COLUMNS, stores_error_kinds),
                ):
                    if not stored(conn):
                        self._warn_old_schema()
                        for row in rows:
                            for column in columns:
                                del row[column]
                conn.execute(sa.insert(S), rows)
        except Exception as exc:
            self.flush_errors += 1
            _log_failure("could not flush operation statistics; keeping them for later", exc)
            with self._lock:
                for key, agg in taken.items():
                    self._current.setdefault(key, _Agg()).merge(agg)
                self._interval_start = start
            return 0
        return len(rows)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()
            self._maybe_prune()
            if self._in_use is not None and not self._in_use():
                break  # every adapter sharing it is gone: flush what is left and stop
        self.flush()

    def _maybe_prune(self) -> None:
        now = utcnow().timestamp()
        if now - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = now
        try:
            prune(self.engine, RETENTION_SECONDS)
        except Exception as exc:
            _log_failure("could not prune old operation statistics", exc)

    @property
    def running(self) -> bool:
        """Whether the flusher thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the flusher and write what is left (call on shutdown), within a bound:
        what could not be written then is said lost in the log."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.flush_seconds + FLUSH_LOCK_MS / 1000)
        self.flush(wait=FLUSH_LOCK_MS / 1000)
        with self._lock:
            left = sum(agg.count for agg in self._current.values())
        if left:
            log.warning(
                "statistics of %d operations not stored at close: the database did not "
                "take them in time (see the error above)",
                left,
            )

    def __enter__(self) -> OperationStats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _log_failure(what: str, exc: Exception) -> None:
    """A failed flush or prune, logged. The database failing or unreachable is expected
    in an outage and nothing is lost (retried next interval): one WARNING line naming
    the driver's error, the traceback at DEBUG, not ~90 lines each interval. Anything
    else is a bug: its traceback stays."""
    outage = isinstance(exc, sa.exc.OperationalError) or (
        isinstance(exc, sa.exc.DBAPIError)
        and (exc.connection_invalidated or fails_every_write(exc))
    )
    if not outage:
        log.error(what, exc_info=exc)
        return
    log.warning("%s: %s", what, one_line(exc))
    log.debug("%s: the error in full", what, exc_info=exc)


def prune(engine: sa.Engine, older_than_seconds: float = RETENTION_SECONDS) -> int:
    """Fold the rows whose interval ended more than ``older_than_seconds`` ago into one
    row per (operation, mode, system); returns how many rows were folded.

    The folded row (process :data:`CARRIED`) keeps their sums, so the totals over the
    whole table, which ``/metrics`` exposes as Prometheus counters and a histogram,
    never go down: a decrease would read as a counter reset, and ``rate()`` would count
    the whole remaining total again. Its interval is theirs (older than the cutoff), so
    it is in no window shorter than the retention, and it is folded again next time.
    ``DELETE ... RETURNING`` sums exactly the rows this call removed: two processes
    pruning at once never both carry a row.
    """
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    sums = [
        *_SUMMED,
        *(("rolled_back",) if stores_rolled_back(engine) else ()),
        *(("refused",) if stores_refused(engine) else ()),
        *(FINE_COLUMNS if stores_fine_latency(engine) else ()),
        *(ERROR_KIND_COLUMNS if stores_error_kinds(engine) else ()),
    ]
    columns = [S.c.operation, S.c.mode, S.c.interval_start, S.c.interval_end]
    if stores_system(engine):
        columns.append(S.c.system)
    columns += [S.c.latency_max_ms, *(S.c[name] for name in sums)]
    with ops_for(engine).write_transaction() as conn:
        folded = conn.execute(sa.delete(S).where(S.c.interval_end < cutoff).returning(*columns))
        carried: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        n = 0
        for row in folded.mappings():
            n += 1
            key = (row["operation"], row["mode"], row.get("system"))
            into = carried.get(key)
            if into is None:
                carried[key] = {"process_id": CARRIED, **row}
                continue
            into["interval_start"] = min(into["interval_start"], row["interval_start"])
            into["interval_end"] = max(into["interval_end"], row["interval_end"])
            into["latency_max_ms"] = max(into["latency_max_ms"], row["latency_max_ms"])
            for name in sums:
                into[name] += row[name]
        if carried:
            conn.execute(sa.insert(S), list(carried.values()))
    return n


# --- one recorder per engine and process, shared by its adapters ---------------------


@dataclass
class _Shared:
    stats: OperationStats
    users: weakref.WeakSet[object] = field(default_factory=weakref.WeakSet)
    closed: bool = False


# (id(engine), pid) -> the recorder; the recorder holds the engine, so the id is not
# reused while the entry exists. Reentrant: a garbage collection may run anywhere.
_registry: dict[tuple[int, int], _Shared] = {}
_registry_lock = threading.RLock()


def acquire(user: object, engine: sa.Engine, flush_seconds: float) -> OperationStats:
    """The process's recorder for ``engine`` (started on first use), held by ``user``.

    ``user`` (an adapter) is held weakly: the recorder stops once every user has been
    released or garbage-collected. ``flush_seconds`` applies when the recorder starts.
    """
    key = (id(engine), os.getpid())
    with _registry_lock:
        _forget_unused()
        entry = _registry.get(key)
        if entry is None or entry.closed:
            entry = _registry[key] = _Shared(
                OperationStats(engine, flush_seconds=flush_seconds, start=False)
            )
            _start(key, entry)
            _close_at_multiprocessing_exit()
        entry.users.add(user)
        return entry.stats


def _forget_unused() -> None:
    """Drop the recorders whose adapters are all gone before any operation (no flusher
    ever started to retire them, nothing recorded): their engines are not kept."""
    idle = [k for k, e in _registry.items() if not len(e.users) and e.stats._thread is None]
    for k in idle:
        _registry[k].closed = True
        del _registry[k]


def release(user: object, stats: OperationStats) -> None:
    """``user`` is done with ``stats``: flush now; the last user also stops the flusher."""
    key = (id(stats.engine), os.getpid())
    with _registry_lock:
        entry = _registry.get(key)
        if entry is None or entry.stats is not stats:
            return
        entry.users.discard(user)
        last = not len(entry.users)
        if last:
            entry.closed = True
            del _registry[key]
    if last:
        stats.close()
    else:
        stats.flush()  # what the closed adapter did is in the table once close returns


def close_all() -> None:
    """Stop and flush every shared recorder of this process (at exit, and between tests)."""
    pid = os.getpid()
    with _registry_lock:
        entries = [e for (_, owner), e in _registry.items() if owner == pid]
        for entry in entries:
            entry.closed = True
        _registry.clear()
    for entry in entries:
        try:
            entry.stats.close()
        except Exception:  # at exit: log, never raise
            log.exception("could not flush operation statistics at close")


class _Hook:
    """What multiprocessing's after-fork registry holds (weakly) for us, alive for ever."""


_HOOK = _Hook()
# The process whose multiprocessing exit closes the recorders, and whether the registry
# of multiprocessing's children (inherited by each child) already holds our hook.
_closing_at_mp_exit_in: int | None = None
_hooked_after_mp_fork = False


def _close_at_multiprocessing_exit() -> None:
    """When this process uses multiprocessing: ``close_all`` as one of its exit
    finalizers, which its children run when their target returns (or raises), before
    their ``os._exit()`` (atexit never runs there).

    A child clears the finalizers it inherited once started, after the fork hooks and
    the main module's import (spawn, forkserver), then runs its after-fork callbacks:
    one of ours registers the finalizer again there. multiprocessing is never imported
    for an application that does not use it.
    """
    global _closing_at_mp_exit_in, _hooked_after_mp_fork
    util = sys.modules.get("multiprocessing.util")
    if util is None or _closing_at_mp_exit_in == os.getpid():
        return
    _closing_at_mp_exit_in = os.getpid()
    util.Finalize(None, close_all, exitpriority=0)
    if not _hooked_after_mp_fork:
        _hooked_after_mp_fork = True
        util.register_after_fork(_HOOK, _close_at_multiprocessing_child_exit)


def _close_at_multiprocessing_child_exit(_hook: _Hook) -> None:
    """In a multiprocessing child, once its inherited finalizers are cleared."""
    global _closing_at_mp_exit_in
    _closing_at_mp_exit_in = None
    _close_at_multiprocessing_exit()


def _start(key: tuple[int, int], entry: _Shared) -> None:
    """Make the flusher of a shared recorder start with its first operation; it retires
    the entry once unused. Not before: an application that builds its adapter before
    forking its workers (gunicorn's --preload) keeps a parent of one thread (Python 3.12
    warns of a fork after a thread: "use of fork() may lead to deadlocks")."""

    def in_use() -> bool:
        with _registry_lock:
            if len(entry.users):
                return True
            entry.closed = True
            if _registry.get(key) is entry:
                del _registry[key]
            return False

    stats = entry.stats
    stats._in_use = in_use
    stats._thread, stats._thread_lock = None, threading.Lock()
    stats._start_on_record = True


def _after_fork_in_child() -> None:
    """A forked process records under a name of its own, from zero, with its own flusher.

    The parent's counts stay the parent's (never flushed twice), and an adapter built
    before the fork keeps recording in the child. The engine's pool is replaced without
    closing the parent's connections (SQLAlchemy's fork recipe, ``dispose(close=False)``):
    the child never writes on a connection the parent still uses.
    """
    global _registry_lock
    _registry_lock = threading.RLock()
    pid = os.getpid()
    inherited = [(engine_id, e) for (engine_id, _), e in _registry.items() if not e.closed]
    _registry.clear()
    for engine_id, entry in inherited:
        stats = entry.stats
        fresh_pool(stats.engine)
        stats._last_prune = 0.0
        stats._lock, stats._flush_lock = threading.Lock(), threading.Lock()
        stats._current, stats._interval_start = {}, utcnow()
        stats._stop = threading.Event()
        stats.process_id = default_process_id()[:128]
        key = (engine_id, pid)
        _registry[key] = entry
        _start(key, entry)
    _close_at_multiprocessing_exit()


atexit.register(close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
