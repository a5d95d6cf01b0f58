"""Operation statistics that every process can see.

The adapter runs inside the application's processes. Each process attaches an
:class:`OperationStats` to its adapter: every :class:`~unistatus.adapter.core.OperationEvent`
is folded into an in-memory aggregate (a dict update under a lock held for
microseconds), and a daemon thread writes one row per (operation, mode) per interval
to ``unistatus_operation_stats``. A failing flush is logged and its counts are kept
for the next attempt; it never reaches the write that produced the event.

:func:`window` merges the rows of all processes over a time window in SQL: counts,
errors and the fixed-bound latency histogram sum across processes, so p50/p95/p99
are interpolated from the merged buckets (the same way Prometheus'
``histogram_quantile`` does), never averaged across processes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.adapter import DualWriteAdapter, OperationEvent
from unistatus.clock import utcnow
from unistatus.db.dialect import ops_for
from unistatus.db.tables_ops import BUCKET_COLUMNS, LATENCY_BUCKETS_MS, operation_stats
from unistatus.errors import InputError, StorageError

__all__ = [
    "LATENCY_BUCKETS_MS",
    "OperationStats",
    "WindowStats",
    "bucket_index",
    "percentile",
    "prune",
    "window",
]

log = logging.getLogger("unistatus.observe.stats")

S = operation_stats
N_BUCKETS = len(BUCKET_COLUMNS)
# Rows older than this are deleted by the flusher now and then (a week of history).
RETENTION_SECONDS = 7 * 24 * 3600.0
PRUNE_EVERY_SECONDS = 3600.0


def bucket_index(duration_ms: float) -> int:
    """The bucket a latency falls in: the first bound >= it, else the +Inf bucket."""
    return bisect_left(LATENCY_BUCKETS_MS, duration_ms)


@dataclass
class _Agg:
    count: int = 0
    errors: int = 0
    shadow_mismatches: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)

    def add(self, event: OperationEvent) -> None:
        self.count += 1
        if not event.success:
            self.errors += 1
        if event.shadow_mismatch:
            self.shadow_mismatches += 1
        duration = max(float(event.duration_ms), 0.0)
        self.latency_sum_ms += duration
        self.latency_max_ms = max(self.latency_max_ms, duration)
        self.buckets[bucket_index(duration)] += 1

    def merge(self, other: _Agg) -> None:
        self.count += other.count
        self.errors += other.errors
        self.shadow_mismatches += other.shadow_mismatches
        self.latency_sum_ms += other.latency_sum_ms
        self.latency_max_ms = max(self.latency_max_ms, other.latency_max_ms)
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


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
        self.flush_seconds = flush_seconds
        self.process_id = (process_id or default_process_id())[:128]
        self._ops = ops_for(engine)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._current: dict[tuple[str, str], _Agg] = {}
        self._interval_start = utcnow()
        self._stop = threading.Event()
        self._last_prune = 0.0
        self.flush_errors = 0
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(
                target=self._loop, name=f"unistatus-stats-{self.process_id}", daemon=True
            )
            self._thread.start()

    # --- collecting -------------------------------------------------------------------

    def attach(self, adapter: DualWriteAdapter) -> OperationStats:
        """Observe every operation of ``adapter`` (returns self, for chaining)."""
        adapter.observers.append(self.record)
        return self

    def record(self, event: OperationEvent) -> None:
        """The observer: fold one event in. Cheap, and never raises into the caller."""
        try:
            key = (str(event.operation), str(event.mode))
            with self._lock:
                agg = self._current.get(key)
                if agg is None:
                    agg = self._current[key] = _Agg()
                agg.add(event)
        except Exception:  # metrics must never break a write
            log.exception("could not record an operation event")

    __call__ = record

    # --- flushing ---------------------------------------------------------------------

    def flush(self) -> int:
        """Write the aggregate since the last flush (one row per operation and mode).

        Returns the number of rows written. On a database error the counts are put
        back, to be written with the next interval, and the error is logged.
        """
        with self._flush_lock:
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
                    "count": agg.count,
                    "errors": agg.errors,
                    "shadow_mismatches": agg.shadow_mismatches,
                    "latency_sum_ms": agg.latency_sum_ms,
                    "latency_max_ms": agg.latency_max_ms,
                    **dict(zip(BUCKET_COLUMNS, agg.buckets, strict=True)),
                }
                for (op, mode), agg in taken.items()
            ]
            try:
                with self._ops.write_transaction() as conn:
                    conn.execute(sa.insert(S), rows)
            except Exception:
                self.flush_errors += 1
                log.exception("could not flush operation statistics; keeping them for later")
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

    def _maybe_prune(self) -> None:
        now = utcnow().timestamp()
        if now - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = now
        try:
            prune(self.engine, RETENTION_SECONDS)
        except Exception:
            log.exception("could not prune old operation statistics")

    def close(self) -> None:
        """Stop the flusher and write what is left (call on shutdown)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.flush_seconds + 5)
        self.flush()

    def __enter__(self) -> OperationStats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading ------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowStats:
    """Operations of every process over the last ``seconds``."""

    seconds: float
    count: int
    errors: int
    shadow_mismatches: int
    latency_sum_ms: float
    latency_max_ms: float
    buckets: tuple[int, ...]  # per bucket (not cumulative), aligned with LATENCY_BUCKETS_MS
    processes: int
    operation: str | None = None
    mode: str | None = None

    @property
    def error_rate(self) -> float:
        """Errors / operations, 0..1 (0 when nothing ran)."""
        return self.errors / self.count if self.count else 0.0

    @property
    def throughput_per_s(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def mean_ms(self) -> float | None:
        return self.latency_sum_ms / self.count if self.count else None

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.buckets, 0.50, self.latency_max_ms)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.buckets, 0.95, self.latency_max_ms)

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.buckets, 0.99, self.latency_max_ms)

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) pairs ending with +Inf, as Prometheus wants."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*LATENCY_BUCKETS_MS, float("inf")), self.buckets, strict=True):
            total += n
            out.append((bound, total))
        return out

    def as_dict(self) -> dict[str, Any]:
        def ms(v: float | None) -> float | None:
            return round(v, 3) if v is not None else None

        return {
            "window_seconds": self.seconds,
            "operation": self.operation,
            "mode": self.mode,
            "count": self.count,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_ms": ms(self.p50_ms),
            "p95_ms": ms(self.p95_ms),
            "p99_ms": ms(self.p99_ms),
            "mean_ms": ms(self.mean_ms),
            "max_ms": ms(self.latency_max_ms) if self.count else None,
            "throughput_per_s": round(self.throughput_per_s, 4),
            "shadow_mismatches": self.shadow_mismatches,
            "processes": self.processes,
        }


def percentile(buckets: tuple[int, ...] | list[int], q: float, max_ms: float) -> float | None:
    """The q-quantile interpolated linearly inside its bucket (None when empty).

    The +Inf bucket is bounded by the largest latency seen, so a p99 there is never
    reported above the true maximum.
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            lower = LATENCY_BUCKETS_MS[i - 1] if i > 0 else 0.0
            upper = LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else max(max_ms, lower)
            upper = min(upper, max(max_ms, lower))
            return lower + (upper - lower) * ((rank - seen) / n)
        seen += n
    return max_ms


def window(
    engine: sa.Engine,
    seconds: float = 300.0,
    *,
    operation: str | None = None,
    mode: str | None = None,
    now: datetime | None = None,
) -> WindowStats:
    """Merge the rows of every process whose interval ended in the last ``seconds``."""
    if seconds <= 0:
        raise InputError(f"the window must be positive, got {seconds} s")
    since = (now or utcnow()) - timedelta(seconds=seconds)
    cols = [
        sa.func.coalesce(sa.func.sum(S.c.count), 0),
        sa.func.coalesce(sa.func.sum(S.c.errors), 0),
        sa.func.coalesce(sa.func.sum(S.c.shadow_mismatches), 0),
        sa.func.coalesce(sa.func.sum(S.c.latency_sum_ms), 0.0),
        sa.func.coalesce(sa.func.max(S.c.latency_max_ms), 0.0),
        sa.func.count(sa.distinct(S.c.process_id)),
        *(sa.func.coalesce(sa.func.sum(S.c[b]), 0) for b in BUCKET_COLUMNS),
    ]
    q = sa.select(*cols).where(S.c.interval_end > since)
    if operation:
        q = q.where(S.c.operation == operation)
    if mode:
        q = q.where(S.c.mode == str(mode))
    try:
        with engine.connect() as conn:
            row = conn.execute(q).one()
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot read operation statistics: {exc.orig}") from None
    return WindowStats(
        seconds=float(seconds),
        count=int(row[0]),
        errors=int(row[1]),
        shadow_mismatches=int(row[2]),
        latency_sum_ms=float(row[3]),
        latency_max_ms=float(row[4]),
        processes=int(row[5]),
        buckets=tuple(int(v) for v in row[6:]),
        operation=operation,
        mode=str(mode) if mode else None,
    )


def prune(engine: sa.Engine, older_than_seconds: float = RETENTION_SECONDS) -> int:
    """Delete rows whose interval ended more than ``older_than_seconds`` ago."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    with ops_for(engine).write_transaction() as conn:
        return conn.execute(sa.delete(S).where(S.c.interval_end < cutoff)).rowcount
