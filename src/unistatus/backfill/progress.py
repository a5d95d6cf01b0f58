"""Backfill progress per system, read from the database by any process.

Progress is derived from the chunk table (the checkpoint itself), so it can never
disagree with what has really been committed, and no worker contends on a counter row.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.backfill.activity import workers_maybe_busy
from unistatus.backfill.control import is_paused
from unistatus.backfill.plan import COMPLETE, DONE, RUNNING
from unistatus.clock import as_utc
from unistatus.config import Settings
from unistatus.db.server_clock import database_now
from unistatus.db.tables_backfill import backfill_chunks as CH
from unistatus.db.tables_backfill import backfill_jobs as J
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import StorageError

RATE_WINDOW_SECONDS = 10.0
STALLED_AFTER_SECONDS = 60.0
INTERRUPTED = "interrupted"


def progress(engine: sa.Engine, settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """``{system: {total, done, percent, complete, state, rows_per_second, ...}}``.

    ``state``: not_started, running, paused, interrupted (not complete, and every worker
    on every host ended on its own: Ctrl-C, an error; rerun to resume), stalled (nothing
    committed for a minute while a worker had not said it ended: killed, or stuck),
    complete. ``rows_per_second`` and ``eta_seconds`` are None while the job is not
    complete and no worker may be copying (interrupted, or paused with none left).
    """
    recent = sa.bindparam("recent", type_=CH.c.done_at.type)
    done = CH.c.state == DONE

    def done_sum(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((done, col), else_=0)), 0)

    agg = sa.select(
        CH.c.system,
        done_sum(CH.c.rows).label("done"),
        done_sum(CH.c.inserted).label("inserted"),
        done_sum(CH.c.already_present).label("already_present"),
        done_sum(CH.c.quarantined).label("quarantined"),
        sa.func.coalesce(
            sa.func.sum(sa.case((sa.and_(done, CH.c.done_at >= recent), CH.c.rows), else_=0)), 0
        ).label("recent"),
        sa.func.count().label("chunks"),
        sa.func.coalesce(sa.func.sum(sa.case((done, 1), else_=0)), 0).label("chunks_done"),
        sa.func.max(CH.c.done_at).label("last_done_at"),
    ).group_by(CH.c.system)
    try:
        with engine.connect() as conn:
            # The database's time: the chunks' and the job's are stamped on it.
            now = database_now(conn)
            jobs = {r.system: r for r in conn.execute(sa.select(J))}
            rate_since = now - timedelta(seconds=RATE_WINDOW_SECONDS)
            chunks = {r.system: r for r in conn.execute(agg, {"recent": rate_since})}
            paused_of = {system: is_paused(conn, system) for system in LegacySystemType}
            workers_busy = workers_maybe_busy(conn)
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read backfill progress: {exc.orig}") from None
    out: dict[str, dict[str, Any]] = {}
    for system in LegacySystemType:
        paused = paused_of[system]  # all of the backfill, or this system's
        job, c = jobs.get(system.value), chunks.get(system.value)
        if job is None or job.state not in (RUNNING, COMPLETE):
            out[system.value] = _not_started(paused)
            continue
        total = int(job.total)
        done_rows = int(c.done) if c else 0
        # Every chunk done is complete even if the last worker died before saying so.
        complete = job.state == COMPLETE or (c is not None and c.chunks == c.chunks_done)
        started = as_utc(job.started_at) or now
        last = max(filter(None, [as_utc(c.last_done_at) if c else None, as_utc(job.updated_at)]))
        if complete:
            finished = as_utc(job.finished_at) or last
            elapsed = max((finished - started).total_seconds(), 1e-6)
            rate: float | None = 0.0
            avg = done_rows / elapsed
            state = COMPLETE
        else:
            window = min(RATE_WINDOW_SECONDS, max((now - started).total_seconds(), 1e-6))
            rate = _current_rate(int(c.recent) if c else 0, window, bool(workers_busy))
            avg = done_rows / max((now - started).total_seconds(), 1e-6)
            idle = (now - last).total_seconds()
            if paused:
                state = "paused"
            elif not workers_busy:  # every worker ended (Ctrl-C, an error): rerun to resume
                state = INTERRUPTED
            else:
                state = "stalled" if idle > STALLED_AFTER_SECONDS else RUNNING
        remaining = max(total - done_rows, 0)
        finished_at = as_utc(job.finished_at)
        out[system.value] = {
            "state": state,
            "complete": complete,
            "total": total,
            "done": done_rows,
            "percent": 100.0 if total == 0 else round(100.0 * done_rows / total, 2),
            "inserted": int(c.inserted) if c else 0,
            "already_present": int(c.already_present) if c else 0,
            "quarantined": int(c.quarantined) if c else 0,
            "chunks": int(c.chunks) if c else 0,
            "chunks_done": int(c.chunks_done) if c else 0,
            "high_water_mark": job.high_water_mark,
            "batch_size": int(job.batch_size),
            "rows_per_second": None if rate is None else round(rate, 1),
            "average_rows_per_second": round(avg, 1),
            "eta_seconds": round(remaining / rate, 1) if rate and remaining else None,
            "run_id": job.run_id,
            "started_at": started.isoformat(),
            "updated_at": last.isoformat(),
            "finished_at": finished_at.isoformat() if finished_at else None,
            # The job's finish time; before it is recorded (its last worker died), the
            # start of the last batch that marked a chunk done.
            "completed_at": finished.isoformat() if complete else None,
            "paused": paused,
        }
    return out


def _current_rate(recent_rows: int, window: float, workers_busy: bool) -> float | None:
    """Rows/s over the last ``window`` seconds, or None: no worker may be copying.

    With every worker ended (Ctrl-C, an error), the rows of the window are their last
    batches: shown as the rate, with an ETA from it, they told of a job nobody runs that
    it would finish on its own in seconds (found by a probe).
    """
    return recent_rows / window if workers_busy else None


def _not_started(paused: bool) -> dict[str, Any]:
    return {
        "state": "not_started",
        "complete": False,
        "total": 0,
        "done": 0,
        "percent": 0.0,
        "inserted": 0,
        "already_present": 0,
        "quarantined": 0,
        "chunks": 0,
        "chunks_done": 0,
        "high_water_mark": None,
        "batch_size": None,
        "rows_per_second": 0.0,
        "average_rows_per_second": 0.0,
        "eta_seconds": None,
        "run_id": None,
        "started_at": None,
        "updated_at": None,
        "finished_at": None,
        "paused": paused,
    }
