"""The figures of ``unistatus plan``: rows counted per system, and the backfill's and the
check's rates timed on a sample of this database (:mod:`unistatus.migration.rollout_plan`).

The backfill's own ``INSERT ... SELECT`` runs on a key range holding the sample's rows
inside a transaction that is always rolled back; the check's own counting statement
only reads. Each is timed :data:`SAMPLE_RUNS` times and the fastest counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from unistatus.backfill.statements import in_range, unified_insert
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import LegacyTable
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.check import count_first_keys

__all__ = ["SAMPLE_RUNS", "SystemFigures", "figures", "replay_size", "rounded", "seconds_for"]

# Each sample statement is timed this many times; the fastest counts (the first run
# pays for a cold cache the real run pays once, not per batch).
SAMPLE_RUNS = 2
# The sample's write transaction never holds a live writer up for long.
SAMPLE_STATEMENT_MS = 10_000
SAMPLE_LOCK_MS = 200

U = unified_transactions
P = pending_legacy_changes


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def seconds_for(rows: int, rate: float | None) -> float | None:
    if rows == 0:
        return 0.0
    return rows / rate if rate else None


@dataclass(frozen=True)
class SystemFigures:
    """One system's rows and the rates measured on its sample (None: not measured)."""

    system: LegacySystemType
    legacy_rows: int
    unified_rows: int
    missing_unified: int | None
    pending_changes: int
    backfill_rows_per_second: float | None
    backfill_sample_rows: int
    check_rows_per_second: float | None
    check_sample_rows: int

    def backfill_seconds(self) -> float | None:
        if self.missing_unified is None:
            return None
        return seconds_for(self.missing_unified, self.backfill_rows_per_second)

    def check_seconds(self) -> float | None:
        return seconds_for(self.legacy_rows, self.check_rows_per_second)

    def as_dict(self) -> dict[str, Any]:
        return {
            "legacy_rows": self.legacy_rows,
            "unified_rows": self.unified_rows,
            "missing_unified": self.missing_unified,
            "pending_changes": self.pending_changes,
            "backfill": {
                "rows_per_second": rounded(self.backfill_rows_per_second),
                "sample_rows": self.backfill_sample_rows,
                "estimate_seconds": rounded(self.backfill_seconds()),
            },
            "check": {
                "rows_per_second": rounded(self.check_rows_per_second),
                "sample_rows": self.check_sample_rows,
                "estimate_seconds": rounded(self.check_seconds()),
            },
        }


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


def _timed(run: Callable[[], int]) -> tuple[int, float]:
    """(rows, best seconds) of ``run`` over :data:`SAMPLE_RUNS` runs."""
    best, rows = float("inf"), 0
    for _ in range(SAMPLE_RUNS):
        started = time.perf_counter()
        rows = run()
        best = min(best, time.perf_counter() - started)
    return rows, best


def _rate(rows: int, seconds: float) -> float | None:
    return rows / seconds if rows and seconds > 0 else None


def _check_rate(engine: sa.Engine, lt: LegacyTable, sample: int) -> tuple[float | None, int]:
    """The check's own statement over the first ``sample`` legacy keys (reads only)."""

    def run() -> int:
        with engine.connect() as conn:
            try:
                return count_first_keys(conn, lt, sample)
            finally:
                conn.rollback()

    rows, seconds = _timed(run)
    return _rate(rows, seconds), rows


def _backfill_rate(engine: sa.Engine, lt: LegacyTable, sample: int) -> tuple[float | None, int]:
    """The backfill's own INSERT ... SELECT over a key range holding ``sample`` legacy
    rows not yet copied, in a transaction that is always rolled back."""
    missing = (
        sa.select(lt.id.label("k"))
        .where(
            ~sa.select(sa.literal(1))
            .where(U.c.legacy_system == lt.system.value, U.c.legacy_id == lt.id)
            .exists()
        )
        .order_by(lt.id)
        .limit(sample)
        .subquery()
    )
    with engine.connect() as conn:
        lo, hi, n = conn.execute(
            sa.select(sa.func.min(missing.c.k), sa.func.max(missing.c.k), sa.func.count())
        ).one()
    if not n:
        return None, 0
    ops = ops_for(engine)
    stmt = unified_insert(ops, lt, in_range(lt, int(lo), int(hi)))
    stmt = stmt.execution_options(preserve_rowcount=True)

    def run() -> int:
        with ops.rolled_back(statement_ms=SAMPLE_STATEMENT_MS, lock_ms=SAMPLE_LOCK_MS) as conn:
            return int(conn.execute(stmt).rowcount)

    rows, seconds = _timed(run)
    return _rate(rows, seconds), rows


def figures(
    engine: sa.Engine,
    tables: dict[LegacySystemType, LegacyTable],
    *,
    sample_rows: int,
    backfill_ahead: bool,
    check_ahead: bool,
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
        bf_rate, bf_rows = (None, 0)
        ck_rate, ck_rows = (None, 0)
        if sample_rows and lt.status is not None:
            if backfill_ahead and missing:
                bf_rate, bf_rows = _backfill_rate(engine, lt, sample_rows)
            if check_ahead and legacy_rows:
                ck_rate, ck_rows = _check_rate(engine, lt, sample_rows)
        out[system] = SystemFigures(
            system,
            legacy_rows,
            unified_rows,
            missing,
            pending,
            bf_rate,
            bf_rows,
            ck_rate,
            ck_rows,
        )
    return out
