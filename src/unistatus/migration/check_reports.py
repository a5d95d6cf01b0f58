"""Stored check reports: what a check (or a round of continuous verification) found,
and how gates, alerts and the dashboard find the one they need.

One row of ``unistatus_check_reports`` per report; :func:`latest_report` and
:func:`latest_report_for` read them instead of re-running a diff.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.db.tables_check import check_reports
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.check_rule import KINDS

FULL_SCOPE = "all"  # every system, every row: what phase gates should read
# A round of continuous verification (`monitor`, `serve`): the changes since its
# watermark, for the alerts; never the check a phase gate names.
CONTINUOUS_SCOPE = "continuous"


@dataclass
class CheckReport:
    """The result of one check run (stored as one row of ``unistatus_check_reports``)."""

    scope: str
    systems: list[str]
    total: int = 0
    consistent: int = 0
    inconsistencies: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    per_system: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    since: datetime | None = None
    duration_ms: float = 0.0
    started_at: datetime = field(default_factory=utcnow)
    created_at: datetime = field(default_factory=utcnow)
    id: int | None = None
    # False: the run stopped before covering every key range (never a full check).
    complete: bool = True
    run: str | None = None

    @property
    def consistency_rate(self) -> float:
        """consistent / total in 0..1; nothing to compare counts as fully consistent."""
        return self.consistent / self.total if self.total else 1.0

    @property
    def is_consistent(self) -> bool:
        return self.consistent == self.total

    @property
    def inconsistent(self) -> int:
        return self.total - self.consistent

    @property
    def rows_per_second(self) -> float:
        return self.total / (self.duration_ms / 1000) if self.duration_ms > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "systems": list(self.systems),
            "since": self.since.isoformat() if self.since else None,
            "total": self.total,
            "consistent": self.consistent,
            "inconsistent": self.inconsistent,
            "consistency_rate": self.consistency_rate,
            "inconsistencies": dict(self.inconsistencies),
            "per_system": self.per_system,
            "examples": list(self.examples),
            "duration_ms": round(self.duration_ms, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "started_at": self.started_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "complete": self.complete,
            "run": self.run,
        }


def store_report(engine: sa.Engine, report: CheckReport) -> None:
    with engine.begin() as conn:
        insert_report(conn, report)


def insert_report(conn: sa.Connection, report: CheckReport) -> None:
    """Store ``report`` in the caller's transaction (its ``id`` set)."""
    values = {
        "scope": report.scope,
        "systems": report.systems,
        "since": report.since,
        "total": report.total,
        "consistent": report.consistent,
        "consistency_rate": report.consistency_rate,
        "inconsistencies": report.inconsistencies,
        "per_system": report.per_system,
        "examples": report.examples,
        "duration_ms": report.duration_ms,
        "started_at": report.started_at,
        "created_at": report.created_at,
        "complete": report.complete,
        "run": report.run,
    }
    report.id = int(
        conn.execute(
            sa.insert(check_reports).values(values).returning(check_reports.c.id)
        ).scalar_one()
    )


def _from_row(row: Mapping[Any, Any]) -> CheckReport:
    report = CheckReport(
        scope=row["scope"],
        systems=list(row["systems"]),
        total=int(row["total"]),
        consistent=int(row["consistent"]),
        inconsistencies={**dict.fromkeys(KINDS, 0), **row["inconsistencies"]},
        per_system=dict(row["per_system"]),
        examples=list(row["examples"]),
        since=as_utc(row["since"]),
        duration_ms=float(row["duration_ms"]),
        id=int(row["id"]),
        complete=bool(row["complete"]),
        run=row["run"],
    )
    report.started_at = as_utc(row["started_at"]) or report.started_at
    report.created_at = as_utc(row["created_at"]) or report.created_at
    return report


def latest_report(
    engine: sa.Engine,
    *,
    scope: str | None = None,
    complete: bool = False,
    covering_since: datetime | None = None,
    not_scope: str | None = None,
    begun_last: bool = False,
    covering_all: bool = False,
) -> CheckReport | None:
    """The most recent stored report (of ``scope``, e.g. :data:`FULL_SCOPE`; not of
    ``not_scope``), or None; ``begun_last``: of the run begun last (:func:`_newest`);
    ``covering_all``: of every system (not a ``check --system``'s), among the
    :data:`COVERING_LOOKBACK` most recent.

    ``scope=None`` returns the most recent report whatever its scope; a phase gate that
    needs "everything is consistent" should ask for ``scope="all"`` and ``complete=True``
    (a run stopped by --max-duration is stored too, and covered only part of the keys).
    ``covering_since``: only reports of every change since then (no ``since``, or an
    earlier one), so a newer, narrower report (continuous verification) does not hide it.
    """
    R = check_reports
    q = sa.select(R).order_by(*_newest(begun_last))
    if scope is not None:
        q = q.where(R.c.scope == scope)
    if not_scope is not None:
        q = q.where(R.c.scope != not_scope)
    if complete:
        q = q.where(R.c.complete.is_(True))
    if covering_since is not None:
        q = q.where(sa.or_(R.c.since.is_(None), R.c.since <= covering_since))
    every = {s.value for s in LegacySystemType}
    with engine.connect() as conn:
        for row in conn.execute(q.limit(COVERING_LOOKBACK if covering_all else 1)).mappings():
            report = _from_row(row)
            if not covering_all or every <= set(report.systems or every):
                return report
    return None


def inconsistent_reports(
    engine: sa.Engine, *, scope: str, after: datetime | None
) -> Iterator[CheckReport]:
    """The stored reports of ``scope`` that found a row inconsistent, newest first,
    stored after ``after`` (None: any), among the :data:`COVERING_LOOKBACK` most recent."""
    R = check_reports
    q = sa.select(R).where(R.c.scope == scope, R.c.consistent < R.c.total)
    if after is not None:
        q = q.where(R.c.created_at > after)
    q = q.order_by(*_newest(False)).limit(COVERING_LOOKBACK)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    for row in rows:
        yield _from_row(row)


def full_check_starts(engine: sa.Engine) -> dict[LegacySystemType, datetime]:
    """When the full check of each system begun last began (a complete check of every
    row, not continuous verification): a system no such check covered is left out.
    Among the :data:`COVERING_LOOKBACK` checks begun last."""
    R = check_reports
    q = (
        sa.select(R.c.systems, R.c.started_at)
        .where(
            R.c.complete.is_(True),
            R.c.since.is_(None),
            R.c.scope != CONTINUOUS_SCOPE,
        )
        .order_by(*_newest(True))
        .limit(COVERING_LOOKBACK)
    )
    out: dict[LegacySystemType, datetime] = {}
    with engine.connect() as conn:
        for systems, started_at in conn.execute(q):
            began = as_utc(started_at)
            for system in LegacySystemType:
                if began is not None and (not systems or system.value in systems):
                    out.setdefault(system, began)
            if len(out) == len(LegacySystemType):
                break
    return out


def _newest(begun_last: bool) -> tuple[sa.UnaryExpression[Any], ...]:
    """Newest first: by when the report was stored, or (``begun_last``) by when its run
    began. A gate wants the latter: a run resumed after a kill is stored after a check
    begun later, and counted its first ranges before that check began; what the newer
    check saw (a mismatch since) must not be hidden by the older counts."""
    R = check_reports
    first = R.c.started_at if begun_last else R.c.created_at
    return first.desc(), R.c.id.desc()


# How many recent reports latest_report_for looks through for one covering a system.
COVERING_LOOKBACK = 200


def latest_report_for(
    engine: sa.Engine,
    system: LegacySystemType,
    *,
    full: bool,
    not_scope: str | None = None,
    partial_scope: str | None = None,
    begun_last: bool = False,
) -> CheckReport | None:
    """The most recent stored report that covered ``system`` (``full``: all its rows,
    no ``--since``), or None; a full check of every system covers each. ``begun_last``:
    of the run begun last (:func:`_newest`).

    An incomplete report (a run stopped by --max-duration) covered only part of the
    keys and is skipped, except a report of ``partial_scope``: a round of continuous
    verification is stored incomplete while any system's pass goes on, and its figures
    per system are each that system's own.
    """
    R = check_reports
    whole: sa.ColumnElement[bool] = R.c.complete.is_(True)
    if partial_scope is not None:
        whole = sa.or_(whole, R.c.scope == partial_scope)
    q = sa.select(R).order_by(*_newest(begun_last)).where(whole).limit(COVERING_LOOKBACK)
    if full:
        q = q.where(R.c.since.is_(None))
    if not_scope is not None:
        q = q.where(R.c.scope != not_scope)
    with engine.connect() as conn:
        for row in conn.execute(q).mappings():
            report = _from_row(row)
            if system.value in report.systems or not report.systems:
                return report
    return None
