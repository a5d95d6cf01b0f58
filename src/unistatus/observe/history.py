"""The last hour as time series, from what the database already keeps.

The dashboards' figures are one window; an operator also asks "since when?". Every
number here comes from tables every process writes anyway:

- operation statistics of the writes (:data:`~unistatus.observe.stats.WRITES`, what
  ``/api/v1/status``, the gates and the alerts count: reads are open to anyone, and a
  flood of them would flatten the figures), per process and flush interval, merged into
  fixed steps the way :func:`~unistatus.observe.stats.window` merges them: counts and
  latency buckets summed by the database, one row per step (a read costs the steps, not
  the rows in the span), p95 interpolated from the merged buckets;
- stored check reports (consistency: each as the dashboards show it, a round of
  continuous verification over the systems' rows as now known, never its own rate of
  the few rows it read; one that cannot be judged, with no full check, is no point:
  :func:`~unistatus.observe.judged.report_consistency`);
- the control log (mode and phase changes, marked on the time axis).

A step with no operations has no latency and no error rate (``None``), never a made-up
zero. A row belongs to the step its interval ended in; one ending on a step's edge, to
the later step (the window's end, to the last).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.backfill import progress as backfill_progress
from unistatus.clock import as_utc
from unistatus.db.elapsed import microseconds_after
from unistatus.db.mode_reads import MODE_KEY, mode_keys
from unistatus.db.server_clock import database_now
from unistatus.db.tables import control_log
from unistatus.db.tables_check import check_reports
from unistatus.db.tables_ops import (
    BUCKET_COLUMNS,
    FINE_COLUMNS,
    operation_stats,
    stores_fine_latency,
)
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, StorageError
from unistatus.migration.phases import PHASE_KEY, phase_keys
from unistatus.migration.verify import system_populations
from unistatus.observe.judged import Population, populations_of, report_consistency
from unistatus.observe.stats import WRITES, best_histogram, percentile

__all__ = ["HISTORY_POINTS", "HISTORY_SECONDS", "History", "MIN_STEP_SECONDS", "read_history"]

HISTORY_SECONDS = 3600.0
HISTORY_POINTS = 60
# The shortest step: the stats are flushed every few seconds, so a shorter one shows
# nothing more, and one that rounds to no time at all has no rate.
MIN_STEP_SECONDS = 1.0
# Bounds on what one read returns (a busy hour of checks or mode flips stays readable).
MAX_CHECKS = 500
MAX_EVENTS = 200
S = operation_stats


@dataclass(frozen=True)
class History:
    since: datetime
    until: datetime
    step_seconds: float
    points: list[dict[str, Any]]
    consistency: list[dict[str, Any]]
    events: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "step_seconds": self.step_seconds,
            "points": self.points,
            "consistency": self.consistency,
            "events": self.events,
        }


def read_history(
    engine: sa.Engine,
    *,
    seconds: float = HISTORY_SECONDS,
    points: int = HISTORY_POINTS,
    now: datetime | None = None,
    populations: Mapping[str, Population] | None = None,
) -> History:
    """``points`` equal steps over the last ``seconds``, with checks and control changes.

    Each step at least :data:`MIN_STEP_SECONDS` long (``seconds >= points``), else
    :class:`~unistatus.errors.InputError`. ``populations``: the systems' rows a report of
    the rows changed since a time is judged against (a snapshot's; None: read here).
    """
    if points < 1:
        raise InputError(f"history needs at least one step, got {points}")
    if not seconds >= points * MIN_STEP_SECONDS:  # NaN too
        raise InputError(
            f"history needs at least {MIN_STEP_SECONDS:g} s per step, got {seconds:g} s for "
            f"{points} steps (seconds >= points)"
        )
    step = seconds / points
    try:
        with engine.connect() as conn:
            # The database's clock: the statistics, the checks and the control log are
            # stamped on it (a dashboard host five minutes behind showed none of them).
            until = now or database_now(conn)
            since = until - timedelta(seconds=seconds)
            rows = conn.execute(_per_step(engine, since, until, points)).all()
            R = check_reports
            checks = conn.execute(
                sa.select(R.c.created_at, R.c.consistency_rate, R.c.since, R.c.per_system)
                .where(R.c.created_at > since, R.c.created_at <= until)
                .order_by(R.c.created_at, R.c.id)
                .limit(MAX_CHECKS)
            ).all()
            events = conn.execute(
                sa.select(control_log.c.created_at, control_log.c.key, control_log.c.new_value)
                .where(
                    control_log.c.key.in_((*mode_keys(), *phase_keys())),
                    control_log.c.created_at > since,
                    control_log.c.created_at <= until,
                )
                .order_by(control_log.c.id)
                .limit(MAX_EVENTS)
            ).all()
        if populations is None and any(c.since is not None for c in checks):
            populations = populations_of(system_populations(engine), backfill_progress(engine))
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot read the history: {exc.orig}") from None
    return History(
        since=since,
        until=until,
        step_seconds=step,
        points=_steps(rows, since, step, points),
        consistency=_consistency(checks, populations or {}),
        events=_events(events),
    )


def _consistency(
    checks: Sequence[Any], populations: Mapping[str, Population]
) -> list[dict[str, Any]]:
    """Each check's consistency as the dashboards show it; none for a report that
    cannot be judged (see the module)."""
    out = []
    every = {s.value for s in LegacySystemType}
    for at, rate, changed_since, per_system in checks:
        if per_system and not every <= set(per_system):
            continue  # a check of some systems: not the whole database's figure
        report = {"consistency_rate": rate, "since": changed_since, "per_system": per_system}
        shown = report_consistency(report, populations)
        if shown is not None:
            out.append({"t": _iso(at), "rate": float(shown)})
    return out


def _events(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """One event per change; a change of several systems at once (adjacent mode rows,
    or phase rows, of one value) is one ``mode`` (``phase``) event naming them
    (``systems``; empty: the global key)."""
    out: list[dict[str, Any]] = []
    for at, key, value in rows:
        family, _, system = str(key).partition(".")
        if family not in (MODE_KEY, PHASE_KEY):
            out.append({"t": _iso(at), "key": key, "value": value})
            continue
        last = out[-1] if out else None
        if last and last["key"] == family and last["value"] == value and system:
            if system not in last["systems"]:
                last["systems"].append(system)
                continue
        out.append(
            {"t": _iso(at), "key": family, "value": value, "systems": [system] if system else []}
        )
    return out


def _per_step(engine: sa.Engine, since: datetime, until: datetime, points: int) -> sa.Select[Any]:
    """(step, count, errors, max latency, every bucket) of each step with rows: the step
    by integer arithmetic on microseconds, exact on every backend (0..points, the
    window's end alone in the step ``points``)."""
    histograms = [*BUCKET_COLUMNS, *(FINE_COLUMNS if stores_fine_latency(engine) else ())]
    span = (until - since) // timedelta(microseconds=1)
    step = (microseconds_after(since, S.c.interval_end) * points // span).label("step")
    rows = (
        sa.select(step, S.c.count, S.c.errors, S.c.latency_max_ms, *(S.c[b] for b in histograms))
        # Bounded by the stats retention: rows older than it are pruned.
        .where(S.c.interval_end > since, S.c.interval_end <= until, S.c.operation.in_(WRITES))
        .subquery("in_window")
    )
    r = rows.c
    return sa.select(
        r.step,
        sa.func.sum(r.count),
        sa.func.sum(r.errors),
        sa.func.max(r.latency_max_ms),
        *(sa.func.sum(r[b]) for b in histograms),
    ).group_by(r.step)


def _steps(rows: Sequence[Any], since: datetime, step: float, points: int) -> list[dict[str, Any]]:
    """Each step's figures from :func:`_per_step`'s rows; the p95 from the fine buckets
    where the step's rows all have them (:func:`~unistatus.observe.stats.best_histogram`)."""
    n_buckets = len(rows[0]) - 4 if rows else 0
    count = [0] * points
    errors = [0] * points
    max_ms = [0.0] * points
    buckets = [[0] * n_buckets for _ in range(points)]
    for row in rows:
        i = min(points - 1, max(0, int(row[0])))
        count[i] += int(row[1])
        errors[i] += int(row[2])
        max_ms[i] = max(max_ms[i], float(row[3]))
        for b in range(n_buckets):
            buckets[i][b] += int(row[4 + b])
    out: list[dict[str, Any]] = []
    for i in range(points):
        coarse, fine = buckets[i][: len(BUCKET_COLUMNS)], buckets[i][len(BUCKET_COLUMNS) :]
        bounds, counts = best_histogram(coarse, fine or None)
        p95 = percentile(counts, 0.95, max_ms[i], bounds) if count[i] else None
        out.append(
            {
                "t": _iso(since + timedelta(seconds=step * (i + 1))),
                "count": count[i],
                "p95_ms": None if p95 is None else round(p95, 3),
                "error_rate": errors[i] / count[i] if count[i] else None,
                "throughput_per_s": round(count[i] / step, 4),
            }
        )
    return out


def _iso(at: datetime | None) -> str:
    value = as_utc(at)
    assert value is not None
    return value.isoformat()
