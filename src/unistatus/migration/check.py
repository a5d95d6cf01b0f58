"""``unistatus check``: the full, set-based diff between the legacy tables and unified.

One statement per chunk of legacy keys, counted by the database; the report is stored
(``unistatus_check_reports``) for the gates, alerts and dashboard. How rows are paired
and counted: docs/check.md.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.legacy import DATA_COLUMNS, LEGACY_COLUMNS, LegacyTable, resolve_legacy_tables
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.db.tables_check import check_reports
from unistatus.domain import consistency
from unistatus.domain.consistency import InconsistencyKind
from unistatus.domain.mapping import LegacyStatusMapper, compatible_clause
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, StorageError
from unistatus.migration.check_out import MismatchWriter, mismatch_record
from unistatus.migration.check_runs import (
    CONTINUOUS,
    RunState,
    SystemPosition,
    add_counts,
    latest_unfinished,
)

__all__ = [
    "DEFAULT_CHUNK",
    "RECHECK_BATCH",
    "FULL_SCOPE",
    "KINDS",
    "CheckReport",
    "InconsistentRow",
    "iter_inconsistent",
    "latest_report",
    "pair_flags",
    "recheck",
    "rule_flags",
    "parse_since",
    "parse_systems",
    "run_check",
    "scope_of",
]

U = unified_transactions
KINDS = tuple(k.value for k in InconsistencyKind)
FULL_SCOPE = "all"  # every system, every row: what phase gates should read
# Legacy keys per statement: big enough that per-statement overhead is negligible,
# small enough that each statement is short (no long snapshot, quick cancel).
DEFAULT_CHUNK = 100_000
_RELATIVE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_mapper = LegacyStatusMapper()


@dataclass
class CheckReport:
    """The result of one check run (stored as one row of ``unistatus_check_reports``)."""

    scope: str
    systems: list[str]
    total: int = 0
    consistent: int = 0
    inconsistencies: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    per_system: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    since: datetime | None = None
    duration_ms: float = 0.0
    started_at: datetime = field(default_factory=utcnow)
    created_at: datetime = field(default_factory=utcnow)
    id: int | None = None
    # False: the run stopped before covering every key range (never a full check).
    complete: bool = True
    run: str | None = None

    @property
    def consistency_rate(self) -> float:
        """consistent / total in 0..1; nothing to compare counts as fully consistent."""
        return self.consistent / self.total if self.total else 1.0

    @property
    def is_consistent(self) -> bool:
        return self.consistent == self.total

    @property
    def inconsistent(self) -> int:
        return self.total - self.consistent

    @property
    def rows_per_second(self) -> float:
        return self.total / (self.duration_ms / 1000) if self.duration_ms > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "systems": list(self.systems),
            "since": self.since.isoformat() if self.since else None,
            "total": self.total,
            "consistent": self.consistent,
            "inconsistent": self.inconsistent,
            "consistency_rate": self.consistency_rate,
            "inconsistencies": dict(self.inconsistencies),
            "per_system": self.per_system,
            "examples": list(self.examples),
            "duration_ms": round(self.duration_ms, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "started_at": self.started_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "complete": self.complete,
            "run": self.run,
        }


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


# --- inputs ---------------------------------------------------------------------------


def parse_since(value: str | datetime | None, *, now: datetime | None = None) -> datetime | None:
    """An aware UTC time from an ISO time or a relative age like ``90s``, ``15m``, ``1h``, ``2d``."""
    if value is None or isinstance(value, datetime):
        return as_utc(value)
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        amount = float(match.group(1))
        try:
            return (now or utcnow()) - timedelta(**{_UNITS[match.group(2).lower()]: amount})
        except OverflowError:
            raise InputError(
                f"--since {value!r} reaches before the year 1: give a shorter age or an ISO time"
            ) from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--since {value!r} is neither an ISO time (2026-01-31T12:00:00Z) nor an age "
            "like 30s, 15m, 1h, 2d, 1w"
        ) from None
    return as_utc(parsed)


def parse_systems(
    systems: Iterable[LegacySystemType | str] | LegacySystemType | str | None,
) -> list[LegacySystemType]:
    """Systems to check, in a stable order; ``None``, ``"all"`` or empty means all."""
    if systems is None:
        return list(LegacySystemType)
    if isinstance(systems, str | LegacySystemType):
        systems = [systems]
    wanted: set[LegacySystemType] = set()
    for s in systems:
        if isinstance(s, str) and s.strip().lower() == "all":
            return list(LegacySystemType)
        wanted.add(LegacySystemType.parse(s))
    return [s for s in LegacySystemType if s in wanted] or list(LegacySystemType)


def scope_of(systems: Sequence[LegacySystemType], since: datetime | None) -> str:
    """``all`` for a full check, else e.g. ``CASHOUT,ESCROW`` and/or ``since=<iso>``."""
    parts = []
    if list(systems) != list(LegacySystemType):
        parts.append(",".join(s.value for s in systems))
    if since is not None:
        parts.append(f"since={since.isoformat()}")
    return " ".join(parts) or FULL_SCOPE


# --- the rule in SQL ------------------------------------------------------------------


# The columns each side of a pair carries: the rule's (key, status, DATA_COLUMNS) and
# ``updated_at`` for ``--since``; unified adds its legacy key and legacy status image.
_L_NAMES = tuple(name for name in LEGACY_COLUMNS if name != "created_at")
_U_NAMES = ("id", "legacy_id", "status", "legacy_status", *DATA_COLUMNS, "updated_at")


@dataclass(frozen=True)
class _Pairs:
    """Every legacy/unified pair of one key range, with the rule as one flag per kind.

    ``source`` has the legacy side's columns as ``l_<name>`` and the unified side's as
    ``u_<name>`` (NULL for the side that is absent).
    """

    source: sa.Subquery
    flags: dict[str, sa.ColumnElement[bool]]
    scope: sa.ColumnElement[bool]


def _range(col: sa.ColumnElement[Any], lo: int | None, hi: int | None) -> list[Any]:
    out: list[Any] = []
    if lo is not None:
        out.append(col > lo)
    if hi is not None:
        out.append(col <= hi)
    return out


def _among(col: sa.ColumnElement[Any], keys: Sequence[int] | None) -> list[Any]:
    return [] if keys is None else [col.in_(list(keys))]


def rule_flags(
    system: LegacySystemType,
    l: Mapping[str, sa.ColumnElement[Any]],  # noqa: E741 - the spec's names
    u: Mapping[str, sa.ColumnElement[Any]],
) -> dict[str, sa.ColumnElement[bool]]:
    """The spec's consistency rule as one boolean SQL expression per kind.

    ``l`` and ``u`` map ``id``, ``status`` and the DATA_COLUMNS (``u`` also
    ``legacy_status``) to the two sides' columns (NULL ``id`` = that side is absent; ``u``
    rows must all point at a legacy row, rows born unified are no orphans). Each
    expression is never NULL, so ``CASE WHEN`` and ``NOT`` mean what they say, and each
    mirrors :func:`unistatus.domain.consistency.compare` clause by clause.
    """
    has_l, has_u = l["id"].is_not(None), u["id"].is_not(None)
    known = list(_mapper.forward_table(system))
    mappable = sa.and_(l["status"].is_not(None), l["status"].in_(known))

    def differs(name: str) -> sa.ColumnElement[bool]:
        # As in compare: an amount is compared as a number, and NULL equals nothing.
        if name == "amount":
            return sa.or_(l[name].is_(None), u[name].is_(None), l[name] != u[name])
        return l[name].is_distinct_from(u[name])

    flags = {
        InconsistencyKind.MISSING_UNIFIED: sa.and_(has_l, u["id"].is_(None)),
        InconsistencyKind.ORPHAN_UNIFIED: sa.and_(l["id"].is_(None), has_u),
        InconsistencyKind.STATUS_MISMATCH: sa.and_(
            has_l, has_u, mappable, sa.not_(compatible_clause(system, l["status"], u["status"]))
        ),
        InconsistencyKind.FIELD_MISMATCH: sa.and_(
            has_l,
            has_u,
            sa.or_(*(differs(name) for name in DATA_COLUMNS)),
        ),
        InconsistencyKind.UNMAPPABLE_LEGACY: sa.and_(has_l, sa.not_(mappable)),
        InconsistencyKind.LEGACY_STATUS_DRIFT: sa.and_(
            has_l,
            has_u,
            mappable,
            compatible_clause(system, l["status"], u["status"]),
            l["status"].is_distinct_from(u["legacy_status"]),
        ),
    }
    return {str(k): v for k, v in flags.items()}


def pair_flags(
    lt: LegacyTable,
    lo: int | None = None,
    hi: int | None = None,
    since: datetime | None = None,
    *,
    project_pending: bool = False,
    keys: Sequence[int] | None = None,
) -> _Pairs:
    """The pairs of legacy keys in (lo, hi] (None: open) and the rule over them.

    ``keys``: only the pairs of those legacy keys (index look-ups: the re-check).

    A full outer join, written as the two halves every engine plans well: legacy rows
    LEFT JOIN their unified row (an index lookup by legacy system + id, the range
    repeated on the unified side so PostgreSQL can merge two index ranges), UNION ALL
    the unified rows of the range whose legacy row does not exist (orphans, an
    anti-join on the legacy primary key). SQLite has no index on a materialised
    subquery, so a literal FULL JOIN of two filtered subqueries is quadratic there.
    """
    if lt.status is None:
        raise StorageError(f"legacy table {lt.name!r} has no status column any more")
    system = lt.system
    lcols: dict[str, sa.ColumnElement[Any]] = {name: lt.column(name) for name in _L_NAMES}
    if project_pending:
        lcols["status"] = projected_legacy_status(lt.status)
    ucols = {name: U.c[name] for name in _U_NAMES}
    on = sa.and_(
        U.c.legacy_system == system.value,
        U.c.legacy_id == lt.id,
        *_range(U.c.legacy_id, lo, hi),
        *_among(U.c.legacy_id, keys),
    )
    matched = (
        sa.select(
            *[c.label(f"l_{n}") for n, c in lcols.items()],
            *[c.label(f"u_{n}") for n, c in ucols.items()],
        )
        .select_from(lt.table.outerjoin(U, on))
        .where(*_range(lt.id, lo, hi), *_among(lt.id, keys))
    )
    gone = ~sa.exists(sa.select(lt.id).where(lt.id == U.c.legacy_id))
    orphans = sa.select(
        *[sa.cast(sa.null(), c.type).label(f"l_{n}") for n, c in lcols.items()],
        *[c.label(f"u_{n}") for n, c in ucols.items()],
    ).where(
        U.c.legacy_system == system.value,
        U.c.legacy_id.is_not(None),
        *_range(U.c.legacy_id, lo, hi),
        *_among(U.c.legacy_id, keys),
        gone,
    )
    p = sa.union_all(matched, orphans).subquery("p")
    flags = rule_flags(
        system,
        {n: p.c[f"l_{n}"] for n in _L_NAMES},
        {n: p.c[f"u_{n}"] for n in _U_NAMES},
    )
    scope: sa.ColumnElement[bool] = sa.true()
    if since is not None:
        scope = sa.or_(p.c.l_updated_at >= since, p.c.u_updated_at >= since)
    return _Pairs(p, flags, scope)


def projected_legacy_status(status: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The legacy status as it will be once the changes made in UNIFIED_ONLY are replayed.

    Legacy is frozen in UNIFIED_ONLY by design; each change made meanwhile is recorded
    for replay and the unified row keeps its legacy image (``legacy_status``). Comparing
    the frozen value would report every such change as a mismatch (and let the alerts
    roll back a healthy phase 4), so where a replay is pending the image stands in.
    """
    pending = sa.exists().where(
        pending_legacy_changes.c.transaction_id == U.c.id,
        pending_legacy_changes.c.replayed_at.is_(None),
    )
    return sa.case((pending, U.c.legacy_status), else_=status)


def pending_replay_exists(conn: sa.Connection) -> bool:
    """Whether any change awaits replay to legacy (only then is the projection needed)."""
    q = sa.select(pending_legacy_changes.c.id).where(pending_legacy_changes.c.replayed_at.is_(None))
    return conn.execute(q.limit(1)).first() is not None


def _as_int(cond: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.case((cond, 1), else_=0)


def _count_chunk(
    conn: sa.Connection, pairs: _Pairs, ops: DialectOps
) -> tuple[dict[str, int], list[int]]:
    """One statement: the counts of one chunk, summed by the database, and the legacy
    keys of its inconsistent pairs (to re-check; none in a consistent chunk)."""
    p = pairs.source
    any_kind = sa.or_(*pairs.flags.values())
    key = sa.case((any_kind, sa.func.coalesce(p.c.l_id, p.c.u_legacy_id)), else_=sa.null())
    cols: list[sa.ColumnElement[Any]] = [
        sa.func.count().label("total"),
        sa.func.sum(_as_int(sa.not_(any_kind))).label("ok"),
    ]
    cols += [sa.func.sum(_as_int(cond)).label(kind) for kind, cond in pairs.flags.items()]
    cols.append(ops.key_list(key).label("keys"))
    row = conn.execute(sa.select(*cols).select_from(p).where(pairs.scope)).one()._mapping
    keys = sorted({int(k) for k in str(row["keys"]).split(",")}) if row["keys"] else []
    return {k: int(v or 0) for k, v in row.items() if k != "keys"}, keys


def _next_bound(conn: sa.Connection, lt: LegacyTable, lo: int | None, chunk: int) -> int | None:
    """The upper key of the chunk after ``lo``, or None when it is the last (open) one."""
    keys = sa.select(lt.id.label("k")).where(*_range(lt.id, lo, None))
    sub = keys.order_by(lt.id).limit(chunk).subquery()
    hi, n = conn.execute(sa.select(sa.func.max(sub.c.k), sa.func.count()).select_from(sub)).one()
    return int(hi) if n >= chunk else None


def _row_values(row: Mapping[Any, Any], prefix: str, names: Sequence[str]) -> dict[str, Any] | None:
    values = {name: row[f"{prefix}{name}"] for name in names}
    return values if values["id"] is not None else None


def _inconsistent_rows(
    conn: sa.Connection, pairs: _Pairs, system: LegacySystemType, limit: int | None
) -> list[InconsistentRow]:
    p = pairs.source
    cols = [p.c[f"l_{n}"] for n in _L_NAMES] + [p.c[f"u_{n}"] for n in _U_NAMES]
    cols += [cond.label(f"f_{kind}") for kind, cond in pairs.flags.items()]
    q = sa.select(*cols).select_from(p).where(pairs.scope, sa.or_(*pairs.flags.values()))
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
                kinds=tuple(k for k in KINDS if row[f"f_{k}"]),
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
    while True:
        with engine.connect() as conn:
            hi = _next_bound(conn, lt, lo, chunk)
            project = pending_replay_exists(conn)
            pairs = pair_flags(lt, lo, hi, since, project_pending=project)
            rows = _inconsistent_rows(conn, pairs, lt.system, None)
        yield rows
        if hi is None:
            return
        lo = hi


# --- the re-check of what looks inconsistent ---------------------------------------

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
                rows = _inconsistent_rows(conn, pairs, system, None)
        except sa.exc.OperationalError:  # lock timeout or deadlock: what is committed
            with ops.engine.connect() as conn:
                rows = _inconsistent_rows(conn, pairs, system, None)
        yield from rows


# --- the check ------------------------------------------------------------------------


@dataclass
class _Scan:
    """What one check (or one round of continuous verification) scans, and how."""

    engine: sa.Engine
    ops: DialectOps
    settings: Settings
    since: datetime | None
    chunk: int
    examples: int
    project_pending: bool
    out: MismatchWriter | None = None
    recheck: bool = True
    kept_examples: list[dict[str, Any]] = field(default_factory=list)

    def range(
        self, conn: sa.Connection, lt: LegacyTable, lo: int | None
    ) -> tuple[int | None, dict[str, int]]:
        """Check the range above ``lo``: its upper key (None: the last) and its counts.

        Inconsistent pairs are re-checked (:func:`recheck`) before they are counted,
        kept as examples or written to --out; the read transaction ends before that.
        """
        hi = _next_bound(conn, lt, lo, self.chunk)
        pairs = pair_flags(lt, lo, hi, self.since, project_pending=self.project_pending)
        counts, keys = _count_chunk(conn, pairs, self.ops)
        conn.rollback()  # no snapshot or lock held while re-checking or between ranges
        if not keys:
            return hi, counts
        if self.recheck:
            found: Iterable[InconsistentRow] = recheck(
                self.ops,
                lt,
                keys,
                since=self.since,
                project_pending=self.project_pending,
                statement_ms=self.settings.statement_timeout_ms,
                lock_ms=self.settings.lock_timeout_ms,
            )
        else:
            with self.engine.connect() as read:
                found = _inconsistent_rows(
                    read, pair_flags(lt, since=self.since, keys=keys), lt.system, None
                )
        confirmed = dict.fromkeys(KINDS, 0)
        n = 0
        for row in found:
            n += 1
            for kind in row.kinds:
                confirmed[kind] += 1
            if len(self.kept_examples) < self.examples:
                self.kept_examples.append(row.as_example())
            if self.out is not None:
                self.out.write(row.as_record())
        return hi, {"total": counts["total"], "ok": max(counts["total"] - n, 0), **confirmed}


def _key_span(conn: sa.Connection, lt: LegacyTable) -> tuple[int | None, int | None]:
    lo, hi = conn.execute(sa.select(sa.func.min(lt.id), sa.func.max(lt.id))).one()
    return (int(lo) if lo is not None else None, int(hi) if hi is not None else None)


def _percent(pos: SystemPosition, span: tuple[int | None, int | None]) -> float:
    """How much of the system's key span the run has covered (100 when done)."""
    if pos.done:
        return 100.0
    lo, hi = span
    if pos.position is None or lo is None or hi is None:
        return 0.0
    if hi <= lo:
        return 100.0 if pos.position >= hi else 0.0
    return round(max(0.0, min(100.0, (pos.position - lo) / (hi - lo) * 100)), 2)


def _check_system(
    scan: _Scan,
    run: RunState,
    lt: LegacyTable,
    deadline: float | None,
    on_range: Callable[[LegacySystemType, SystemPosition], None] | None,
) -> bool:
    """Walk one system's ranges from its stored position; False when out of time."""
    pos = run.systems[lt.system]
    with scan.engine.connect() as conn:
        while not pos.done:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            hi, got = scan.range(conn, lt, pos.position)
            out_bytes = scan.out.sync() if scan.out is not None else None
            # The range's counts and the position past it, in one transaction: a run
            # killed at any point has done both or neither.
            pos.counts = add_counts(pos.counts, got)
            pos.examples = scan.kept_examples[: scan.examples]
            pos.position, pos.done = hi, hi is None
            pos.ranges += 1
            pos.out_bytes = out_bytes
            with scan.engine.begin() as write:
                run.commit(write, lt.system)
            if on_range is not None:
                on_range(lt.system, pos)
    return True


def run_check(
    engine: sa.Engine,
    settings: Settings,
    *,
    systems: Iterable[LegacySystemType | str] | LegacySystemType | str | None = None,
    since: str | datetime | None = None,
    examples: int = 10,
    store: bool = True,
    chunk: int = DEFAULT_CHUNK,
    resume: bool | str = False,
    max_duration: float | None = None,
    out: str | os.PathLike[str] | None = None,
    recheck_in_flight: bool = True,
    on_range: Callable[[LegacySystemType, SystemPosition], None] | None = None,
) -> CheckReport:
    """Diff every legacy table in scope against ``unified_transactions``; store the report.

    ``since`` (ISO time, age like ``1h``, or datetime) limits the check to pairs where
    either side was updated since then. ``examples`` inconsistent rows are kept in the
    report with both sides' values; ``out`` writes every one to a JSON-lines file.

    The run commits its position after each key range (``unistatus_check_runs``):
    ``resume=True`` (or a run id) goes on with the latest unfinished run, with its
    options, after a kill or a ``max_duration`` stop. ``max_duration`` (seconds) stops
    between ranges; the report is stored with ``complete=False`` and says how far each
    system got. With ``store=False`` nothing is written (positions stay in memory).
    """
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise InputError(f"examples must be a non-negative integer, got {examples!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"chunk must be a positive integer, got {chunk!r}")
    if max_duration is not None and not max_duration > 0:
        raise InputError(f"max_duration must be a positive number of seconds, got {max_duration!r}")
    deadline = time.monotonic() + max_duration if max_duration is not None else None
    started = time.perf_counter()
    try:
        run = _open_run(engine, systems, since, examples, chunk, out, resume, store)
        opts = run.options
        wanted = [LegacySystemType.parse(s) for s in opts["systems"]]
        since_at = parse_since(opts["since"])
        tables = resolve_legacy_tables(engine, settings, systems=wanted)
        out_path = opts.get("out")
        writer = MismatchWriter(out_path, keep_bytes=run.out_bytes) if out_path else None
        try:
            with engine.connect() as conn:
                project = pending_replay_exists(conn)
                spans = {s: _key_span(conn, tables[s]) for s in wanted}
            scan = _Scan(
                engine,
                ops_for(engine),
                settings,
                since_at,
                int(opts["chunk"]),
                int(opts["examples"]),
                project,
                writer,
                recheck_in_flight,
            )
            scan.kept_examples = [e for s in wanted for e in run.systems[s].examples]
            finished = True
            for system in wanted:
                if not _check_system(scan, run, tables[system], deadline, on_range):
                    finished = False
                    break
        finally:
            if writer is not None:
                writer.close()
    except sa.exc.OperationalError as exc:
        raise StorageError(f"check failed: {str(exc.orig).strip()}") from None
    report = _report_of(run, wanted, since_at, spans)
    report.examples = scan.kept_examples[: scan.examples]
    report.duration_ms = (time.perf_counter() - started) * 1000
    report.created_at = utcnow()
    report.complete = finished
    if finished:
        run.finish(engine)
    if store:
        _store(engine, report)
    return report


def _open_run(
    engine: sa.Engine,
    systems: Iterable[LegacySystemType | str] | LegacySystemType | str | None,
    since: str | datetime | None,
    examples: int,
    chunk: int,
    out: str | os.PathLike[str] | None,
    resume: bool | str,
    store: bool,
) -> RunState:
    if resume is False:
        wanted = parse_systems(systems)
        since_at = parse_since(since)
        options = {
            "systems": [s.value for s in wanted],
            "since": since_at.isoformat() if since_at else None,
            "scope": scope_of(wanted, since_at),
            "chunk": chunk,
            "examples": examples,
            "out": str(Path(out).resolve()) if out is not None else None,
        }
        return RunState.start(engine, options, wanted, persist=store)
    if systems is not None or since is not None or out is not None:
        raise InputError(
            "a resumed run keeps its own systems, --since and --out: give none of them"
        )
    if not store:
        raise InputError("a resumed run stores its report (store=False cannot resume)")
    with engine.connect() as conn:
        name = resume if isinstance(resume, str) else latest_unfinished(conn)
        state = RunState.load(conn, name) if name else None
    if state is None or name == CONTINUOUS:
        raise InputError(
            "no interrupted check run to resume"
            + (f" named {resume!r}" if isinstance(resume, str) else "")
            + ": run `unistatus check` without --resume"
        )
    if state.complete:
        raise InputError(f"check run {name} already covered everything: nothing to resume")
    return state


def _report_of(
    run: RunState,
    wanted: Sequence[LegacySystemType],
    since: datetime | None,
    spans: Mapping[LegacySystemType, tuple[int | None, int | None]],
) -> CheckReport:
    report = CheckReport(scope=str(run.options["scope"]), systems=[s.value for s in wanted])
    report.since = since
    report.run = run.run if run.persist else None
    report.started_at = run.started_at
    for system in wanted:
        pos = run.systems[system]
        c = pos.counts
        report.per_system[system.value] = {
            "total": c["total"],
            "consistent": c["ok"],
            "inconsistencies": {k: c[k] for k in KINDS},
            "complete": pos.done,
            "ranges": pos.ranges,
            "position": pos.position,
            "percent": _percent(pos, spans[system]),
            "started_at": pos.started_at.isoformat(),
        }
        report.total += c["total"]
        report.consistent += c["ok"]
        for kind in KINDS:
            report.inconsistencies[kind] += c[kind]
    return report


# --- stored reports -------------------------------------------------------------------


def _store(engine: sa.Engine, report: CheckReport) -> None:
    values = {
        "scope": report.scope,
        "systems": report.systems,
        "since": report.since,
        "total": report.total,
        "consistent": report.consistent,
        "consistency_rate": report.consistency_rate,
        "inconsistencies": report.inconsistencies,
        "per_system": report.per_system,
        "examples": report.examples,
        "duration_ms": report.duration_ms,
        "started_at": report.started_at,
        "created_at": report.created_at,
        "complete": report.complete,
        "run": report.run,
    }
    with engine.begin() as conn:
        report.id = int(
            conn.execute(
                sa.insert(check_reports).values(values).returning(check_reports.c.id)
            ).scalar_one()
        )


def _from_row(row: Mapping[Any, Any]) -> CheckReport:
    report = CheckReport(
        scope=row["scope"],
        systems=list(row["systems"]),
        total=int(row["total"]),
        consistent=int(row["consistent"]),
        inconsistencies={**dict.fromkeys(KINDS, 0), **row["inconsistencies"]},
        per_system=dict(row["per_system"]),
        examples=list(row["examples"]),
        since=as_utc(row["since"]),
        duration_ms=float(row["duration_ms"]),
        id=int(row["id"]),
        complete=bool(row["complete"]),
        run=row["run"],
    )
    report.started_at = as_utc(row["started_at"]) or report.started_at
    report.created_at = as_utc(row["created_at"]) or report.created_at
    return report


def latest_report(
    engine: sa.Engine,
    *,
    scope: str | None = None,
    complete: bool = False,
    covering_since: datetime | None = None,
) -> CheckReport | None:
    """The most recent stored report (of ``scope``, e.g. :data:`FULL_SCOPE`), or None.

    ``scope=None`` returns the most recent report whatever its scope; a phase gate that
    needs "everything is consistent" should ask for ``scope="all"`` and ``complete=True``
    (a run stopped by --max-duration is stored too, and covered only part of the keys).
    ``covering_since``: only reports of every change since then (no ``since``, or an
    earlier one), so a newer, narrower report (continuous verification) does not hide it.
    """
    R = check_reports
    q = sa.select(R).order_by(R.c.created_at.desc(), R.c.id.desc())
    if scope is not None:
        q = q.where(R.c.scope == scope)
    if complete:
        q = q.where(R.c.complete.is_(True))
    if covering_since is not None:
        q = q.where(sa.or_(R.c.since.is_(None), R.c.since <= covering_since))
    with engine.connect() as conn:
        row = conn.execute(q.limit(1)).mappings().first()
    return _from_row(row) if row else None
