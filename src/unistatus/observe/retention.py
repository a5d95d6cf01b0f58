"""Retention: what grows with traffic is deleted once it is older than it is useful.

Two tables grow with every day of live traffic and were kept forever:

- ``unistatus_idempotency_keys``: a row per create sent with a key. A key protects a
  retry; once it is older than any client retries, it only takes space. Deleted after
  ``retention.idempotency_keys_days`` (30): a deleted key is new again, as with Stripe's
  keys (kept 24 hours).
- ``unistatus_check_reports`` of continuous verification: a report per monitor
  evaluation that saw changes (thousands a day). Deleted after
  ``retention.verification_reports_days`` (7), except the newest (in the readers' order:
  ``created_at``, then ``id``) and those that found a mismatch no full check has begun
  after, which the alerts, dashboards and ``diagnose`` judge by
  (:func:`unistatus.migration.verify.judged_report`). Reports of ``unistatus check`` runs
  are few and kept: they are the migration's record.

``0`` keeps a table's rows forever. The monitor (``monitor``, ``serve``) prunes after
an evaluation, every few minutes, and at once again while a call left rows behind
(:meth:`unistatus.observe.alerts.Monitor.housekeep`); ``unistatus monitor --once`` does
it once. Each batch is its own short transaction, bounded by the configured statement
and lock timeouts, and each call deletes at most ``max_rows`` rows per table, so a first
run on a table years deep catches up over several calls instead of holding locks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.config import RetentionSettings, Settings
from unistatus.db.dialect import ops_for
from unistatus.db.tables_check import check_reports
from unistatus.db.tables_idempotency import idempotency_keys
from unistatus.migration.check_reports import CONTINUOUS_SCOPE, FULL_SCOPE

__all__ = [
    "BATCH_ROWS",
    "MAX_ROWS_PER_CALL",
    "RETAINED",
    "Pruned",
    "Retained",
    "prune",
    "prune_table",
]

# Rows per DELETE (one short transaction each) and per table per call.
BATCH_ROWS = 5_000
MAX_ROWS_PER_CALL = 50_000


@dataclass(frozen=True)
class Retained:
    """A table kept for a while: what its rows are, its retention in days, and the
    keys of its rows stamped before a cutoff that may go (oldest first)."""

    what: str
    days: Callable[[RetentionSettings], float]
    table: sa.Table
    key: sa.ColumnElement[object]
    old: Callable[[datetime], sa.Select[tuple[object]]]


def _old_keys(cutoff: datetime) -> sa.Select[tuple[object]]:
    K = idempotency_keys
    return sa.select(K.c.key).where(K.c.created_at < cutoff).order_by(K.c.created_at)


def _old_reports(cutoff: datetime) -> sa.Select[tuple[object]]:
    """Continuous verification reports but the newest, in the readers' order."""
    R = check_reports
    continuous = R.c.scope == CONTINUOUS_SCOPE
    newest = (
        sa.select(R.c.id)
        .where(continuous)
        .order_by(R.c.created_at.desc(), R.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    # A round's mismatch is judged until a full check begun after it (verify.judged_report):
    # kept until then however old (else the alert it fired resolved when it was pruned).
    checked = (
        sa.select(sa.func.max(R.c.started_at))
        .where(R.c.scope == FULL_SCOPE, R.c.complete.is_(True), R.c.since.is_(None))
        .scalar_subquery()
    )
    cleared = sa.or_(R.c.consistent >= R.c.total, R.c.created_at <= checked)
    return (
        sa.select(R.c.id)
        .where(continuous, R.c.created_at < cutoff, R.c.id != newest, cleared)
        .order_by(R.c.created_at)
    )


RETAINED = (
    Retained(
        "idempotency keys",
        lambda keep: keep.idempotency_keys_days,
        idempotency_keys,
        idempotency_keys.c.key,
        _old_keys,
    ),
    Retained(
        "verification reports",
        lambda keep: keep.verification_reports_days,
        check_reports,
        check_reports.c.id,
        _old_reports,
    ),
)
IDEMPOTENCY_KEYS, VERIFICATION_REPORTS = RETAINED


@dataclass(frozen=True)
class Pruned:
    """How many rows one :func:`prune` call deleted, per table, and whether it stopped
    at ``max_rows`` on either (rows past their retention may remain)."""

    idempotency_keys: int = 0
    verification_reports: int = 0
    more: bool = False

    @property
    def total(self) -> int:
        return self.idempotency_keys + self.verification_reports


def prune(
    engine: sa.Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    batch_rows: int = BATCH_ROWS,
    max_rows: int = MAX_ROWS_PER_CALL,
) -> Pruned:
    """Delete the idempotency keys and continuous verification reports older than their
    retention (``settings.retention``); how many of each."""
    now = now or utcnow()
    keys, reports = (
        prune_table(engine, settings, t, now=now, batch_rows=batch_rows, max_rows=max_rows)
        for t in (IDEMPOTENCY_KEYS, VERIFICATION_REPORTS)
    )
    return Pruned(keys, reports, more=max_rows in (keys, reports))


def prune_table(
    engine: sa.Engine,
    settings: Settings,
    retained: Retained,
    *,
    now: datetime | None = None,
    batch_rows: int = BATCH_ROWS,
    max_rows: int = MAX_ROWS_PER_CALL,
) -> int:
    """Delete ``retained``'s rows older than its retention (0 days: none), the oldest
    first, ``batch_rows`` per transaction, at most ``max_rows`` in all; how many."""
    days = retained.days(settings.retention)
    if days <= 0:
        return 0
    old = retained.old((now or utcnow()) - timedelta(days=days))
    ops = ops_for(engine)
    deleted = 0
    while deleted < max_rows:
        size = min(batch_rows, max_rows - deleted)
        with engine.begin() as conn:
            ops.bound_batch(conn, settings.statement_timeout_ms, settings.lock_timeout_ms)
            batch = old.limit(size).scalar_subquery()
            n = conn.execute(sa.delete(retained.table).where(retained.key.in_(batch))).rowcount
        deleted += n
        if n < size:
            break
    return deleted
