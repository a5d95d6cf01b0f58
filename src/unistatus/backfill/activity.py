"""What each backfill worker is doing now, kept in the database for every process.

A worker writes its row of ``unistatus_backfill_workers`` (revision 0013) when it
starts, when it starts or stops holding back, and otherwise at most every
:data:`HEARTBEAT_SECONDS` between batches: the size of its next batch, its last batch,
the throttle decision in force (why, since when, the reading and the limit), every
probe's latest reading, and the seconds it has held back per reason (a counter that
only grows; the rows of workers gone for a week are folded into one, which keeps their
seconds: :func:`forget_old`). ``backfill status`` and ``/metrics`` read the rows
(:func:`read_workers`); the workers read how many of them are alive to share the
backfill's rate (:func:`live_workers`) and a p95 baseline learned by another
(:func:`shared_baseline`).

The row is reporting, never control: a failure to write it is logged and the copy
goes on (the laboratory rule: a failing publisher never breaks the work).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.backfill.health import GO, TRAFFIC, Decision, Readings
from unistatus.clock import as_utc
from unistatus.db.binding import connected
from unistatus.db.dialect import DialectOps
from unistatus.db.server_clock import database_now
from unistatus.db.tables_backfill import backfill_workers as W
from unistatus.errors import StorageError

log = logging.getLogger("unistatus.backfill")

HEARTBEAT_SECONDS = 1.0
# A worker whose row has not moved for this long is gone (killed): not alive.
ALIVE_SECONDS = 15.0
# Rows of workers gone for this long are folded into one when a worker starts
# (forget_old); that row's name is no host:pid.
FORGET_AFTER = timedelta(days=7)
FORGOTTEN = "unistatus:forgotten"

RUNNING = "running"
THROTTLED = "throttled"
PAUSED = "paused"
FINISHED = "finished"


@dataclass
class Activity:
    """One worker's row, written through ``ops`` in short transactions of its own."""

    ops: DialectOps
    worker: str
    batch_rows: int
    started_at: datetime | None = None  # its first write's time (the database's)
    state: str = RUNNING
    rows: int = 0
    last_batch_rows: int | None = None
    last_batch_ms: float | None = None
    decision: Decision = GO
    since: datetime | None = None
    readings: dict[str, Any] = field(default_factory=dict)
    throttled_seconds: dict[str, float] = field(default_factory=dict)
    _written_at: float | None = None
    _failed: bool = False

    def hold(self, decision: Decision, now: datetime) -> None:
        """The throttle decision now in force (``GO``: not held back)."""
        if decision.reason != self.decision.reason:
            self.since = now if decision.throttled else None
            self._written_at = None  # a change is written at once
        self.decision = decision
        if decision.throttled:
            self.state = THROTTLED
        elif self.state == THROTTLED:
            self.state = RUNNING

    def held(self, reason: str, seconds: float) -> None:
        if seconds > 0:
            self.throttled_seconds[reason] = self.throttled_seconds.get(reason, 0.0) + seconds

    def saw(self, readings: Readings, extra: dict[str, Any]) -> None:
        """The latest health readings and the limits they were judged by."""
        self.readings = {**self.readings, **readings.as_dict(), **extra}

    def tuned(self, values: dict[str, Any]) -> None:
        """The tuning in force (after a ``backfill tune``, the tuned values)."""
        if any(self.readings.get(k, object()) != v for k, v in values.items()):
            self._written_at = None  # written at once: the operator is watching
        self.readings = {**self.readings, **values}

    def batch(self, rows: int, seconds: float, next_rows: int) -> None:
        self.rows += rows
        self.last_batch_rows = rows
        self.last_batch_ms = round(seconds * 1000.0, 3)
        self.batch_rows = next_rows

    def write(self, clock: float, *, force: bool = False) -> None:
        """Store the row if it changed state or the heartbeat is due (``clock``: s)."""
        due = self._written_at is None or clock - self._written_at >= HEARTBEAT_SECONDS
        if not (force or due):
            return
        self._written_at = clock
        values = {
            "state": self.state,
            "batch_rows": int(self.batch_rows),
            "last_batch_rows": self.last_batch_rows,
            "last_batch_ms": self.last_batch_ms,
            "rows": self.rows,
            "throttle_reason": self.decision.reason,
            "throttle_since": self.since,
            "throttle_reading": self.decision.reading,
            "throttle_limit": self.decision.limit,
            "readings": self.readings or None,
            "throttled_seconds": {k: round(v, 3) for k, v in self.throttled_seconds.items()},
        }
        try:
            with self.ops.write_transaction() as conn:
                # The database's time: the other hosts judge it on theirs (a heartbeat of
                # a host behind read as gone, its share of the rate taken twice).
                now = database_now(conn)
                values |= {
                    "updated_at": now,
                    "finished_at": now if self.state == FINISHED else None,
                }
                started = self.started_at or now
                stmt = self.ops.insert(W).values(worker=self.worker, started_at=started, **values)
                conn.execute(stmt.on_conflict_do_update(index_elements=[W.c.worker], set_=values))
            self.started_at = started
        except sa.exc.DBAPIError as exc:
            if not self._failed:
                log.warning("cannot record the backfill worker's state: %s", exc.orig)
            self._failed = True

    def finish(self, clock: float) -> None:
        self.state = FINISHED
        self.decision, self.since = GO, None
        self.write(clock, force=True)


def forget_old(ops: DialectOps) -> None:
    """Fold the rows of workers gone for a week into one row, :data:`FORGOTTEN`.

    No reader needs those rows, but their held seconds are part of a Prometheus counter
    (``unistatus_backfill_throttle_seconds_total``, the sum over every row): removed,
    the counter went down, which reads as a reset, and ``rate()`` counted the whole
    remaining total again. The folded row keeps their sums (seconds per reason, rows),
    in the same transaction; it is finished and as old as they were, so it is no
    worker alive, and it is folded again with the next ones (as the operation
    statistics' :func:`unistatus.adapter.stats.prune` does). ``DELETE ... RETURNING``
    sums exactly the rows this call removed: two workers starting at once never both
    carry a row (the later one finds none left; should it find others, its insert of
    the folded row conflicts, it rolls back and leaves them for the next start).
    """
    try:
        with ops.write_transaction() as conn:
            old = W.c.updated_at < database_now(conn) - FORGET_AFTER
            returned = (W.c.started_at, W.c.updated_at, W.c.rows, W.c.throttled_seconds)
            rows = conn.execute(sa.delete(W).where(old).returning(*returned)).all()
            if rows:
                conn.execute(sa.insert(W).values(**_folded(rows)))
    except sa.exc.DBAPIError as exc:
        log.warning("cannot prune the backfill workers' rows: %s", exc.orig)


def _folded(rows: Sequence[sa.Row[Any]]) -> dict[str, Any]:
    """The one row that keeps what the forgotten ``rows`` counted."""
    held: dict[str, float] = {}
    for row in rows:
        for reason, seconds in (row.throttled_seconds or {}).items():
            held[reason] = round(held.get(reason, 0.0) + float(seconds), 3)
    last = max(row.updated_at for row in rows)
    return {
        "worker": FORGOTTEN,
        "state": FINISHED,
        "batch_rows": 0,
        "rows": sum(int(row.rows or 0) for row in rows),
        "throttled_seconds": held,
        "started_at": min(row.started_at for row in rows),
        "updated_at": last,
        "finished_at": last,
    }


# How long a worker that has not finished may have been silent and still be in a batch
# (a batch runs up to the statement timeout, retried, or a throttle hold).
MAYBE_BUSY_SECONDS = 300.0


def _alive(now: datetime, seconds: float = ALIVE_SECONDS) -> sa.ColumnElement[bool]:
    """Not finished, and heard from within ``seconds``."""
    return sa.and_(W.c.state != FINISHED, W.c.updated_at > now - timedelta(seconds=seconds))


def live_workers(conn: sa.Connection) -> int:
    """How many workers (every host) are alive now and copying, not waiting beside live
    traffic (an extra worker: it takes no share of the rate); at least 1 (the one asking)."""
    copying = W.c.throttle_reason.is_distinct_from(TRAFFIC)
    alive = _alive(database_now(conn))
    count = conn.execute(sa.select(sa.func.count()).where(alive, copying)).scalar_one()
    return max(1, int(count))


def shared_baseline(engine: sa.Engine, worker: str) -> float | None:
    """The p95 baseline the other live workers (every host) judge live writes by, the
    lowest if they differ (the stricter); None: none has one. A worker that joins a
    backfill after live traffic began takes it, instead of learning a p95 already
    raised by the workers copying."""
    try:
        with engine.connect() as conn:
            q = sa.select(W.c.readings).where(_alive(database_now(conn)), W.c.worker != worker)
            readings = conn.execute(q).scalars().all()
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot read the other backfill workers: {exc.orig}") from None
    found = [
        float(value)
        for r in readings
        if isinstance(r, dict)
        and isinstance(value := r.get("baseline_p95_ms"), int | float)
        and not isinstance(value, bool)
    ]
    return min(found, default=None)


def workers_maybe_busy(conn: sa.Connection) -> int:
    """Workers that have not said they finished and were heard from lately
    (:data:`MAYBE_BUSY_SECONDS`): alive, or in a batch longer than a heartbeat, or
    killed just now. None of them: every worker of the backfill ended on its own."""
    busy = _alive(database_now(conn), MAYBE_BUSY_SECONDS)
    return int(conn.execute(sa.select(sa.func.count()).where(busy)).scalar_one())


def read_workers(
    bind: sa.Engine | sa.Connection, *, include_finished: bool = False
) -> list[dict[str, Any]]:
    """Every worker's row, alive ones first; ``alive`` says whether it still beats
    (``bind``: an engine, or a connection to read in its transaction)."""
    try:
        with connected(bind) as conn:
            now = database_now(conn)
            q = sa.select(W, _alive(now).label("alive")).order_by(W.c.started_at, W.c.worker)
            rows = conn.execute(q).mappings().all()
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot read the backfill workers: {exc.orig}") from None
    out = []
    for r in rows:
        alive = bool(r["alive"])
        if not alive and not include_finished:
            continue
        since = as_utc(r["throttle_since"])
        out.append(
            {
                "worker": r["worker"],
                "state": r["state"] if alive or r["state"] == FINISHED else "gone",
                "alive": alive,
                "batch_rows": r["batch_rows"],
                "last_batch_rows": r["last_batch_rows"],
                "last_batch_ms": r["last_batch_ms"],
                "rows": int(r["rows"] or 0),
                "throttle": {
                    "reason": r["throttle_reason"],
                    "since": since.isoformat() if since else None,
                    "seconds": round((now - since).total_seconds(), 1) if since else None,
                    "reading": r["throttle_reading"],
                    "limit": r["throttle_limit"],
                },
                "readings": r["readings"] or {},
                "throttled_seconds": r["throttled_seconds"] or {},
                "started_at": (as_utc(r["started_at"]) or now).isoformat(),
                "updated_at": (as_utc(r["updated_at"]) or now).isoformat(),
            }
        )
    return sorted(out, key=lambda w: not w["alive"])
