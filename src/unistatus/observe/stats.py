"""Operation statistics that every process can see: the cross-process window.

Every adapter records its operations by default (:mod:`unistatus.adapter.stats`: one
:class:`OperationStats` per engine and process, flushed to ``unistatus_operation_stats``
every ``stats_flush_seconds``; ``record_stats=False`` or ``UNISTATUS_RECORD_STATS=false``
turns it off). :class:`OperationStats` is re-exported here, where it has always been.

:func:`window` merges the rows of all processes over a time window in SQL: counts,
errors and the fixed-bound latency histogram sum across processes, so p50/p95/p99
are interpolated from the merged buckets (the same way Prometheus'
``histogram_quantile`` does), never averaged across processes. ``rolled_back`` counts
the writes their caller rolled back; they are in no other figure (``count``, ``errors``,
``error_rate``, latency, throughput): the caller's decision, not an adapter outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.stats import LATENCY_BUCKETS_MS, OperationStats, bucket_index, prune
from unistatus.db.server_clock import database_now
from unistatus.db.tables_ops import (
    BUCKET_COLUMNS,
    ERROR_KIND_COLUMNS,
    ERROR_KINDS,
    FINE_BUCKETS_MS,
    FINE_COLUMNS,
    OTHER_ERRORS,
    operation_stats,
    stores_error_kinds,
    stores_fine_latency,
    stores_refused,
    stores_rolled_back,
    stores_system,
)
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, StorageError

__all__ = [
    "LATENCY_BUCKETS_MS",
    "OperationStats",
    "WRITES",
    "WindowStats",
    "bucket_index",
    "percentile",
    "prune",
    "stats_totals",
    "window",
]

S = operation_stats

# The operations that write: what the error-rate and latency gates and alerts judge.
# Reads are open to any client of the service; counted there, a flood of them would
# bring a failing write path under the thresholds.
WRITES = ("create_transaction", "update_status")


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
    rolled_back: int = 0  # rolled back by their caller: not in count, nor anywhere else
    refused: int = 0  # refused for their caller's input (nothing written): the same
    system: str | None = None  # one legacy system's operations (None: every system's)
    # The same operations in FINE_BUCKETS_MS (revision 0019; None: not stored).
    fine_buckets: tuple[int, ...] | None = None

    @property
    def histogram(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """(bounds, per-bucket counts) the percentiles are read from: the fine buckets
        when every operation in the window has them (none flushed before revision
        0019, or by older code), else the coarse ones."""
        return best_histogram(self.buckets, self.fine_buckets)

    @property
    def reads_fine(self) -> bool:
        """Whether the percentiles come from the fine buckets (:attr:`histogram`)."""
        return self.histogram[0] is FINE_BUCKETS_MS

    @property
    def error_rate(self) -> float:
        """Errors / completed operations, 0..1 (0 when nothing ran).

        Operations their caller rolled back are in neither the numerator nor the
        denominator: an application's ordinary rollbacks never move it.
        """
        return self.errors / self.count if self.count else 0.0

    @property
    def throughput_per_s(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def mean_ms(self) -> float | None:
        return self.latency_sum_ms / self.count if self.count else None

    @property
    def p50_ms(self) -> float | None:
        return self._quantile(0.50)

    @property
    def p95_ms(self) -> float | None:
        return self._quantile(0.95)

    @property
    def p99_ms(self) -> float | None:
        return self._quantile(0.99)

    def _quantile(self, q: float) -> float | None:
        bounds, buckets = self.histogram
        return percentile(buckets, q, self.latency_max_ms, bounds)

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
            "system": self.system,
            "count": self.count,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "rolled_back": self.rolled_back,
            "refused": self.refused,
            "p50_ms": ms(self.p50_ms),
            "p95_ms": ms(self.p95_ms),
            "p99_ms": ms(self.p99_ms),
            "mean_ms": ms(self.mean_ms),
            "max_ms": ms(self.latency_max_ms) if self.count else None,
            "throughput_per_s": round(self.throughput_per_s, 4),
            "shadow_mismatches": self.shadow_mismatches,
            "processes": self.processes,
        }


def percentile(
    buckets: tuple[int, ...] | list[int],
    q: float,
    max_ms: float,
    bounds: tuple[float, ...] = LATENCY_BUCKETS_MS,
) -> float | None:
    """The q-quantile interpolated linearly inside its bucket (None when empty);
    ``buckets`` are counts per bucket of ``bounds`` (and the +Inf one).

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
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i] if i < len(bounds) else max(max_ms, lower)
            upper = min(upper, max(max_ms, lower))
            return lower + (upper - lower) * ((rank - seen) / n)
        seen += n
    return max_ms


def best_histogram(
    coarse: Sequence[int], fine: Sequence[int] | None
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(bounds, counts) of the finest histogram holding every operation: the fine
    buckets unless some operations were stored without them (before revision 0019, or
    by older code during an upgrade: their coarse buckets have them, their fine ones not)."""
    if fine is not None and sum(fine) == sum(coarse):
        return FINE_BUCKETS_MS, tuple(fine)
    return LATENCY_BUCKETS_MS, tuple(coarse)


def window(
    engine: sa.Engine,
    seconds: float = 300.0,
    *,
    operation: str | tuple[str, ...] | None = None,
    mode: str | tuple[str, ...] | None = None,
    system: LegacySystemType | str | None = None,
    now: datetime | None = None,
    until: datetime | None = None,
    started_since: datetime | None = None,
) -> WindowStats:
    """Merge the rows of every process whose interval ended in the last ``seconds``.

    ``until``: leave out the intervals that ended after it (a window in the past, e.g.
    before the backfill started); without it, every row after ``now - seconds``
    counts, also one stamped a little ahead by another host's clock.
    ``started_since``: only the intervals that began at or after it (operations made
    after a moment, none of them from before).
    ``operation``: only that operation, or those (:data:`WRITES`: the writes).
    ``mode``: only the operations made in that dual-write mode, or in those.
    ``system``: only that legacy system's operations (its gates and alerts read them);
    on a schema older than revision 0016 none are known (the window is empty).
    """
    if seconds <= 0:
        raise InputError(f"the window must be positive, got {seconds} s")
    span = timedelta(seconds=seconds)
    cols = [
        sa.func.coalesce(sa.func.sum(S.c.count), 0),
        sa.func.coalesce(sa.func.sum(S.c.errors), 0),
        sa.func.coalesce(sa.func.sum(S.c.shadow_mismatches), 0),
        sa.func.coalesce(sa.func.sum(S.c.latency_sum_ms), 0.0),
        sa.func.coalesce(sa.func.max(S.c.latency_max_ms), 0.0),
        sa.func.count(sa.distinct(S.c.process_id)),
        sa.func.coalesce(sa.func.sum(S.c.rolled_back), 0)
        if stores_rolled_back(engine)
        else sa.literal(0),
        sa.func.coalesce(sa.func.sum(S.c.refused), 0) if stores_refused(engine) else sa.literal(0),
        *(sa.func.coalesce(sa.func.sum(S.c[b]), 0) for b in BUCKET_COLUMNS),
    ]
    fine = stores_fine_latency(engine)
    if fine:
        cols += [sa.func.coalesce(sa.func.sum(S.c[b]), 0) for b in FINE_COLUMNS]
    # From the database's clock unless told (intervals are stamped on it: a reader on a
    # host ahead read an empty window, its alerts "resolved").
    since_param = sa.bindparam("window_since", type_=S.c.interval_end.type)
    q = sa.select(*cols).where(S.c.interval_end > since_param)
    if until is not None:
        q = q.where(S.c.interval_end <= until)
    if started_since is not None:
        q = q.where(S.c.interval_start >= started_since)
    if operation:
        ops = (operation,) if isinstance(operation, str) else operation
        q = q.where(S.c.operation.in_(ops))
    modes = (mode,) if isinstance(mode, str) else mode or ()
    if modes:
        q = q.where(S.c.mode.in_([str(m) for m in modes]))
    chosen = LegacySystemType.parse(system).value if system is not None else None
    if chosen is not None:
        q = q.where(S.c.system == chosen if stores_system(engine) else sa.false())
    try:
        with engine.connect() as conn:
            since = (now if now is not None else database_now(conn)) - span
            row = conn.execute(q, {"window_since": since}).one()
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
        rolled_back=int(row[6]),
        refused=int(row[7]),
        buckets=tuple(int(v) for v in row[8 : 8 + len(BUCKET_COLUMNS)]),
        fine_buckets=tuple(int(v) for v in row[8 + len(BUCKET_COLUMNS) :]) if fine else None,
        operation=operation
        if operation is None or isinstance(operation, str)
        else ",".join(operation),
        mode=",".join(str(m) for m in modes) or None,
        system=chosen,
    )


def stats_totals(engine: sa.Engine) -> list[dict[str, Any]]:
    """Cumulative per (operation, mode, system) totals over every stats row (monotonic
    counters).

    Prometheus wants counters and cumulative histograms; summing every stored interval
    gives exactly that across processes. Pruning folds old rows into one row per
    (operation, mode, system) instead of deleting them
    (:func:`unistatus.adapter.stats.prune`), so these sums never go down. ``system`` is
    the legacy system's value, "" for operations stored without one (flushed before
    revision 0016, or tied to no system); on a schema older than 0016, "" throughout.
    ``errors_by_kind``: the errors by what failed them (every kind, 0 included; those
    of no kind the stats store, or stored before revision 0023, are "database").
    """
    s = S.c
    system: sa.ColumnElement[Any] = s.system if stores_system(engine) else sa.null()
    q = sa.select(
        s.operation,
        s.mode,
        system,
        sa.func.sum(s.count),
        sa.func.sum(s.errors),
        sa.func.sum(s.shadow_mismatches),
        sa.func.sum(s.latency_sum_ms),
        sa.func.sum(s.rolled_back),
        sa.func.sum(s.refused) if stores_refused(engine) else sa.literal(0),
        *(
            (sa.func.sum(s[c]) for c in ERROR_KIND_COLUMNS)
            if stores_error_kinds(engine)
            else (sa.literal(0) for _ in ERROR_KIND_COLUMNS)
        ),
        *(sa.func.sum(s[b]) for b in BUCKET_COLUMNS),
    ).group_by(s.operation, s.mode, *([system] if stores_system(engine) else []))
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    out: list[dict[str, Any]] = []
    # Rendered as client_python renders its own bucket bounds: 0.001 ... 1.0 ... 10.0
    bounds = [*(str(b / 1000.0) for b in LATENCY_BUCKETS_MS), "+Inf"]
    kinds_at = 9  # where the kinds' sums are in a row; the buckets' after them
    buckets_at = kinds_at + len(ERROR_KINDS)
    for r in rows:
        cumulative, total = [], 0
        for bound, n in zip(bounds, r[buckets_at:], strict=True):
            total += int(n or 0)
            cumulative.append((bound, total))
        out.append(
            {
                "operation": r[0],
                "mode": r[1],
                "system": r[2] or "",
                "count": int(r[3] or 0),
                "errors": int(r[4] or 0),
                "shadow_mismatches": int(r[5] or 0),
                "sum_ms": float(r[6] or 0.0),
                "rolled_back": int(r[7] or 0),
                "refused": int(r[8] or 0),
                "errors_by_kind": _errors_by_kind(int(r[4] or 0), r[kinds_at:buckets_at]),
                "buckets": cumulative,
            }
        )
    return out


def _errors_by_kind(errors: int, sums: Sequence[Any]) -> dict[str, int]:
    """``errors`` by kind (ERROR_KINDS' sums, in order): the rest is the database's."""
    counted = {kind: int(n or 0) for kind, n in zip(ERROR_KINDS, sums, strict=True)}
    return {OTHER_ERRORS: max(errors - sum(counted.values()), 0), **counted}
