"""The figures of ``unistatus plan``: rows counted per system, and the backfill's and the
check's rates timed on a sample of this database (:mod:`unistatus.migration.rollout_plan`).

The backfill's own ``INSERT ... SELECT`` runs on a key range holding the sample's rows
inside a transaction that is always rolled back; the check's own counting statement
only reads. Each is timed on two sizes (a quarter of the sample, and all of it),
:data:`SAMPLE_RUNS` times each, the fastest counting; the two give a fixed cost per
statement and a cost per row (:class:`Cost`), and an estimate charges the fixed cost
once per statement the real command runs.

The archive export is timed the same way: the first rows of each legacy table read,
encoded and gzipped as ``archive export`` does, into memory (no file, no table written).
A rollback's replay is not sampled (it writes legacy): its rate is the one measured by
the rollbacks this database has already run (the replay summary each one logged); none
yet, and the replay's time is not measured (:func:`replay_rate`).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from unistatus.backfill.statements import in_range, unified_insert
from unistatus.db.dialect import ops_for
from unistatus.db.failures import describe
from unistatus.db.infinite_times import infinite_times_as_text
from unistatus.db.legacy import LegacyTable
from unistatus.db.retry import is_read_only
from unistatus.db.rowcount import affected
from unistatus.db.tables import control_log, pending_legacy_changes, unified_transactions
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.archive import compress_lines, live_lines
from unistatus.migration.archive_format import ColumnInfo
from unistatus.migration.check import DEFAULT_CHUNK, count_first_keys
from unistatus.migration.phases import ROLLBACK_KEY

__all__ = [
    "SAMPLE_RUNS",
    "Cost",
    "ReplayRate",
    "SystemFigures",
    "cost_from",
    "figures",
    "replay_estimate",
    "replay_rate",
    "replay_size",
    "rounded",
    "seconds_for",
]

# Each sample statement is timed this many times; the fastest counts (the first run
# pays for a cold cache the real run pays once, not per batch).
SAMPLE_RUNS = 2
# The most keys the check's sample grows to (reads only: about 0.2 s here).
CHECK_SAMPLE_LIMIT = 200_000
# The sample's write transaction never holds a live writer up for long.
SAMPLE_STATEMENT_MS = 10_000
SAMPLE_LOCK_MS = 200
# Rows per statement of the real commands: `backfill --batch-size`'s default, and the
# check's key chunk.
BACKFILL_BATCH = 1000
# The replay's rate: from the last few rollbacks that replayed something.
REPLAY_HISTORY = 5

U = unified_transactions
P = pending_legacy_changes


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def seconds_for(rows: int, rate: float | None) -> float | None:
    if rows == 0:
        return 0.0
    return rows / rate if rate else None


@dataclass(frozen=True)
class Cost:
    """A statement's cost measured on two sample sizes: a fixed part per statement
    (round trip, planning) and a part per row. A small sample alone would charge the
    fixed part to its few rows and make a big table look slow."""

    per_row_seconds: float
    fixed_seconds: float
    sample_rows: int
    rows_per_statement: int  # what the real command puts in one statement

    @property
    def rows_per_second(self) -> float:
        return 1.0 / self.per_row_seconds

    def seconds(self, rows: int) -> float:
        statements = -(-rows // self.rows_per_statement)
        return statements * self.fixed_seconds + rows * self.per_row_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_per_second": rounded(self.rows_per_second),
            "fixed_ms_per_statement": rounded(self.fixed_seconds * 1000),
            "rows_per_statement": self.rows_per_statement,
            "sample_rows": self.sample_rows,
        }


def cost_from(
    small: tuple[int, float], large: tuple[int, float], per_statement: int
) -> Cost | None:
    """The :class:`Cost` through two timed samples ``(rows, seconds)``; per row only when
    the two do not tell a fixed part apart (same size, or timing noise)."""
    (n1, t1), (n2, t2) = small, large
    if n2 <= 0 or t2 <= 0:
        return None
    if n2 > n1 > 0 and t2 > t1:
        per_row = (t2 - t1) / (n2 - n1)
        fixed = t1 - n1 * per_row
        if fixed >= 0:
            return Cost(per_row, fixed, n2, per_statement)
    return Cost(t2 / n2, 0.0, n2, per_statement)


@dataclass(frozen=True)
class SystemFigures:
    """One system's rows and the costs measured on its sample (None: not measured)."""

    system: LegacySystemType
    legacy_rows: int
    unified_rows: int
    missing_unified: int | None
    pending_changes: int
    backfill: Cost | None
    check: Cost | None
    # The archive export (measured when the plan covers phase 4's retirement).
    archive: Cost | None = None
    archive_bytes_per_row: float | None = None
    # Why the backfill's cost was not measured though rows are to copy (its sample is a
    # write, rolled back: a read-only database refuses it); None: measured, or no need.
    backfill_unmeasured: str | None = None

    def backfill_seconds(self) -> float | None:
        if self.missing_unified is None:
            return None
        if self.missing_unified == 0:
            return 0.0
        return self.backfill.seconds(self.missing_unified) if self.backfill else None

    def check_seconds(self) -> float | None:
        if self.legacy_rows == 0:
            return 0.0
        return self.check.seconds(self.legacy_rows) if self.check else None

    def archive_seconds(self) -> float | None:
        if self.legacy_rows == 0:
            return 0.0
        return self.archive.seconds(self.legacy_rows) if self.archive else None

    def archive_bytes(self) -> int | None:
        if self.legacy_rows == 0:
            return 0
        if self.archive_bytes_per_row is None:
            return None
        return round(self.archive_bytes_per_row * self.legacy_rows)

    def as_dict(self) -> dict[str, Any]:
        def cost(c: Cost | None, estimate: float | None) -> dict[str, Any]:
            return {
                **(c.as_dict() if c else dict.fromkeys(_COST_KEYS)),
                "estimate_seconds": rounded(estimate),
            }

        return {
            "legacy_rows": self.legacy_rows,
            "unified_rows": self.unified_rows,
            "missing_unified": self.missing_unified,
            "pending_changes": self.pending_changes,
            "backfill": {
                **cost(self.backfill, self.backfill_seconds()),
                "not_measured": self.backfill_unmeasured,
            },
            "check": cost(self.check, self.check_seconds()),
            "archive": {
                **cost(self.archive, self.archive_seconds()),
                "rows": self.legacy_rows,
                "estimate_bytes": self.archive_bytes(),
            },
        }


_COST_KEYS = ("rows_per_second", "fixed_ms_per_statement", "rows_per_statement", "sample_rows")


# --- figures from this database -------------------------------------------------------


def _count(conn: sa.Connection, q: sa.Select[Any]) -> int:
    return int(conn.execute(q).scalar_one() or 0)


def _missing(lt: LegacyTable) -> sa.Select[Any]:
    """Legacy rows without a unified row: what a backfill would copy."""
    present = (
        sa.select(sa.literal(1))
        .where(U.c.legacy_system == lt.system.value, U.c.legacy_id == lt.id)
        .exists()
    )
    return sa.select(sa.func.count()).select_from(lt.table).where(~present)


def _pending_query(system: LegacySystemType | None) -> sa.Select[Any]:
    """Changes awaiting replay (of one system's transactions), by kind, and transactions."""
    q = sa.select(
        sa.func.count(),
        sa.func.count(sa.distinct(P.c.transaction_id)),
        sa.func.coalesce(sa.func.sum(sa.case((P.c.kind == "create", 1), else_=0)), 0),
    ).where(P.c.replayed_at.is_(None))
    if system is not None:
        q = q.select_from(P.join(U, U.c.id == P.c.transaction_id)).where(
            U.c.legacy_system == system.value
        )
    return q


def replay_size(conn: sa.Connection, system: LegacySystemType | None) -> dict[str, int]:
    """What a replay would apply now, read only: each transaction's changes end in at most
    one legacy write (its row created or its status set; a conflict writes none)."""
    changes, transactions, creates = conn.execute(_pending_query(system)).one()
    return {
        "changes": int(changes),
        "creates": int(creates),
        "status_changes": int(changes) - int(creates),
        "transactions": int(transactions),
        "legacy_rows_written_at_most": int(transactions),
    }


def _timed(run: Callable[[int], int], rows: int) -> tuple[int, float]:
    """(rows done, best seconds) of ``run(rows)`` over :data:`SAMPLE_RUNS` runs."""
    best, done = float("inf"), 0
    for _ in range(SAMPLE_RUNS):
        started = time.perf_counter()
        done = run(rows)
        best = min(best, time.perf_counter() - started)
    return done, best


def _two_sizes(run: Callable[[int], int], sample: int, per_statement: int) -> Cost | None:
    """Time ``run`` on a quarter of the sample and on all of it, after one untimed run
    (the first pays for reading the rows into the cache, which would pass for a fixed
    cost of the small sample)."""
    run(sample)
    small = _timed(run, max(1, sample // 4))
    return cost_from(small, _timed(run, sample), per_statement)


def grown_cost(
    run: Callable[[int], int], sample: int, per_statement: int, *, limit: int
) -> Cost | None:
    """The :class:`Cost` of a statement whose fixed part may hide its cost per row in a
    small sample (the check's: on a big table its statement reads for its range whatever
    the range's size): the fixed part timed on one row, then the sample grown (4x a step,
    at most ``limit`` rows) until its rows cost at least as much as that part, so timing
    noise cannot pass the fixed part for a cost per row (it did: 14x too slow a check)."""
    run(sample)  # the first run reads the rows into the cache
    _, fixed = _timed(run, 1)
    rows = max(1, sample)
    while True:
        done, seconds = _timed(run, rows)
        if done < rows or seconds - fixed >= fixed or rows >= limit:
            break
        rows = min(rows * 4, limit)
    if done <= 0 or seconds <= 0:
        return None
    per_row = (seconds - fixed) / done if seconds > fixed else seconds / done
    return Cost(per_row, fixed if seconds > fixed else 0.0, done, per_statement)


def _check_cost(engine: sa.Engine, lt: LegacyTable, sample: int) -> Cost | None:
    """The check's own statement over the first legacy keys (reads only)."""

    def run(keys: int) -> int:
        with engine.connect() as conn:
            try:
                return count_first_keys(conn, lt, keys)
            finally:
                conn.rollback()

    return grown_cost(run, sample, DEFAULT_CHUNK, limit=CHECK_SAMPLE_LIMIT)


def _backfill_cost(engine: sa.Engine, lt: LegacyTable, sample: int) -> Cost | None:
    """The backfill's own INSERT ... SELECT over key ranges of legacy rows not yet
    copied, in a transaction that is always rolled back."""
    present = (
        sa.select(sa.literal(1))
        .where(U.c.legacy_system == lt.system.value, U.c.legacy_id == lt.id)
        .exists()
    )
    with engine.connect() as conn:
        keys = [
            int(k)
            for k in conn.execute(
                sa.select(lt.id).where(~present).order_by(lt.id).limit(sample)
            ).scalars()
        ]
    if not keys:
        return None
    ops = ops_for(engine)

    def run(rows: int) -> int:
        last = keys[min(rows, len(keys)) - 1]
        stmt = unified_insert(ops, lt, in_range(lt, keys[0], last))
        with ops.rolled_back(statement_ms=SAMPLE_STATEMENT_MS, lock_ms=SAMPLE_LOCK_MS) as conn:
            return affected(conn, stmt)

    return _two_sizes(run, len(keys), BACKFILL_BATCH)


class _Sink:
    """A write-only file that keeps nothing but how many bytes it was given."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _archive_cost(
    engine: sa.Engine, lt: LegacyTable, sample: int, rows: int
) -> tuple[Cost | None, float | None]:
    """``archive export``'s work on the first ``sample`` rows (read in key order, encoded,
    gzipped into a sink that keeps only the size; reads only), and the gzipped bytes per
    row. One statement per table, as the export runs."""
    columns = [ColumnInfo.of(c, engine.dialect) for c in lt.table.c]
    sizes: dict[int, int] = {}

    def run(limit: int) -> int:
        sink = _Sink()
        with engine.connect() as conn:
            try:
                with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as gz:
                    with infinite_times_as_text(conn):
                        done = compress_lines(live_lines(conn, lt.table, columns, limit=limit), gz)
            finally:
                conn.rollback()
        sizes[done] = sink.size
        return done

    cost = _two_sizes(run, sample, max(rows, 1))
    largest = max(sizes, default=0)
    return cost, (sizes[largest] / largest if largest else None)


@dataclass(frozen=True)
class ReplayRate:
    """Changes replayed per second by the rollbacks this database already ran."""

    changes: int
    seconds: float
    rollbacks: int

    @property
    def changes_per_second(self) -> float:
        return self.changes / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes_per_second": rounded(self.changes_per_second),
            "changes": self.changes,
            "seconds": rounded(self.seconds),
            "rollbacks": self.rollbacks,
        }


def replay_rate(conn: sa.Connection, *, history: int = REPLAY_HISTORY) -> ReplayRate | None:
    """The replay rate of the last ``history`` rollbacks that replayed changes (their
    logged summaries: changes replayed, duration, locking included); None: not measured."""
    q = (
        sa.select(control_log.c.meta)
        .where(control_log.c.key == ROLLBACK_KEY)
        .order_by(control_log.c.id.desc())
        .limit(history * 10)
    )
    changes, seconds, runs = 0, 0.0, 0
    for meta in conn.execute(q).scalars():
        replay = (meta or {}).get("replay") if isinstance(meta, dict) else None
        if not isinstance(replay, dict):
            continue
        done, ms = replay.get("replayed"), replay.get("duration_ms")
        if not isinstance(done, int) or not isinstance(ms, int | float) or done <= 0 or ms <= 0:
            continue
        changes, seconds, runs = changes + done, seconds + float(ms) / 1000.0, runs + 1
        if runs == history:
            break
    return ReplayRate(changes, seconds, runs) if runs else None


def replay_estimate(replay: dict[str, int], rate: ReplayRate | None) -> dict[str, Any]:
    """What a rollback's replay would write now, and how long it would take at the
    measured rate (None with ``measured`` False when no rate was measured)."""
    changes = int(replay["changes"])
    seconds = 0.0 if changes == 0 else (changes / rate.changes_per_second if rate else None)
    return {
        "changes": changes,
        "legacy_rows_written_at_most": int(replay["legacy_rows_written_at_most"]),
        "estimate_seconds": rounded(seconds),
        "measured": rate is not None,
        "rate": rate.as_dict() if rate else None,
    }


def figures(
    engine: sa.Engine,
    tables: dict[LegacySystemType, LegacyTable],
    *,
    sample_rows: int,
    backfill_ahead: bool,
    check_ahead: bool,
    archive_ahead: bool = False,
) -> dict[LegacySystemType, SystemFigures]:
    out: dict[LegacySystemType, SystemFigures] = {}
    for system, lt in tables.items():
        with engine.connect() as conn:
            legacy_rows = _count(conn, sa.select(sa.func.count()).select_from(lt.table))
            unified_rows = _count(
                conn, sa.select(sa.func.count()).where(U.c.legacy_system == system.value)
            )
            missing = _count(conn, _missing(lt)) if backfill_ahead else None
            pending = replay_size(conn, system)["changes"]
        backfill = check = archive = None
        per_row: float | None = None
        unmeasured: str | None = None
        if sample_rows and lt.status is not None:
            if backfill_ahead and missing:
                try:
                    backfill = _backfill_cost(engine, lt, sample_rows)
                except sa.exc.DBAPIError as exc:
                    if not is_read_only(exc):
                        raise
                    # A replica: the plan reads; only this estimate needs a write.
                    unmeasured = f"the database is read-only ({describe(exc).splitlines()[0]})"
            if check_ahead and legacy_rows:
                check = _check_cost(engine, lt, sample_rows)
        if sample_rows and archive_ahead and legacy_rows:
            archive, per_row = _archive_cost(engine, lt, sample_rows, legacy_rows)
        out[system] = SystemFigures(
            system,
            legacy_rows,
            unified_rows,
            missing,
            pending,
            backfill,
            check,
            archive,
            per_row,
            unmeasured,
        )
    return out
