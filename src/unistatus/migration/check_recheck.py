"""The re-check of what looks inconsistent: the pairs still inconsistent once no write
to them is in flight (docs/check.md, "A write in flight is no mismatch")."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import sqlalchemy as sa

from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import LegacyTable
from unistatus.db.tables import unified_transactions as U
from unistatus.migration.check_sql import InconsistentRow, inconsistent_rows, pair_flags

__all__ = ["RECHECK_BATCH", "recheck"]

# Keys re-read per transaction: short locks, few round trips.
RECHECK_BATCH = 500


def recheck(
    ops: DialectOps,
    lt: LegacyTable,
    keys: Sequence[int],
    *,
    since: datetime | None,
    project_pending: bool,
    statement_ms: int,
    lock_ms: int,
) -> Iterator[InconsistentRow]:
    """The pairs of ``keys`` that are still inconsistent once no write to them is in flight.

    A pair seen inconsistent may be a write caught half-way (its writer still holds the
    entity). Each batch is re-read after taking the entity's rows ``FOR SHARE``, legacy
    first as the adapter locks them: that waits for the writer's commit, and the re-read
    judges the rows as they are then (SQLite: the whole file, :meth:`DialectOps.locked_read`).
    A row still locked after ``lock_ms`` is judged as committed, without the lock.
    """
    system = lt.system
    for start in range(0, len(keys), RECHECK_BATCH):
        batch = list(keys[start : start + RECHECK_BATCH])
        pairs = pair_flags(lt, since=since, project_pending=project_pending, keys=batch)
        try:
            with ops.locked_read() as conn:
                ops.bound_statements(conn, statement_ms, lock_ms)
                conn.execute(
                    sa.select(lt.id)
                    .where(lt.id.in_(batch))
                    .order_by(lt.id)
                    .with_for_update(read=True)
                ).all()
                conn.execute(
                    sa.select(U.c.id)
                    .where(U.c.legacy_system == system.value, U.c.legacy_id.in_(batch))
                    .order_by(U.c.legacy_id)
                    .with_for_update(read=True)
                ).all()
                rows = inconsistent_rows(conn, pairs, system, None)
        except sa.exc.OperationalError:  # lock timeout or deadlock: what is committed
            with ops.engine.connect() as conn:
                rows = inconsistent_rows(conn, pairs, system, None)
        yield from rows
