"""Tables for operating the migration: operation statistics flushed by every adapter.

One row per flush interval, per process, per (operation, mode, legacy system). Latency is kept as a
fixed-bound histogram with one column per bucket, so a window over any number of
processes is a plain ``SUM`` in SQL on every backend (see :mod:`unistatus.observe.stats`).
The phase lives in the control table (key ``phase``); it needs no table of its own.
"""

from __future__ import annotations

from bisect import bisect_left

import sqlalchemy as sa

from unistatus.db.binding import has_column
from unistatus.db.tables import UTC, metadata

# Upper bounds (ms, inclusive) of the latency buckets; one more bucket holds the rest.
# Shared with the Prometheus histogram, and chosen to have edges at the thresholds the
# spec uses (200 ms warning, 500 ms critical) so gates and alerts are exact there.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    150.0,
    200.0,
    300.0,
    500.0,
    750.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
)
BUCKET_COLUMNS: tuple[str, ...] = tuple(
    f"b{i:02d}" for i in range(len(LATENCY_BUCKETS_MS) + 1)
)  # the last one is +Inf

# Finer buckets (revision 0019): steps of 10-20% from 10 ms to 500 ms, so a p95 that is
# 20% worse (the backfill's throttle, the gates) is seen where live writes are; a
# superset of the bounds above, which every row still carries (older readers, and
# /metrics' histogram, read those).
FINE_BUCKETS_MS: tuple[float, ...] = (
    *(1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 14.0, 16.0, 18.0),
    *(20.0, 23.0, 26.0, 30.0, 35.0, 40.0, 45.0, 50.0, 57.0, 65.0, 75.0, 85.0, 100.0),
    *(115.0, 130.0, 150.0, 175.0, 200.0, 230.0, 260.0, 300.0, 350.0, 400.0, 450.0),
    *(500.0, 600.0, 750.0, 1000.0, 1500.0, 2500.0, 5000.0, 10000.0),
)
FINE_COLUMNS: tuple[str, ...] = tuple(f"f{i:02d}" for i in range(len(FINE_BUCKETS_MS) + 1))
assert set(LATENCY_BUCKETS_MS) <= set(FINE_BUCKETS_MS)
# For each fine bucket, the bucket of LATENCY_BUCKETS_MS that holds it.
COARSE_OF_FINE: tuple[int, ...] = tuple(
    bisect_left(LATENCY_BUCKETS_MS, bound) for bound in (*FINE_BUCKETS_MS, float("inf"))
)

# What failed an operation, as its event says (OperationEvent.error_kind), each counted
# in a column of its own (revision 0023) beside ``errors``, which holds them all; the
# rest of ``errors`` ("database": any other failure, or one flushed before 0023).
ERROR_KINDS: tuple[str, ...] = (
    "connection_limit",
    "outcome_unknown",
    "queue_timeout",
    "interrupted",
)
ERROR_KIND_COLUMNS: tuple[str, ...] = tuple(f"errors_{kind}" for kind in ERROR_KINDS)
OTHER_ERRORS = "database"

operation_stats = sa.Table(
    "unistatus_operation_stats",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("process_id", sa.String(128), nullable=False),
    sa.Column("interval_start", UTC, nullable=False),
    sa.Column("interval_end", UTC, nullable=False),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(40), nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("shadow_mismatches", sa.BigInteger, nullable=False),
    sa.Column("latency_sum_ms", sa.Float, nullable=False),
    sa.Column("latency_max_ms", sa.Float, nullable=False),
    *(
        sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
        for name in BUCKET_COLUMNS
    ),
    *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in FINE_COLUMNS),
    # Writes in the caller's transaction that the caller rolled back (revision 0010):
    # not in count, errors, the latency sum or the buckets (see unistatus.adapter.stats).
    sa.Column("rolled_back", sa.BigInteger, nullable=False, server_default="0"),
    # The legacy system of the operations counted (revision 0016; NULL: not known, or
    # flushed before it): each system's gates and alerts read their own figures.
    sa.Column("system", sa.String(16), nullable=True),
    # Writes refused for their caller's input after they began (revision 0020): they
    # wrote nothing; not in count, errors, the latency sum or the buckets.
    sa.Column("refused", sa.BigInteger, nullable=False, server_default="0"),
    # Of ``errors``, those of each kind of ERROR_KINDS (revision 0023).
    *(
        sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
        for name in ERROR_KIND_COLUMNS
    ),
)
sa.Index("ix_operation_stats_end", operation_stats.c.interval_end)


def stores_error_kinds(engine: sa.Engine | sa.Connection) -> bool:
    """Whether ``operation_stats`` has the columns of each kind of error (revision 0023)."""
    return has_column(engine, operation_stats, ERROR_KIND_COLUMNS[-1])


def stores_rolled_back(engine: sa.Engine | sa.Connection) -> bool:
    """Whether ``operation_stats`` has the ``rolled_back`` column (revision 0010).

    New code on an older schema (a rolling upgrade, before ``unistatus init``) records
    and reads the other figures without it instead of failing every flush.
    """
    return has_column(engine, operation_stats, "rolled_back")


def stores_refused(engine: sa.Engine | sa.Connection) -> bool:
    """Whether ``operation_stats`` has the ``refused`` column (revision 0020)."""
    return has_column(engine, operation_stats, "refused")


def stores_system(engine: sa.Engine | sa.Connection) -> bool:
    """Whether ``operation_stats`` has the ``system`` column (revision 0016)."""
    return has_column(engine, operation_stats, "system")


def stores_fine_latency(engine: sa.Engine | sa.Connection) -> bool:
    """Whether ``operation_stats`` has the fine latency buckets (revision 0019)."""
    return has_column(engine, operation_stats, FINE_COLUMNS[0])
