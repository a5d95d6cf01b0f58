"""What the capture's statements take from where they run (:class:`Context`), and the
writer counts each captured statement adds to (one row per writer, system and shard)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from unistatus.db.tables import unified_transactions
from unistatus.db.tables_capture import capture_writers
from unistatus.domain.statuses import DualWriteMode

__all__ = [
    "FROZEN",
    "UNIFIED_TARGET",
    "Context",
    "count_foreign_unified",
    "count_writes",
    "postgres_context",
    "sqlite_context",
    "statement_context",
]

W = capture_writers

UNIFIED_TARGET = "UNIFIED"  # the writer counts' "system" of direct writes to unified
FROZEN = DualWriteMode.UNIFIED_ONLY.value
# The modes in which legacy is the truth (the adapter reads it): its status is never
# behind on purpose there.
LEGACY_READ = tuple(m.value for m in DualWriteMode if not m.reads_unified)


@dataclass(frozen=True)
class Context:
    """What the statements take from where they run, as SQL expressions.

    ``writer``: the name in history and writer counts; ``mode``: the mode written in
    history; ``now``: the time; ``client_addr``: the writer's address (or NULL); ``shard``:
    the writer-count row of this session; ``uuid``: a new operation id per row;
    ``json``: a JSON object from alternating keys and values; ``kind``: the history's
    metadata ``capture`` (``bypass`` or ``catch_up``); ``reason``: the history reason;
    ``frozen``: whether ``mode`` is UNIFIED_ONLY, when the caller knows (PostgreSQL: one
    body per case, so the other modes carry no UNIFIED_ONLY writes), None: tested in SQL;
    ``meta``: the history metadata without a flag, worked out once per statement (a
    PL/pgSQL variable: :meth:`SystemSql.base_meta`), or None: built per row.
    """

    writer: sa.ColumnElement[Any]
    mode: sa.ColumnElement[Any]
    now: sa.ColumnElement[Any]
    client_addr: sa.ColumnElement[Any]
    shard: sa.ColumnElement[Any]
    uuid: Callable[[], sa.ColumnElement[Any]]
    json: Callable[..., sa.ColumnElement[Any]]
    kind: str
    reason: sa.ColumnElement[Any]
    frozen: bool | None = None
    meta: sa.ColumnElement[Any] | None = None

    @property
    def is_frozen(self) -> sa.ColumnElement[bool]:
        """The mode is UNIFIED_ONLY (legacy frozen), as SQL."""
        if self.frozen is None:
            return self.mode == FROZEN
        return sa.true() if self.frozen else sa.false()

    @property
    def reads_legacy(self) -> sa.ColumnElement[bool]:
        """The mode reads legacy (LEGACY_ONLY, DUAL_WRITE_LEGACY_PRIMARY), as SQL: where
        unified is read, legacy's status may be behind on purpose (changes awaiting their
        replay in UNIFIED_ONLY, a refused legacy side queued under ``primary_wins``)."""
        if self.frozen:
            return sa.false()
        return self.mode.in_(LEGACY_READ)


def postgres_context(writer: Any, mode: Any, reason: Any, kind: str) -> Context:
    """In a PL/pgSQL function: the writer's address in ``v_addr``, its session's shard."""
    return Context(
        writer=writer,
        mode=mode,
        now=sa.func.statement_timestamp(type_=unified_transactions.c.updated_at.type),
        client_addr=sa.literal_column("v_addr", sa.String),
        shard=sa.func.pg_backend_pid(type_=sa.BigInteger),
        uuid=lambda: sa.cast(sa.func.gen_random_uuid(), sa.String),
        json=lambda *pairs: sa.func.jsonb_build_object(*pairs),
        kind=kind,
        reason=reason,
    )


def sqlite_context(writer: Any, mode: Any, reason: str, kind: str) -> Context:
    """In a SQLite trigger: no address, one shard, the time in the stored format."""
    now = (
        sa.func.strftime("%Y-%m-%d %H:%M:%S", "now", type_=sa.String)
        + sa.func.substr(sa.func.strftime("%f", "now", type_=sa.String), 3)
        + sa.literal("000", sa.String)
    )
    return Context(
        writer=writer,
        mode=mode,
        now=now,
        client_addr=sa.null(),
        shard=sa.literal(0, sa.BigInteger),
        uuid=lambda: sa.func.lower(sa.func.hex(sa.func.randomblob(16)), type_=sa.String),
        json=lambda *pairs: sa.func.json_object(*pairs),
        kind=kind,
        reason=sa.literal(reason, sa.String),
    )


def statement_context(dialect: str, writer: str, mode: str, reason: str, kind: str) -> Context:
    """For the capture's statements run by unistatus itself, not in a trigger (the
    quarantine retry): its name as the writer, the system's mode as read, no address."""
    literal = {"writer": sa.literal(writer, sa.String), "mode": sa.literal(mode, sa.String)}
    if dialect == "postgresql":
        ctx = postgres_context(literal["writer"], literal["mode"], sa.literal(reason), kind)
        return replace(ctx, client_addr=sa.null())
    return sqlite_context(literal["writer"], literal["mode"], reason, kind)


def count_writes(
    insert: Callable[[sa.Table], Any],
    target: str,
    counts: sa.Subquery,
    ctx: Context,
    *,
    per_statement: bool = False,
) -> sa.Executable:
    """Add one statement's counts (``writes``, ``flagged``, ``unmappable``) to the
    writer's row for ``target`` in this session's shard; nothing when it wrote no row.
    ``per_statement``: nothing either when the row was last seen at ``ctx.now`` (another
    trigger of the same statement counted it: capture_frozen)."""
    select = sa.select(
        ctx.writer,
        sa.literal(target, sa.String),
        ctx.shard,
        counts.c.writes,
        counts.c.flagged,
        counts.c.unmappable,
        ctx.now,
        ctx.now,
        ctx.mode,
        ctx.client_addr,
    ).where(counts.c.writes > 0)
    stmt = insert(W).from_select(
        [
            W.c.writer,
            W.c.system,
            W.c.shard,
            W.c.writes,
            W.c.flagged,
            W.c.unmappable,
            W.c.first_seen_at,
            W.c.last_seen_at,
            W.c.last_mode,
            W.c.client_addr,
        ],
        select,
    )
    added = added_counts(stmt)
    if per_statement:
        again = W.c.last_seen_at == stmt.excluded.last_seen_at
        added = {name: sa.case((again, W.c[name]), else_=sum_) for name, sum_ in added.items()}
    counted: sa.Executable = stmt.on_conflict_do_update(
        index_elements=[W.c.writer, W.c.system, W.c.shard],
        set_={
            **added,
            "last_seen_at": stmt.excluded.last_seen_at,
            "last_mode": stmt.excluded.last_mode,
            "client_addr": stmt.excluded.client_addr,
        },
    )
    return counted


def added_counts(upsert: Any) -> dict[str, Any]:
    """The writer's counts plus those of the row an ``INSERT ... ON CONFLICT`` brings."""
    return {name: W.c[name] + upsert.excluded[name] for name in ("writes", "flagged", "unmappable")}


def count_foreign_unified(
    insert: Callable[[sa.Table], Any], rows: sa.FromClause, ctx: Context
) -> sa.Executable:
    """Rows of ``unified_transactions`` written by a writer that is not unistatus: all
    counted, all flagged (they cannot be mapped back safely)."""
    counts = sa.select(
        sa.func.count().label("writes"),
        sa.func.count().label("flagged"),
        sa.literal(0, sa.BigInteger).label("unmappable"),
    ).select_from(rows)
    return count_writes(insert, UNIFIED_TARGET, counts.subquery("counts"), ctx)
