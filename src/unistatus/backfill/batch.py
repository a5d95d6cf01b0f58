"""One batch: claim chunks, copy them, quarantine their unmappable rows, checkpoint them.

A batch claims as many consecutive pending chunks as its size asks for (one, with
fixed batches; :mod:`unistatus.backfill.sizing` decides), so the chunks planned once
stay the unit of the checkpoint while the batches grow and shrink. The chunks of one
batch turn ``done`` in its transaction; its counts are recorded on its first chunk.

The statements are built and compiled once per legacy table, with bind parameters for
the checkpoint values, so a batch costs the database's time, not SQLAlchemy's.

Where the dialect has data-modifying CTEs (PostgreSQL), the whole batch is ONE
statement and one round trip: the chunks are claimed (``FOR UPDATE SKIP LOCKED``), their
legacy ranges read once, the mappable rows inserted into ``unified_transactions`` (``ON
CONFLICT DO NOTHING``), the unmappable ones quarantined, and the chunk rows marked done
with the counts, which ``RETURNING`` hands back. Elsewhere (SQLite, where the write
transaction already serialises writers) the same work is a few statements per run of
adjacent chunks in the batch's transaction.
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
    quarantined_raw,
    requarantine,
    shared_fields,
    status_column,
    unified_insert,
    unmappable_reason,
)
from unistatus.db.cte_names import cte_name
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
CHUNKS = sa.bindparam("bf_chunks", type_=sa.Integer)


@dataclass(frozen=True)
class Copied:
    """Chunks copied and checkpointed in the caller's transaction (one batch)."""

    start_id: int  # of the first chunk
    end_id: int  # of the last chunk
    rows: int  # planned rows of the chunks (what progress counts)
    inserted: int
    already_present: int
    quarantined: int
    chunks: int = 1


def _summed(rows: list[tuple[int, ...]]) -> Copied | None:
    """One batch's figures from its chunks' rows (start, end, rows, counts...)."""
    if not rows:
        return None
    rows_, inserted, already, quarantined = (sum(r[i] for r in rows) for i in range(2, 6))
    return Copied(
        min(r[0] for r in rows),
        max(r[1] for r in rows),
        rows_,
        inserted,
        already,
        quarantined,
        chunks=len(rows),
    )


def _adjacent_runs(chunks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Claimed chunks (start, end), sorted, merged where one ends just before the next."""
    runs: list[tuple[int, int]] = []
    for start, end in sorted(chunks):
        if runs and runs[-1][1] + 1 == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


class ChunkCopier:
    """Claims and copies the chunks of one legacy table, one per call."""

    def __init__(self, ops: DialectOps, lt: LegacyTable) -> None:
        self.ops = ops
        self.lt = lt
        self._done = {"state": DONE, "worker": WORKER, "attempts": ATTEMPTS, "done_at": NOW}
        self._prepared: dict[str, Prepared] | None = None

    def claim_and_copy(
        self, conn: sa.Connection, *, worker: str, attempts: int, now: datetime, chunks: int = 1
    ) -> Copied | None:
        """Copy the next ``chunks`` pending chunks of this table (fewer if fewer are
        free); None when none is free (or the backfill is paused)."""
        if self._prepared is None:
            self._prepared = self._prepare(conn)
        run = self._prepared
        params: dict[str, Any] = {
            "bf_now": now,
            "bf_worker": worker,
            "bf_attempts": attempts,
            "bf_chunks": max(1, chunks),
        }
        if "one" in run:
            rows = [tuple(int(v) for v in row) for row in run["one"].execute(conn, params)]
            return _summed(rows)
        claimed = [(int(a), int(b), int(n)) for a, b, n in run["claim"].execute(conn, params)]
        if not claimed:
            return None
        inserted = quarantined = present = 0
        for start_id, end_id in _adjacent_runs([(a, b) for a, b, _ in claimed]):
            ranged = {**params, "bf_start": start_id, "bf_end": end_id}
            inserted += run["insert"].execute(conn, ranged).rowcount
            quarantined += run["quarantine"].execute(conn, ranged).rowcount
            present += int(run["count"].execute(conn, ranged).scalar_one())
        already = max(0, present - inserted - quarantined)
        first = min(a for a, _, _ in claimed)
        for start_id, _, _ in claimed:
            counts = (inserted, already, quarantined) if start_id == first else (0, 0, 0)
            run["mark"].execute(
                conn,
                {
                    **params,
                    "bf_start": start_id,
                    "bf_inserted": counts[0],
                    "bf_already": counts[1],
                    "bf_quarantined": counts[2],
                },
            )
        return Copied(
            first,
            max(b for _, b, _ in claimed),
            sum(n for _, _, n in claimed),
            inserted,
            already,
            quarantined,
            chunks=len(claimed),
        )

    def any_claimable(self, conn: sa.Connection) -> bool:
        """Whether a pending chunk of this table is free to claim now: not paused, and
        not held by another worker."""
        return conn.execute(self._claim().limit(1)).first() is not None

    def _claim(self) -> sa.Select[Any]:
        claim = (
            sa.select(CH.c.start_id, CH.c.end_id, CH.c.rows)
            .where(
                CH.c.system == self.lt.system.value,
                CH.c.state == PENDING,
                ~paused_clause(self.lt.system),  # while paused nothing is claimable
            )
            .order_by(CH.c.start_id)
            .limit(CHUNKS)
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
        claim = self._claim().cte(cte_name("claim"))
        src = (
            sa.select(
                *(lt.read(name).label(name) for name in LEGACY_COLUMNS if name != "status"),
                status_column(lt).label("raw"),
                mapped_status(lt).label("mapped"),
            )
            .select_from(lt.table.join(claim, in_range(lt, claim.c.start_id, claim.c.end_id)))
            .cte(cte_name("src"))
        )
        # The legacy row as the plain INSERT reads it (statements.unified_insert), its
        # status column under the name "raw" beside the status it maps to.
        legacy = {name: src.c["raw" if name == "status" else name] for name in LEGACY_COLUMNS}
        ins = (
            insert_select(ops, backfilled_row(lt, legacy, src.c.mapped), src.c.mapped.is_not(None))
            .returning(U.c.id)
            .cte(cte_name("ins"))
        )
        q_select = sa.select(
            sa.literal(system.value, sa.String),
            src.c.id,
            quarantined_raw(src.c.raw),
            unmappable_reason(system, src.c.raw, src.c.id, shared_fields(src.c)),
            NOW,
            NOW,
        ).where(src.c.mapped.is_(None))
        q_stmt = ops.insert(Q).from_select(QUARANTINE_COLUMNS, q_select)
        qins = (
            q_stmt.on_conflict_do_update(
                index_elements=[Q.c.system, Q.c.legacy_id], set_=requarantine(q_stmt)
            )
            .returning(Q.c.legacy_id)
            .cte(cte_name("qins"))
        )
        n_ins = sa.select(sa.func.count()).select_from(ins).scalar_subquery()
        n_q = sa.select(sa.func.count()).select_from(qins).scalar_subquery()
        n_mappable = (
            sa.select(sa.func.count()).select_from(src).where(src.c.mapped.is_not(None))
        ).scalar_subquery()
        # The batch's counts go on its first chunk, zero on the others.
        lowest = sa.select(sa.func.min(claim.c.start_id)).scalar_subquery()
        highest = sa.select(sa.func.max(claim.c.start_id)).scalar_subquery()
        first = CH.c.start_id == lowest

        def on_first(count: Any) -> Any:
            return sa.case((first, count), else_=0)

        return (
            sa.update(CH)
            .where(
                CH.c.system == system.value,
                CH.c.start_id == claim.c.start_id,
                # The claimed span, for the index: without it each claimed chunk was
                # matched against every chunk row of the system (quadratic in rows).
                CH.c.start_id.between(lowest, highest),
            )
            .values(
                inserted=on_first(n_ins),
                already_present=on_first(n_mappable - n_ins),
                quarantined=on_first(n_q),
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
