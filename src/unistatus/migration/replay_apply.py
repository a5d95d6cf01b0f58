"""Applying one batch of pending changes to legacy: the replay's per-transaction decisions.

Part of the replay (:mod:`unistatus.migration.replay` runs the rounds): per transaction
the change is written, found already there, created in legacy (born in UNIFIED_ONLY,
with the ``legacy_values`` its create kept: :mod:`unistatus.domain.kept_values`), or kept
as a conflict (:mod:`unistatus.migration.replay_conflicts`), never overwritten. A legacy
row that cannot be created (required values never kept, or the database refuses it) is
a conflict too, not a failed replay. ``unistatus repair`` makes the legacy row a refused
create left missing with the same code (:func:`create_legacy_rows`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from unistatus.db import writer_mark
from unistatus.db.dialect import DialectOps
from unistatus.db.failures import describe, one_line
from unistatus.db.legacy import LegacyTable
from unistatus.db.mode_reads import stored_mode
from unistatus.db.retry import is_retryable
from unistatus.db.server_clock import clock_of
from unistatus.db.tables import pending_legacy_changes, status_history, unified_transactions
from unistatus.domain.inputs import check_legacy_values, require_legacy_values
from unistatus.domain.kept_values import KEPT_KEY, from_json
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError
from unistatus.migration.replay_conflicts import join as join_conflict
from unistatus.migration.replay_conflicts import open_conflicts
from unistatus.migration.replay_conflicts import record as record_conflict

__all__ = [
    "COUNT_KEYS",
    "LegacyRowsMade",
    "create_legacy_rows",
    "create_operations",
    "followed",
    "legacy_now",
    "replay_rows",
]

log = logging.getLogger("unistatus.migration.replay_apply")

# The mode whose replay leaves an application trigger's nested writes alone.
FROZEN = DualWriteMode.UNIFIED_ONLY.value

P = pending_legacy_changes
U = unified_transactions
H = status_history

COUNT_KEYS = (
    "replayed",
    "creates",
    "status_changes",
    "legacy_created",
    "legacy_updated",
    "conflicts",
    "conflicted_changes",
    "busy",
    "carried",  # acknowledged writes legacy lacked, carried from the repair queue
    # replayed, then changed by the application's trigger (held): left to check and repair
    "legacy_held",
)


def _legacy_befores(conn: sa.Connection, firsts: dict[str, Any]) -> dict[str, str | None]:
    """The legacy status each transaction's first change here started from.

    The history row written with the change (same operation id) has it: in UNIFIED_ONLY
    it is the unified row's legacy image at the time, what legacy was expected to hold.
    """
    if not firsts:
        return {}
    rows = conn.execute(
        sa.select(H.c.transaction_id, H.c.operation_id, H.c.from_legacy_status).where(
            H.c.transaction_id.in_(sorted(firsts)),
            H.c.operation_id.in_(sorted({r.operation_id for r in firsts.values()})),
        )
    ).all()
    return {
        r.transaction_id: r.from_legacy_status
        for r in rows
        if firsts[r.transaction_id].operation_id == r.operation_id
    }


def replay_rows(
    conn: sa.Connection,
    ops: DialectOps,
    tables: dict[LegacySystemType, LegacyTable],
    rows: list[Any],
    held: set[str],
    *,
    actor: str,
    busy_is_conflict: bool = False,
) -> dict[str, int]:
    """Apply these changes (in id order) where legacy holds what they started from.

    Per transaction: legacy already holds the target, nothing to write; legacy holds
    the status the first change started from, it is written; anything else (a final
    status written while legacy-only, a row gone) is never overwritten but recorded
    as a conflict. A transaction already in conflict (recorded by an earlier batch,
    whose changes it split, or an earlier replay) is not looked at again: these changes
    join that conflict, so it holds the transaction's newest target. A legacy row locked
    elsewhere is skipped (``held``: its later changes wait too) and retried later, or
    recorded as a conflict when ``busy_is_conflict``. The caller holds the exclusive
    mode lock.
    """
    counts = dict.fromkeys(COUNT_KEYS, 0)
    by_tx: dict[str, list[Any]] = {}
    for r in rows:
        if r.transaction_id not in held:
            by_tx.setdefault(r.transaction_id, []).append(r)
    if not by_tx:
        return counts
    now = clock_of(conn.engine).now()  # measured by the replay's round (replay.py)
    unified = {
        u.id: u
        for u in conn.execute(
            sa.select(
                U.c.id, U.c.legacy_system, U.c.legacy_id, U.c.legacy_status, U.c.status
            ).where(U.c.id.in_(sorted(by_tx)))
        ).all()
    }
    # Each transaction's changes here chain: the first starts from its legacy "before",
    # the last leaves the value legacy must hold (later changes start from it).
    target = {tx: changes[-1].legacy_status for tx, changes in by_tx.items()}
    joined = open_conflicts(conn, list(by_tx))
    for tx, conflict_id in joined.items():
        # Never written over what the open conflict keeps: the operator decides it all.
        join_conflict(
            conn,
            conflict_id,
            replay_status=target[tx],
            unified_status=unified[tx].status if tx in unified else None,
            change_ids=[c.id for c in by_tx[tx]],
        )
        log.warning(
            "replay: %s change(s) of %s joined its open conflict #%s (the replay would now "
            "write %r)",
            len(by_tx[tx]),
            tx,
            conflict_id,
            target[tx],
        )
    applied: list[str] = []
    # Born in UNIFIED_ONLY: each with its create's operation id (its kept values).
    creates = {
        tx: next(c.operation_id for c in changes if c.kind == "create")
        for tx, changes in by_tx.items()
        if tx in unified
        and tx not in joined
        and unified[tx].legacy_id is None
        and any(c.kind == "create" for c in changes)
    }
    conflicts: list[tuple[str, str, str | None]] = []  # (tx, cause, legacy value seen)
    if creates:
        made = create_legacy_rows(conn, tables, creates, target, now)
        counts["legacy_created"] = len(made.created)
        counts["legacy_held"] += _held_by_the_application(
            conn, tables, unified, made.created, target
        )
        applied += sorted(tx for tx in creates if tx not in made.refused)
        conflicts += [(tx, cause, None) for tx, cause in sorted(made.refused.items())]
    firsts = {tx: changes[0] for tx, changes in by_tx.items() if tx not in joined}
    befores = _legacy_befores(conn, firsts)
    by_system: dict[str, dict[int, str]] = defaultdict(dict)
    for tx in firsts:
        u = unified.get(tx)
        if tx in creates or u is None or u.legacy_id is None:
            if tx not in creates:
                applied.append(tx)  # nothing in legacy to write (as before this change)
            continue
        by_system[u.legacy_system][int(u.legacy_id)] = tx
    for system_value, txs in by_system.items():
        lt = tables[LegacySystemType(system_value)]
        assert lt.status is not None
        ids = sorted(txs)
        query = sa.select(lt.id, lt.read("status")).where(lt.id.in_(ids))
        got: dict[int, str | None] = {
            r[0]: r[1] for r in conn.execute(ops.lock_rows_skip_busy(query))
        }
        absent = [i for i in ids if i not in got]
        seen: dict[int, str | None] = {}
        if absent:
            # Locked elsewhere (busy) or gone: the committed value tells which.
            seen = {r[0]: r[1] for r in conn.execute(query.where(lt.id.in_(absent)))}
        updates: list[dict[str, Any]] = []
        for lid in ids:
            tx = txs[lid]
            if lid not in got:
                if lid not in seen:
                    conflicts.append((tx, "legacy_missing", None))
                elif busy_is_conflict:
                    conflicts.append((tx, "legacy_busy", seen[lid]))
                else:
                    held.add(tx)
                    counts["busy"] += 1
                continue
            actual = got[lid]
            if actual in (target[tx], unified[tx].legacy_status):
                # Already there, or legacy already holds unified's newest image (dual
                # writes ran after a hand switch out of UNIFIED_ONLY): nothing to write.
                applied.append(tx)
            elif tx in befores and actual == befores[tx]:
                updates.append({"lid": lid, "st": target[tx], "tx": tx, "actual": actual})
            else:
                conflicts.append((tx, "legacy_changed", actual))
        if updates:
            update = (
                sa.update(lt.table)
                .where(lt.id == sa.bindparam("lid"))
                .values(
                    {
                        lt.status.key: lt.as_stored("status", sa.bindparam("st")),
                        lt.updated_at.key: now,
                    }
                )
            )
            # In UNIFIED_ONLY marked as replaying: an application's trigger that reacts
            # to a replayed status is not captured as a bypass write to frozen legacy (it
            # would supersede the transaction's later changes, in this batch or the next,
            # and override unified's newest status); the replay's conflicts and check
            # see it. In a mode that maintains unified (a carried change: one per
            # transaction) it is captured, as for the adapter's own write there.
            frozen = conn.execute(sa.select(stored_mode(lt.system))).scalar_one() == FROZEN
            with writer_mark.marked_as(conn, writer_mark.REPLAYING) if frozen else nullcontext():
                not_taken = _update_legacy(conn, update, updates)
            stored = legacy_now(conn, lt, [p["lid"] for p in updates if p["tx"] not in not_taken])
            for planned in updates:
                tx, lid = planned["tx"], planned["lid"]
                if tx in not_taken:
                    conflicts.append((tx, "legacy_update_refused", planned["actual"]))
                    continue
                if lid not in stored:  # the application's trigger deleted it
                    conflicts.append((tx, "legacy_missing", None))
                    continue
                applied.append(tx)
                counts["legacy_updated"] += 1
                counts["legacy_held"] += _held(tx, planned["st"], *stored[lid])
    for tx, cause, actual in conflicts:
        u = unified[tx] if tx in unified else None
        record_conflict(
            conn,
            transaction_id=tx,
            legacy_system=u.legacy_system if u is not None else None,
            legacy_id=u.legacy_id if u is not None else None,
            cause=cause,
            expected=befores.get(tx),
            actual=actual,
            replay_status=target[tx],
            unified_status=u.status if u is not None else None,
            change_ids=[c.id for c in by_tx[tx]],
            actor=actor,
            now=now,
        )
        log.warning(
            "replay conflict (%s) on %s: legacy holds %r, the replay would write %r: kept "
            "for the operator (`unistatus rollback conflicts`)",
            cause,
            tx,
            actual,
            target[tx],
        )
    done = applied + [tx for tx, _, _ in conflicts] + list(joined)
    ids_done = [c.id for tx in done for c in by_tx[tx]]
    if ids_done:
        conn.execute(sa.update(P).where(P.c.id.in_(ids_done)).values(replayed_at=now))
    changes_applied = [c for tx in applied for c in by_tx[tx]]
    counts["replayed"] = len(changes_applied)
    counts["creates"] = sum(1 for c in changes_applied if c.kind == "create")
    counts["status_changes"] = counts["replayed"] - counts["creates"]
    counts["conflicts"] = len(conflicts)
    in_conflict = [tx for tx, _, _ in conflicts] + list(joined)
    counts["conflicted_changes"] = sum(len(by_tx[tx]) for tx in in_conflict)
    return counts


def _insert_target(lt: LegacyTable, extra: tuple[str, ...] = ()) -> sa.Table:
    """The legacy table as SQLAlchemy sees a table it defined itself, with the
    application's own columns ``extra``.

    A reflected id column carries its ``nextval(...)`` server default, and SQLAlchemy
    then inserts row by row to return ids in order; declared as a plain autoincrement
    key (same name and type, from the reflected Column), a page is one statement.
    """
    cols: list[sa.Column[Any] | None] = [
        lt.user_id,
        lt.amount,
        lt.currency,
        lt.status,
        lt.created_at,
        lt.updated_at,
        *(lt.table.c[name] for name in extra),
    ]
    return sa.Table(
        lt.table.name,
        sa.MetaData(),
        sa.Column(lt.id.name, lt.id.type, key=lt.id.key, primary_key=True, autoincrement=True),
        *(sa.Column(c.name, c.type, key=c.key) for c in cols if c is not None),
        schema=lt.table.schema,
    )


def create_operations(conn: sa.Connection, txs: list[str]) -> dict[str, str]:
    """Each transaction's create operation: its first history row's (a transaction born
    without a legacy row got it from the adapter's create, with the values it kept)."""
    first = (
        sa.select(sa.func.min(H.c.id))
        .where(H.c.transaction_id.in_(sorted(txs)))
        .group_by(H.c.transaction_id)
    )
    rows = conn.execute(sa.select(H.c.transaction_id, H.c.operation_id).where(H.c.id.in_(first)))
    return {r.transaction_id: r.operation_id for r in rows}


def _kept_values(conn: sa.Connection, creates: dict[str, str]) -> dict[str, Any]:
    """The ``legacy_values`` each create kept in its history row (absent: none kept)."""
    rows = conn.execute(
        sa.select(H.c.transaction_id, H.c.operation_id, H.c.meta).where(
            H.c.transaction_id.in_(sorted(creates)),
            H.c.operation_id.in_(sorted(set(creates.values()))),
        )
    ).all()
    return {
        r.transaction_id: r.meta[KEPT_KEY]
        for r in rows
        if creates[r.transaction_id] == r.operation_id
        and isinstance(r.meta, dict)
        and KEPT_KEY in r.meta
    }


def _extra_values(lt: LegacyTable, kept: object) -> dict[str, Any]:
    """The kept values, checked against the table as it is now; InputError if the legacy
    row cannot be made with them (a required column without one, a value that no longer
    fits)."""
    values = from_json(kept, lt.extra_columns) if kept is not None else {}
    checked = check_legacy_values(values, lt.extra_columns, lt.owned, lt.name)
    require_legacy_values(checked, lt.extra_columns, lt.name)
    return checked


@dataclass
class LegacyRowsMade:
    """What :func:`create_legacy_rows` made: each new legacy row's id, and why each
    transaction without one was not given it."""

    created: dict[str, int] = field(default_factory=dict)  # transaction: its legacy id
    # transaction: legacy_values_missing | legacy_insert_refused
    refused: dict[str, str] = field(default_factory=dict)
    said: dict[str, str] = field(default_factory=dict)  # transaction: why, in one line


def create_legacy_rows(
    conn: sa.Connection,
    tables: dict[LegacySystemType, LegacyTable],
    creates: dict[str, str],
    latest: dict[str, str | None],
    now: Any,
) -> LegacyRowsMade:
    """Legacy rows for transactions born without one (in UNIFIED_ONLY, or a create whose
    legacy INSERT was refused under ``primary_wins``); link them (the UTX id stays).

    ``creates``: each transaction's create operation, whose history row kept its
    ``legacy_values``; ``latest``: the legacy status each row gets. A row the values or
    the database refuse is left out (its savepoint rolled back), the others are made.
    The rollback's replay and ``unistatus repair`` both make them here.
    """
    born = conn.execute(
        sa.select(
            U.c.id,
            U.c.legacy_system,
            U.c.user_id,
            U.c.amount,
            U.c.currency,
            U.c.legacy_status,
            U.c.created_at,
        ).where(U.c.id.in_(sorted(creates)), U.c.legacy_id.is_(None))
    ).all()
    kept = _kept_values(conn, creates)
    made = LegacyRowsMade()
    refused = made.refused
    # One INSERT per system and list of the application's columns (rows that leave a
    # column out keep its default).
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[Any, dict[str, Any]]]] = defaultdict(list)
    for r in born:
        lt = tables[LegacySystemType(r.legacy_system)]
        try:
            extra = _extra_values(lt, kept.get(r.id))
        except InputError as exc:
            refused[r.id] = "legacy_values_missing"
            made.said[r.id] = str(exc)
            log.warning("replay: the legacy row of %s cannot be created: %s", r.id, exc)
            continue
        groups[(r.legacy_system, tuple(extra))].append((r, extra))
    # Marked as creating: an application's trigger that writes a new row again is not
    # captured before the row is linked (it would get a second unified row).
    with writer_mark.marked_as(conn, writer_mark.CREATING):
        linked = _create_and_link(conn, tables, groups, latest, now, made)
    made.created = {row["utx"]: int(row["lid"]) for row in linked}
    return made


def _create_and_link(
    conn: sa.Connection,
    tables: dict[LegacySystemType, LegacyTable],
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[Any, dict[str, Any]]]],
    latest: dict[str, str | None],
    now: Any,
    made: LegacyRowsMade,
) -> list[dict[str, Any]]:
    """The INSERTs of :func:`create_legacy_rows`, one per group, and the links made
    (``utx``, ``lid`` each)."""
    linked: list[dict[str, Any]] = []
    for (system_value, names), items in groups.items():
        lt = tables[LegacySystemType(system_value)]
        assert lt.status is not None
        target = _insert_target(lt, names)
        params = [
            {
                lt.user_id.key: r.user_id,
                lt.amount.key: r.amount,
                lt.currency.key: r.currency,
                lt.status.key: latest[r.id],
                lt.created_at.key: r.created_at,
                lt.updated_at.key: now,
                **{target.c[name].key: value for name, value in extra.items()},
            }
            for r, extra in items
        ]
        insert = sa.insert(target).returning(target.c[lt.id.key], sort_by_parameter_order=True)
        ids = _insert_legacy(conn, insert, [r.id for r, _ in items], params, made)
        linked += [
            {"utx": r.id, "lid": lid}
            for (r, _), lid in zip(items, ids, strict=True)
            if lid is not None
        ]
    if linked:
        conn.execute(
            sa.update(U)
            .where(U.c.id == sa.bindparam("utx"))
            .values(legacy_id=sa.bindparam("lid"), updated_at=now),
            linked,
        )
    return linked


def followed(written: str | None, stored: str | None, unified_copy: str | None) -> bool:
    """Whether a legacy row written ``written`` is in step after the write: it stored that,
    or what its unified row's copy says (a capture, where on, mirrored the application's
    trigger that changed it): :func:`legacy_now`'s reading of it."""
    return stored in (written, unified_copy)


def _held(tx: str, written: str | None, stored: str | None, unified_copy: str | None) -> int:
    """1 (and a warning) where the application's trigger stored another status than the
    replay wrote (held it, or moved it on) and no capture brought unified to it: the
    application's decision, left to check and ``repair --strategy legacy_wins`` (a
    conflict would keep that repair off it until an operator decided); else 0."""
    if followed(written, stored, unified_copy):
        return 0
    log.warning(
        "replay: %s was written %r, and the application's trigger stored %r instead: left "
        "to check and repair (legacy_wins)",
        tx,
        written,
        stored,
    )
    return 1


def _held_by_the_application(
    conn: sa.Connection,
    tables: dict[LegacySystemType, LegacyTable],
    unified: dict[str, Any],
    created: dict[str, int],
    target: dict[str, str | None],
) -> int:
    """:func:`_held` over the legacy rows the replay just created (``created``: each
    transaction's new legacy id): an application's BEFORE INSERT trigger may hold them."""
    by_system: dict[str, dict[int, str]] = defaultdict(dict)
    for tx, lid in created.items():
        by_system[unified[tx].legacy_system][lid] = tx
    held = 0
    for system_value, txs in by_system.items():
        now = legacy_now(conn, tables[LegacySystemType(system_value)], sorted(txs))
        held += sum(_held(tx, target[tx], *now.get(lid, (None, None))) for lid, tx in txs.items())
    return held


def legacy_now(
    conn: sa.Connection, lt: LegacyTable, ids: list[int]
) -> dict[int, tuple[str | None, str | None]]:
    """The status each of these legacy rows holds now, as the replay wrote it or as the
    application's triggers then changed it, and its unified row's copy of the legacy
    status (which the capture, where on in a mode that maintains unified, brought to
    it): one read for the batch."""
    if not ids:
        return {}
    unified_of = sa.and_(U.c.legacy_system == lt.system.value, U.c.legacy_id == lt.id)
    query = (
        sa.select(lt.id, lt.read("status"), U.c.legacy_status)
        .select_from(lt.table)
        .outerjoin(U, unified_of)
        .where(lt.id.in_(ids))
    )
    return {r[0]: (r[1], r[2]) for r in conn.execute(query)}


def _update_legacy(conn: sa.Connection, update: sa.Update, rows: list[dict[str, Any]]) -> set[str]:
    """The replay's legacy UPDATEs (``lid``, ``st``; ``tx`` names the transaction): the
    transactions whose row the database refused (:func:`_row_by_row_on_refusal`), each
    left as it was."""
    params = [{"lid": r["lid"], "st": r["st"]} for r in rows]
    refused: set[str] = set()

    def write(part: list[int]) -> list[Any]:
        conn.execute(update, [params[i] for i in part])
        return [True] * len(part)

    def refuse(i: int, exc: sa.exc.DBAPIError) -> None:
        refused.add(rows[i]["tx"])
        log.warning(
            "replay: the database refused the legacy update of %s: %s", rows[i]["tx"], describe(exc)
        )

    _row_by_row_on_refusal(conn, len(rows), write, refuse)
    return refused


def _insert_legacy(
    conn: sa.Connection,
    insert: sa.Insert,
    txs: list[str],
    params: list[dict[str, Any]],
    made: LegacyRowsMade,
) -> list[Any]:
    """The new legacy rows' INSERTs (one per transaction of ``txs``): the new ids in
    order, None for each row the database refused (recorded in ``made``)."""

    def create(part: list[int]) -> list[Any]:
        # insertmanyvalues: one statement per page, ids in parameter order.
        return list(conn.execute(insert, [params[i] for i in part]).scalars().all())

    def refuse(i: int, exc: sa.exc.DBAPIError) -> None:
        made.refused[txs[i]] = "legacy_insert_refused"
        made.said[txs[i]] = one_line(exc)
        log.warning("replay: the database refused the legacy row of %s: %s", txs[i], describe(exc))

    return _row_by_row_on_refusal(conn, len(txs), create, refuse)


def _row_by_row_on_refusal(
    conn: sa.Connection,
    n: int,
    run: Callable[[list[int]], list[Any]],
    refuse: Callable[[int, sa.exc.DBAPIError], None],
) -> list[Any]:
    """``run`` over rows ``0 .. n-1`` in a savepoint; when the database refuses a row of
    them (a constraint, a trigger of the application's, a value its type lacks: not a
    lost connection, a conflict worth a retry, a missing privilege or column), halves
    them until each refused row is alone and ``refuse`` is told of it. Each row's result
    in order, None for a refused one. Halving keeps the savepoints few (a handful per
    refused row, not one per row: past 64 subtransactions in one transaction PostgreSQL
    slows every session's snapshots)."""

    def attempt(part: list[int]) -> list[Any]:
        try:
            with conn.begin_nested():
                return run(part)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or is_retryable(exc) or not _refused_row(exc):
                raise  # the round is retried, or the replay fails: not a row's doing
            if len(part) == 1:
                refuse(part[0], exc)
                return [None]
            half = len(part) // 2
            return attempt(part[:half]) + attempt(part[half:])

    return attempt(list(range(n))) if n else []


def _refused_row(exc: sa.exc.DBAPIError) -> bool:
    """The database refused a row's values (a constraint, a value out of range or not in
    its type, a trigger's RAISE), not the statement itself."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return True
    return getattr(exc.orig, "sqlstate", None) == "P0001"  # a PL/pgSQL RAISE
