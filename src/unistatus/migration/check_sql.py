"""The consistency rule as SQL over pairs of legacy and unified rows.

:func:`pair_flags` pairs the rows of one legacy key range (a full outer join) with
the spec's rule over them (:mod:`~unistatus.migration.check_rule`); ``unistatus check``
(:mod:`unistatus.migration.check`) counts them per range, and
:mod:`~unistatus.migration.check_recheck` re-reads the pairs that look inconsistent once
no write to them is in flight. docs/check.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.db.cte_names import cte_name
from unistatus.db.dialect import ops_for
from unistatus.db.legacy import DATA_COLUMNS, LEGACY_COLUMNS, LegacyTable
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.db.time_order import at_or_after
from unistatus.domain import consistency
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import StorageError
from unistatus.migration.check_out import mismatch_record
from unistatus.migration.check_rule import KINDS, Rule, rule
from unistatus.migration.unreplayed import pending_replay_exists, projected_systems

__all__ = [
    "DEFAULT_CHUNK",
    "SPOTS",
    "InconsistentRow",
    "Spot",
    "chunk_keys",
    "count_chunk",
    "example_window",
    "inconsistent_rows",
    "iter_inconsistent",
    "next_bound",
    "pair_flags",
    "pending_replay_exists",
    "projected_legacy_status",
    "recent_clause",
]

U = unified_transactions
# Legacy keys per statement: big enough that per-statement overhead is negligible,
# small enough that each statement is short (no long snapshot, quick cancel). Each range
# reads the unified rows of its key range, by index or, while the range is a large share
# of the table, by a scan of all of them: 250,000 beat 100,000 in every paired run at
# 500k and 2M rows (BENCHMARKS.md, "Issue 14", branch checkperf).
DEFAULT_CHUNK = 250_000


@dataclass(frozen=True)
class InconsistentRow:
    """One legacy/unified pair the SQL rule flagged, with both sides' values."""

    system: LegacySystemType
    legacy_id: int | None
    transaction_id: str | None
    kinds: tuple[str, ...]
    legacy: Mapping[str, Any] | None
    unified: Mapping[str, Any] | None

    def as_example(self) -> dict[str, Any]:
        details = consistency.compare(self.system, self.legacy, self.unified)
        return {
            "system": self.system.value,
            "legacy_id": self.legacy_id,
            "transaction_id": self.transaction_id,
            "kinds": list(self.kinds),
            "details": [d.as_dict() for d in details],
        }

    def as_record(self) -> dict[str, Any]:
        """Its line of ``check --out`` (:mod:`unistatus.migration.check_out`)."""
        return mismatch_record(
            self.system, self.legacy_id, self.transaction_id, self.kinds, self.legacy, self.unified
        )


# --- the rule in SQL ------------------------------------------------------------------


# The columns each side of a pair carries: the rule's (key, status, DATA_COLUMNS) and
# ``updated_at`` for ``--since``; unified adds its legacy key and legacy status image.
_L_NAMES = tuple(name for name in LEGACY_COLUMNS if name != "created_at")
_U_NAMES = ("id", "legacy_id", "status", "legacy_status", *DATA_COLUMNS, "updated_at")


@dataclass(frozen=True)
class _Pairs:
    """Every legacy/unified pair of one key range, with the rule over them.

    ``source`` has the legacy side's columns as ``l_<name>`` and the unified side's as
    ``u_<name>`` (NULL for the side that is absent).
    """

    source: sa.Subquery
    rule: Rule
    scope: sa.ColumnElement[bool]
    after: int | None = None  # the range: keys in (after, upto], None: open
    upto: int | None = None


def _range(col: sa.ColumnElement[Any], lo: int | None, hi: int | None) -> list[Any]:
    """The key range (lo, hi], its bounds bound as BIGINT: a range's end may lie beyond a
    4-byte INTEGER id column's largest value."""
    out: list[Any] = []
    if lo is not None:
        out.append(col > sa.literal(lo, sa.BigInteger))
    if hi is not None:
        out.append(col <= sa.literal(hi, sa.BigInteger))
    return out


def _among(col: sa.ColumnElement[Any], keys: Sequence[int] | sa.Select[Any] | None) -> list[Any]:
    if keys is None:
        return []
    return [col.in_(keys if isinstance(keys, sa.Select) else list(keys))]


def _changed_keys(
    lt: LegacyTable, lo: int | None, hi: int | None, since: datetime
) -> sa.Select[Any]:
    """The range's legacy keys whose legacy or unified row was updated at or after
    ``since``: the pairs a ``since`` scope keeps, found before the join (each table's
    range read once, filtered) so that only their pairs are joined and judged.

    A CTE: the pairs use the keys in three places and PostgreSQL reads a CTE used more
    than once only once (as a subquery it read both tables three times: slower than the
    join it spares). 500k legacy rows, a few hundred changed: a continuous verification
    pass 0.36 s against 0.60 s for the join filtered afterwards (BENCHMARKS.md)."""
    changed = sa.union(
        sa.select(lt.id.label("key")).where(
            *_range(lt.id, lo, hi), at_or_after(lt.read("updated_at"), since)
        ),
        sa.select(U.c.legacy_id).where(
            *_unified_of(lt.system, lo, hi, None), at_or_after(U.c.updated_at, since)
        ),
    ).cte(cte_name("changed"))
    return sa.select(changed.c.key)


def pair_flags(
    lt: LegacyTable,
    lo: int | None = None,
    hi: int | None = None,
    since: datetime | None = None,
    *,
    project_pending: bool = False,
    keys: Sequence[int] | None = None,
    full_join: bool = False,
) -> _Pairs:
    """The pairs of legacy keys in (lo, hi] (None: open) and the rule over them.

    ``keys``: only the pairs of those legacy keys (index look-ups: the re-check).
    ``since``: only the pairs either side of which was updated since, whose keys are
    found first (:func:`_changed_keys`).
    ``full_join``: the literal FULL JOIN (:func:`_full_join_pairs`), for PostgreSQL when
    several ranges are counted at once.

    A full outer join, written as the two halves every engine plans well: the system's
    unified rows of the range LEFT JOIN their legacy row (a unified row without one is
    an orphan), UNION ALL the legacy rows of the range that no unified row points at
    (an anti-join on the unified legacy reference, its unique index). The wide unified
    rows are read once, the narrow legacy rows twice (PostgreSQL, 500k rows: 15-20% less
    than reading unified in both halves). The range is repeated on both sides of each
    join so PostgreSQL reads only the range's keys. SQLite has no index on a
    materialised subquery, so a literal FULL JOIN of two filtered subqueries is
    quadratic there.
    """
    if lt.status is None:
        raise StorageError(f"legacy table {lt.name!r} has no status column any more")
    system = lt.system
    among: Sequence[int] | sa.Select[Any] | None = keys
    if keys is None and since is not None:
        among = _changed_keys(lt, lo, hi, since)
    if full_join:
        p = _full_join_pairs(lt, lo, hi, among, project_pending)
        return _Pairs(p, _rule_of(lt, p), _scope_of(p, since), lo, hi)
    lcols: dict[str, sa.ColumnElement[Any]] = {name: lt.read(name) for name in _L_NAMES}
    if project_pending:
        lcols["status"] = projected_legacy_status(lt.read("status"))
    ucols = {name: U.c[name] for name in _U_NAMES}
    mine = _unified_of(system, lo, hi, among)
    on = sa.and_(lt.id == U.c.legacy_id, *_range(lt.id, lo, hi), *_among(lt.id, among))
    matched = (
        sa.select(
            *[c.label(f"l_{n}") for n, c in lcols.items()],
            *[c.label(f"u_{n}") for n, c in ucols.items()],
        )
        .select_from(U.outerjoin(lt.table, on))
        .where(*mine)
    )
    # No unified row: no replay can be pending for it, the legacy status is as it is.
    alone = {**lcols, "status": lt.read("status")}
    pointed_at = sa.exists(
        sa.select(U.c.legacy_id).where(
            U.c.legacy_system == system.value,
            U.c.legacy_id == lt.id,
            *_range(U.c.legacy_id, lo, hi),
        )
    )
    missing = sa.select(
        *[c.label(f"l_{n}") for n, c in alone.items()],
        *[sa.cast(sa.null(), c.type).label(f"u_{n}") for n, c in ucols.items()],
    ).where(*_range(lt.id, lo, hi), *_among(lt.id, among), ~pointed_at)
    p = sa.union_all(matched, missing).subquery("p")
    return _Pairs(p, _rule_of(lt, p), _scope_of(p, since), lo, hi)


def _unified_of(
    system: LegacySystemType,
    lo: int | None,
    hi: int | None,
    keys: Sequence[int] | sa.Select[Any] | None,
) -> list[sa.ColumnElement[bool]]:
    """The system's unified rows that point at a legacy key of the range (or ``keys``)."""
    return [
        U.c.legacy_system == system.value,
        U.c.legacy_id.is_not(None),
        *_range(U.c.legacy_id, lo, hi),
        *_among(U.c.legacy_id, keys),
    ]


def _full_join_pairs(
    lt: LegacyTable,
    lo: int | None,
    hi: int | None,
    keys: Sequence[int] | sa.Select[Any] | None,
    project_pending: bool,
) -> sa.Subquery:
    """The range's legacy rows FULL JOIN its system's unified rows, as one join.

    PostgreSQL before 16 runs a full join in one process, where the two halves of
    :func:`pair_flags` run in parallel workers; but the halves build two hash tables and
    read legacy twice (166k rows: three processes of 0.36 s against one of 0.5 s). When
    the systems are counted at once (one connection each), the one join leaves the cores
    to them: three systems on two cores in 0.64-0.83 s against 0.85-1.01 s for the
    halves one system after another (BENCHMARKS.md, "Session of 2026-12-04 morning").
    """
    legacy = (
        sa.select(*[lt.read(n).label(n) for n in _L_NAMES])
        .where(*_range(lt.id, lo, hi), *_among(lt.id, keys))
        .subquery("l")
    )
    unified = sa.select(*[U.c[n] for n in _U_NAMES]).where(*_unified_of(lt.system, lo, hi, keys))
    u = unified.subquery("u")
    status: sa.ColumnElement[Any] = legacy.c.status
    if project_pending:
        status = sa.case((_replay_pending(u.c.id), u.c.legacy_status), else_=status)
    lcols = {**{n: legacy.c[n] for n in _L_NAMES}, "status": status}
    return (
        sa.select(
            *[c.label(f"l_{n}") for n, c in lcols.items()],
            *[u.c[n].label(f"u_{n}") for n in _U_NAMES],
        )
        .select_from(legacy.join(u, u.c.legacy_id == legacy.c.id, full=True))
        .subquery("p")
    )


def _rule_of(lt: LegacyTable, p: sa.Subquery) -> Rule:
    # The legacy amount compared as a unified row takes it (a PostgreSQL text amount as a
    # number: LegacyTable.as_copied); the pair's columns keep it as read, for the examples.
    legacy = {n: lt.as_copied(n, p.c[f"l_{n}"]) for n in _L_NAMES}
    unified = {n: p.c[f"u_{n}"] for n in _U_NAMES}
    return rule(lt.system, legacy, unified, text_amounts=lt.dialect == "sqlite")


def _scope_of(p: sa.Subquery, since: datetime | None) -> sa.ColumnElement[bool]:
    return sa.true() if since is None else _updated_since(p, since)


def _updated_since(p: sa.Subquery, since: datetime) -> sa.ColumnElement[bool]:
    """Either side of the pair was updated at or after ``since``."""
    return sa.or_(at_or_after(p.c.l_updated_at, since), at_or_after(p.c.u_updated_at, since))


def projected_legacy_status(status: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The legacy status as it will be once the changes made in UNIFIED_ONLY are replayed
    (only for a system in UNIFIED_ONLY: :mod:`unistatus.migration.unreplayed`).

    Legacy is frozen in UNIFIED_ONLY by design; each change made meanwhile is recorded
    for replay and the unified row keeps its legacy image (``legacy_status``). Comparing
    the frozen value would report every such change as a mismatch (and let the alerts
    roll back a healthy phase 4), so where a replay is pending the image stands in.
    """
    return sa.case((_replay_pending(U.c.id), U.c.legacy_status), else_=status)


def _replay_pending(transaction_id: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """A change of that unified row awaits its replay to legacy."""
    return sa.exists().where(
        pending_legacy_changes.c.transaction_id == transaction_id,
        pending_legacy_changes.c.replayed_at.is_(None),
    )


def recent_clause(pairs: _Pairs, since: datetime) -> sa.ColumnElement[bool]:
    """Either side of the pair was updated at or after ``since``."""
    return _updated_since(pairs.source, since)


# The counting statement says where a range's inconsistent pairs are, to within
# 1/SPOTS of its keys, so that its examples are read from a narrow window of keys rather
# than by a second read of the whole range (:func:`example_window`).
SPOTS = 1024
# The largest key a statement can bind (BIGINT, every integer key's widest type): the
# slices' ends are clamped to it (a key near it put them past: "bigint out of range").
MAX_KEY = 2**63 - 1


@dataclass(frozen=True)
class Spot:
    """``n`` inconsistent pairs of a range, all with keys in ``(after, upto]`` (None:
    open, as the range is)."""

    n: int
    after: int | None
    upto: int | None


def _slice_of(key: sa.ColumnElement[Any], first: int, width: int) -> sa.ColumnElement[int]:
    """Which of SPOTS slices of ``width`` keys from ``first`` on ``key`` is in (an
    orphan's key beyond them: the first or the last slice, so there are never more)."""
    last = min(first + SPOTS * width - 1, MAX_KEY)
    return sa.case(
        (key < first, 0), (key > last, SPOTS - 1), else_=_offset(key, first, last, width)
    )


def _offset(key: sa.ColumnElement[Any], first: int, last: int, width: int) -> sa.ColumnElement[int]:
    """``(key - first) // width`` for a key in ``[first, last]``, each step within BIGINT.

    ``key - first`` is, whenever the slices span at most MAX_KEY keys (every range of an
    ordinary table): it stays that statement. Wider (keys from near -2^63 to past 0), it
    is not ("bigint out of range" on PostgreSQL; on SQLite a REAL that rounds a key into
    the next slice): a key below 0 is less than MAX_KEY from ``first``, and from 0 on
    the distance is split as ``key + a`` with ``a = -first = qa * width + ra``."""
    if last - first <= MAX_KEY:
        return (key - first) // width
    qa, ra = divmod(-first, width)
    carry = sa.case((key % width + ra >= width, 1), else_=0)
    return sa.case((key < 0, (key - first) // width), else_=key // width + qa + carry)


def count_chunk(
    conn: sa.Connection,
    pairs: _Pairs,
    recent_since: datetime,
    keys: tuple[int, int] | None = None,
) -> tuple[dict[str, int], dict[int, tuple[str, ...]], list[Spot]]:
    """One statement, one read of the chunk: its counts, the inconsistent pairs updated
    since ``recent_since`` (the ones to re-check) with their kinds, by key, and (given
    the chunk's first and last legacy ``keys``) where its inconsistent pairs are.

    The pairs are grouped by one value (:func:`_detail`): NULL for a consistent pair,
    which is all the statement judges of it (the rule's kinds OR-ed, as the bench's raw
    statement sums them, evaluated until one holds); for an inconsistent one its kinds,
    its slice of the keys (:data:`SPOTS` equal slices) and, when it is a recent one, its
    key (one group each). The counts are the groups' sums, and the recent pairs and the
    :class:`Spot` of each slice with inconsistent pairs arrive without reading the chunk
    a second time. (Six group columns, each an expression of every pair, took 18% longer:
    166,667 pairs in 244 ms against 207, the raw statement 189; BENCHMARKS.md, "Session
    of 2026-12-06 (2)".) Grouping keeps PostgreSQL's parallel (partial) aggregate, which
    ``string_agg``/``array_agg`` would not (before 16).
    """
    p = pairs.source
    key = sa.func.coalesce(p.c.l_id, p.c.u_legacy_id)
    first, width = 0, 1
    parts = [*pairs.rule.columns(), sa.case((recent_clause(pairs, recent_since), key))]
    if keys is not None:
        first, width = keys[0], max(1, -(-(keys[1] - keys[0] + 1) // SPOTS))
        parts.append(_slice_of(key, first, width))
    detail = sa.case((pairs.rule.any(), _detail(parts)), else_=None).label("detail")
    q = (
        sa.select(detail, sa.func.count().label("n"))
        .select_from(p)
        .where(pairs.scope)
        .group_by(detail)
    )
    names = [c.name for c in pairs.rule.columns()]
    counts = dict.fromkeys(("total", "ok", *KINDS), 0)
    recent_keys: dict[int, tuple[str, ...]] = {}
    found: dict[int, int] = {}
    for grouped, n in conn.execute(q).tuples():
        counts["total"] += n
        if grouped is None:
            counts["ok"] += n
            continue
        values = grouped.split(_SEP)
        kinds = pairs.rule.kinds(dict(zip(names, map(int, values), strict=False)))
        for kind in kinds:
            counts[kind] += n
        recent = values[len(names)]
        if recent:
            recent_keys[int(recent)] = kinds
        if keys is not None:
            spot = int(values[len(names) + 1])
            found[spot] = found.get(spot, 0) + n
    spots = [
        Spot(
            found[s],
            pairs.after if s == 0 else min(first + s * width - 1, MAX_KEY),
            pairs.upto if s == SPOTS - 1 else min(first + (s + 1) * width - 1, MAX_KEY),
        )
        for s in sorted(found)
    ]
    return counts, recent_keys, spots


# Between the parts of an inconsistent pair's group value (numbers: no separator in them).
_SEP = ","


def _detail(parts: Sequence[sa.ColumnElement[Any]]) -> sa.ColumnElement[str]:
    """``parts`` (integers, or NULL) as one text, ``_SEP`` between them, NULL as ''
    (``||`` on both backends). Each is cast to BIGINT first: a key of a NUMERIC column
    would read ``12.000``."""
    texts = [sa.func.coalesce(sa.cast(sa.cast(part, sa.BigInteger), sa.Text), "") for part in parts]
    out: sa.ColumnElement[str] = texts[0]
    for text in texts[1:]:
        out = out.op("||")(_SEP).op("||")(text)
    return out


def example_window(spots: Sequence[Spot], wanted: int) -> tuple[int | None, int | None] | None:
    """The narrowest keys ``(after, upto]`` from the first inconsistent pair on that hold
    at least ``wanted`` of them (all there are, if fewer); None: none were located."""
    if not spots:
        return None
    seen = 0
    for spot in spots:
        seen += spot.n
        if seen >= wanted:
            break
    return spots[0].after, spot.upto


def next_bound(conn: sa.Connection, lt: LegacyTable, lo: int | None, chunk: int) -> int | None:
    """The upper key of the chunk after ``lo``, or None when it is the last (open) one."""
    return chunk_keys(conn, lt, lo, chunk)[0]


def chunk_keys(
    conn: sa.Connection, lt: LegacyTable, lo: int | None, chunk: int
) -> tuple[int | None, tuple[int, int] | None]:
    """:func:`next_bound`, and the chunk's first and last legacy keys (None: it has
    none) from the same read of them.

    The keys above ``lo`` are counted only when there may be ``chunk`` of them: when
    their first and last (two index probes) are fewer than ``chunk`` apart, the rest is
    the last chunk. That spares every system whose remaining keys are one chunk a walk
    of its whole key index (PostgreSQL, 166k keys: about 20 ms).
    """
    above = _range(lt.id, lo, None)
    first, last = conn.execute(
        sa.select(sa.func.min(lt.id), sa.func.max(lt.id)).where(*above)
    ).one()
    if first is None:
        return None, None
    if int(last) - int(first) + 1 < chunk:
        return None, (int(first), int(last))
    keys = sa.select(lt.id.label("k")).where(*above)
    sub = keys.order_by(lt.id).limit(chunk).subquery()
    q = sa.select(sa.func.min(sub.c.k), sa.func.max(sub.c.k), sa.func.count()).select_from(sub)
    first, last, n = conn.execute(q).one()
    return (int(last) if n >= chunk else None), (int(first), int(last))


def _row_values(row: Mapping[Any, Any], prefix: str, names: Sequence[str]) -> dict[str, Any] | None:
    values = {name: row[f"{prefix}{name}"] for name in names}
    return values if values["id"] is not None else None


def inconsistent_rows(
    conn: sa.Connection,
    pairs: _Pairs,
    system: LegacySystemType,
    limit: int | None,
    *,
    also: sa.ColumnElement[bool] | None = None,
) -> list[InconsistentRow]:
    p = pairs.source
    cols: list[sa.ColumnElement[Any]] = [p.c[f"l_{n}"] for n in _L_NAMES]
    cols += [p.c[f"u_{n}"] for n in _U_NAMES] + pairs.rule.columns()
    q = sa.select(*cols).select_from(p).where(pairs.scope, pairs.rule.any())
    if also is not None:
        q = q.where(also)
    if limit is not None:
        # No ORDER BY: the database stops at the first ``limit`` rows it finds instead of
        # reading the whole chunk a second time; the rows are sorted below.
        q = q.limit(limit)
    out = []
    for row in conn.execute(q).mappings():
        legacy = _row_values(row, "l_", _L_NAMES)
        unified = _row_values(row, "u_", _U_NAMES)
        out.append(
            InconsistentRow(
                system=system,
                legacy_id=row["l_id"] if legacy else row["u_legacy_id"],
                transaction_id=row["u_id"],
                kinds=pairs.rule.kinds(row),
                legacy=legacy,
                unified=unified,
            )
        )
    out.sort(key=lambda r: r.legacy_id or 0)
    return out


def iter_inconsistent(
    engine: sa.Engine,
    lt: LegacyTable,
    *,
    since: datetime | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[list[InconsistentRow]]:
    """Every inconsistent pair of one system, one list per key chunk (a fresh read).

    Each chunk's read transaction ends before the list is yielded, so the caller may
    write (repair) between chunks without holding a snapshot or locks open.
    """
    lo: int | None = None
    ops = ops_for(engine)
    while True:
        with engine.connect() as conn:
            ops.plan_for_scans(conn)  # as the check's ranges: compiling costs more than reading
            hi = next_bound(conn, lt, lo, chunk)
            project = lt.system in projected_systems(conn)
            pairs = pair_flags(lt, lo, hi, since, project_pending=project)
            rows = inconsistent_rows(conn, pairs, lt.system, None)
        yield rows
        if hi is None:
            return
        lo = hi


def count_first_keys(conn: sa.Connection, lt: LegacyTable, keys: int) -> int:
    """Check the first ``keys`` legacy keys of ``lt`` with the check's own statement and
    return how many pairs it counted; reads only (``unistatus plan`` times it)."""
    hi = next_bound(conn, lt, None, keys)
    pairs = pair_flags(lt, None, hi, project_pending=lt.system in projected_systems(conn))
    counts, _recent, _spots = count_chunk(conn, pairs, utcnow())
    return counts["total"]
