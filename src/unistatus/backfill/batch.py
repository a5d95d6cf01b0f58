"""One batch: claim a chunk, copy it, quarantine its unmappable rows, checkpoint it.

The statements are built and compiled once per legacy table, with bind parameters for
the checkpoint values, so a batch costs the database's time, not SQLAlchemy's.

Where the dialect has data-modifying CTEs (PostgreSQL), the whole batch is ONE
statement and one round trip: the chunk is claimed (``FOR UPDATE SKIP LOCKED``), its
legacy range read once, the mappable rows inserted into ``unified_transactions`` (``ON
CONFLICT DO NOTHING``), the unmappable ones quarantined, and the chunk row marked done
with the counts, which ``RETURNING`` hands back. Elsewhere (SQLite, where the write
transaction already serialises writers) the same work is five statements in the
batch's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.backfill.control import paused_clause
from unistatus.backfill.plan import DONE, PENDING
from unistatus.backfill.statements import (
    QUARANTINE_COLUMNS,
    backfilled_row,
    in_range,
    insert_select,
    mapped_status,
    quarantine_insert,
    requarantine,
    status_column,
    unified_insert,
    unmappable_reason,
)
from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import LEGACY_COLUMNS, LegacyTable
from unistatus.db.prepared import Prepared
from unistatus.db.tables import UTC
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_chunks as CH
from unistatus.db.tables_backfill import backfill_quarantine as Q

START = sa.bindparam("bf_start", type_=sa.BigInteger)
END = sa.bindparam("bf_end", type_=sa.BigInteger)
NOW = sa.bindparam("bf_now", type_=UTC)
WORKER = sa.bindparam("bf_worker", type_=sa.String)
ATTEMPTS = sa.bindparam("bf_attempts", type_=sa.Integer)


@dataclass(frozen=True)
class Copied:
    """A chunk copied and checkpointed in the caller's transaction."""

    start_id: int
    end_id: int
    rows: int  # planned rows of the chunk (what progress counts)
    inserted: int
    already_present: int
    quarantined: int


class ChunkCopier:
    """Claims and copies the chunks of one legacy table, one per call."""

    def __init__(self, ops: DialectOps, lt: LegacyTable) -> None:
        self.ops = ops
        self.lt = lt
        self._done = {"state": DONE, "worker": WORKER, "attempts": ATTEMPTS, "done_at": NOW}
        self._prepared: dict[str, Prepared] | None = None

    def claim_and_copy(
        self, conn: sa.Connection, *, worker: str, attempts: int, now: datetime
    ) -> Copied | None:
        """Copy the next pending chunk of this table; None when none is free (or paused)."""
        if self._prepared is None:
            self._prepared = self._prepare(conn)
        run = self._prepared
        params: dict[str, Any] = {"bf_now": now, "bf_worker": worker, "bf_attempts": attempts}
        if "one" in run:
            row = run["one"].execute(conn, params).first()
            return None if row is None else Copied(*(int(v) for v in row))
        chunk = run["claim"].execute(conn, {}).first()
        if chunk is None:
            return None
        start_id, end_id, rows = (int(v) for v in chunk)
        params.update(bf_start=start_id, bf_end=end_id)
        inserted = run["insert"].execute(conn, params).rowcount
        quarantined = run["quarantine"].execute(conn, params).rowcount
        present = int(run["count"].execute(conn, params).scalar_one())
        already = max(0, present - inserted - quarantined)
        run["mark"].execute(
            conn,
            {
                **params,
                "bf_inserted": inserted,
                "bf_already": already,
                "bf_quarantined": quarantined,
            },
        )
        return Copied(start_id, end_id, rows, inserted, already, quarantined)

    def _claim(self) -> sa.Select[Any]:
        claim = (
            sa.select(CH.c.start_id, CH.c.end_id, CH.c.rows)
            .where(
                CH.c.system == self.lt.system.value,
                CH.c.state == PENDING,
                ~paused_clause(self.lt.system),  # while paused nothing is claimable
            )
            .order_by(CH.c.start_id)
            .limit(1)
        )
        # SKIP LOCKED: a chunk another worker holds is not waited for, the next is taken.
        return claim.with_for_update(skip_locked=True) if self.ops.supports_skip_locked else claim

    def _prepare(self, bind: sa.Connection) -> dict[str, Prepared]:
        if self.ops.supports_dml_cte:
            return {"one": Prepared(self._one_statement(), bind)}
        lt, ops = self.lt, self.ops
        where = in_range(lt, START, END)
        mark = (
            sa.update(CH)
            .where(CH.c.system == lt.system.value, CH.c.start_id == START)
            .values(
                inserted=sa.bindparam("bf_inserted", type_=sa.Integer),
                already_present=sa.bindparam("bf_already", type_=sa.Integer),
                quarantined=sa.bindparam("bf_quarantined", type_=sa.Integer),
                **self._done,
            )
        )
        return {
            "claim": Prepared(self._claim(), bind),
            "insert": Prepared(unified_insert(ops, lt, where), bind),
            "quarantine": Prepared(quarantine_insert(ops, lt, where, NOW), bind),
            "count": Prepared(sa.select(sa.func.count()).where(where), bind),
            "mark": Prepared(mark, bind),
        }

    def _one_statement(self) -> Any:
        lt, ops = self.lt, self.ops
        system = lt.system
        claim = self._claim().cte("claim")
        src = (
            sa.select(
                *(lt.column(name).label(name) for name in LEGACY_COLUMNS if name != "status"),
                status_column(lt).label("raw"),
                mapped_status(lt).label("mapped"),
            )
            .select_from(lt.table.join(claim, in_range(lt, claim.c.start_id, claim.c.end_id)))
            .cte("src")
        )
        # The legacy row as the plain INSERT reads it (statements.unified_insert), its
        # status column under the name "raw" beside the status it maps to.
        legacy = {name: src.c["raw" if name == "status" else name] for name in LEGACY_COLUMNS}
        ins = (
            insert_select(
                ops, backfilled_row(system, legacy, src.c.mapped), src.c.mapped.is_not(None)
            )
            .returning(U.c.id)
            .cte("ins")
        )
        q_select = sa.select(
            sa.literal(system.value, sa.String),
            src.c.id,
            src.c.raw,
            unmappable_reason(system, src.c.raw),
            NOW,
            NOW,
        ).where(src.c.mapped.is_(None))
        q_stmt = ops.insert(Q).from_select(QUARANTINE_COLUMNS, q_select)
        qins = (
            q_stmt.on_conflict_do_update(
                index_elements=[Q.c.system, Q.c.legacy_id], set_=requarantine(q_stmt)
            )
            .returning(Q.c.legacy_id)
            .cte("qins")
        )
        n_ins = sa.select(sa.func.count()).select_from(ins).scalar_subquery()
        n_q = sa.select(sa.func.count()).select_from(qins).scalar_subquery()
        n_mappable = (
            sa.select(sa.func.count()).select_from(src).where(src.c.mapped.is_not(None))
        ).scalar_subquery()
        return (
            sa.update(CH)
            .where(CH.c.system == system.value, CH.c.start_id == claim.c.start_id)
            .values(
                inserted=n_ins,
                already_present=n_mappable - n_ins,
                quarantined=n_q,
                **self._done,
            )
            .returning(
                CH.c.start_id,
                CH.c.end_id,
                CH.c.rows,
                CH.c.inserted,
                CH.c.already_present,
                CH.c.quarantined,
            )
            .add_cte(claim, src, ins, qins)
        )
