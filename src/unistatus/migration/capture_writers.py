"""Who wrote bypassing unistatus: the capture's writer counts, read and folded.

The capture's triggers count each writer per target and session
(:data:`unistatus.db.tables_capture.capture_writers`); :func:`writers_seen` sums them
for ``capture status``, metrics, the dashboards and the phase-4 gate, and
:func:`fold_writers` folds the rows of sessions gone quiet. docs/capture.md, "Writers
seen".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by

from unistatus.clock import as_utc
from unistatus.db.cte_names import cte_name
from unistatus.db.dialect import ops_for
from unistatus.db.tables_capture import capture_writers
from unistatus.migration.capture_context import added_counts
from unistatus.migration.capture_sql import UNIFIED_TARGET

__all__ = [
    "FOLD_AFTER",
    "WriterSeen",
    "fold_writers",
    "foreign_unified_writes",
    "writers_seen",
]

W = capture_writers
# A session's writer counts not written for this long are folded into one row per writer
# and target (:func:`fold_writers`): the shard the folded counts go to (PostgreSQL backend
# pids are never 0; SQLite writes shard 0 only and has nothing to fold).
FOLD_AFTER = timedelta(hours=1)
FOLDED_SHARD = 0
# Bounds of the fold's transaction: it skips the rows writers hold, and waits only for
# another fold's folded row.
FOLD_STATEMENT_MS = 30_000
FOLD_LOCK_MS = 2_000


@dataclass(frozen=True)
class WriterSeen:
    """A writer seen bypassing unistatus on one target (a legacy system, or ``UNIFIED``
    for direct writes to ``unified_transactions``), over every session."""

    writer: str
    system: str
    writes: int
    flagged: int
    unmappable: int
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    last_mode: str
    client_addr: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "writer": self.writer,
            "system": self.system,
            "writes": self.writes,
            "flagged": self.flagged,
            "unmappable": self.unmappable,
            "first_seen_at": self.first_seen_at.isoformat() if self.first_seen_at else None,
            "last_seen_at": self.last_seen_at.isoformat() if self.last_seen_at else None,
            "last_mode": self.last_mode,
            "client_addr": self.client_addr,
        }


def writers_seen(
    database: sa.Engine | sa.Connection, *, since: datetime | None = None
) -> list[WriterSeen]:
    """Every writer seen bypassing unistatus, per target, summed over sessions; the
    most recent first. ``since``: only those seen since then (a soak window)."""
    q = sa.select(
        W.c.writer,
        W.c.system,
        sa.func.sum(W.c.writes),
        sa.func.sum(W.c.flagged),
        sa.func.sum(W.c.unmappable),
        sa.func.min(W.c.first_seen_at),
        sa.func.max(W.c.last_seen_at),
    ).group_by(W.c.writer, W.c.system)
    if since is not None:
        q = q.having(sa.func.max(W.c.last_seen_at) >= since)
    if isinstance(database, sa.Engine):
        with database.connect() as conn:
            return _writers(conn, q)
    return _writers(database, q)


def _writers(conn: sa.Connection, q: sa.Select[Any]) -> list[WriterSeen]:
    rows = conn.execute(q).all()
    latest = {
        (r.writer, r.system): (r.last_mode, r.client_addr)
        for r in conn.execute(
            sa.select(W.c.writer, W.c.system, W.c.last_mode, W.c.client_addr).order_by(
                W.c.last_seen_at
            )
        )
    }
    out = [
        WriterSeen(
            writer=writer,
            system=system,
            writes=int(writes),
            flagged=int(flagged),
            unmappable=int(unmappable),
            first_seen_at=as_utc(first),
            last_seen_at=as_utc(last),
            last_mode=latest[(writer, system)][0],
            client_addr=latest[(writer, system)][1],
        )
        for writer, system, writes, flagged, unmappable, first, last in rows
    ]
    return sorted(out, key=lambda w: (w.last_seen_at is None, w.last_seen_at), reverse=True)


def fold_writers(engine: sa.Engine, *, older_than: timedelta = FOLD_AFTER) -> int:
    """Fold the writer counts of sessions not seen for ``older_than`` into one row per
    writer and target; how many rows were folded. Readers' totals do not change.

    The counts are kept per session so that concurrent writers never wait for each
    other, which leaves a row per connection a writer ever made (a cron job connecting
    anew each run: one a run), all read by ``/metrics`` and the monitor. One statement
    deletes the old rows and adds what it deleted to the folded row. It never waits for
    a writer: a row a session's open transaction holds is skipped (``SKIP LOCKED``; it
    is recent once that commits, and folded later if it goes quiet), so no writer queues
    behind the fold and nothing is counted twice or lost.
    """
    if engine.dialect.name != "postgresql":
        return 0
    ops = ops_for(engine)
    quiet = (
        sa.select(W.c.writer, W.c.system, W.c.shard)
        .where(W.c.shard != FOLDED_SHARD, W.c.last_seen_at < sa.func.now() - older_than)
        .with_for_update(skip_locked=True)
    )
    key = sa.tuple_(W.c.writer, W.c.system, W.c.shard)
    gone = sa.delete(W).where(key.in_(quiet)).returning(*W.c).cte(cte_name("gone"))

    def newest(column: sa.ColumnElement[Any]) -> Any:
        """The value of the most recently seen of the folded rows."""
        ordered = aggregate_order_by(column, gone.c.last_seen_at.desc())
        return sa.func.array_agg(ordered, type_=ARRAY(column.type))[1]

    folded = sa.select(
        gone.c.writer,
        gone.c.system,
        sa.literal(FOLDED_SHARD, sa.BigInteger),
        sa.func.sum(gone.c.writes),
        sa.func.sum(gone.c.flagged),
        sa.func.sum(gone.c.unmappable),
        sa.func.min(gone.c.first_seen_at),
        sa.func.max(gone.c.last_seen_at),
        newest(gone.c.last_mode),
        newest(gone.c.client_addr),
    ).group_by(gone.c.writer, gone.c.system)
    insert = ops.insert(W).from_select([c.name for c in W.c], folded)
    newer = insert.excluded.last_seen_at > W.c.last_seen_at
    added = insert.on_conflict_do_update(
        index_elements=[W.c.writer, W.c.system, W.c.shard],
        set_={
            **added_counts(insert),
            "first_seen_at": sa.func.least(W.c.first_seen_at, insert.excluded.first_seen_at),
            "last_seen_at": sa.func.greatest(W.c.last_seen_at, insert.excluded.last_seen_at),
            "last_mode": sa.case((newer, insert.excluded.last_mode), else_=W.c.last_mode),
            "client_addr": sa.case((newer, insert.excluded.client_addr), else_=W.c.client_addr),
        },
    ).cte(cte_name("added"))
    # The data-modifying CTEs run to completion whatever the main query reads.
    statement = sa.select(sa.func.count()).select_from(gone).add_cte(added)
    with ops.write_transaction() as conn:
        ops.bound_statements(conn, FOLD_STATEMENT_MS, FOLD_LOCK_MS)
        return int(conn.execute(statement).scalar_one())


def foreign_unified_writes(engine: sa.Engine) -> int:
    """Rows of ``unified_transactions`` written directly, not through unistatus."""
    return sum(w.writes for w in writers_seen(engine) if w.system == UNIFIED_TARGET)
