"""``unistatus check``: the full, set-based diff between the legacy tables and unified.

One statement per chunk of legacy keys, counted by the database; the report is stored
(``unistatus_check_reports``) for the gates, alerts and dashboard. How rows are paired
and counted: docs/check.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.db.legacy import DATA_COLUMNS, LEGACY_COLUMNS, LegacyTable, resolve_legacy_tables
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.db.tables_check import check_reports
from unistatus.domain import consistency
from unistatus.domain.consistency import InconsistencyKind
from unistatus.domain.mapping import LegacyStatusMapper, compatible_clause
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, StorageError

__all__ = [
    "DEFAULT_CHUNK",
    "FULL_SCOPE",
    "KINDS",
    "CheckReport",
    "InconsistentRow",
    "iter_inconsistent",
    "latest_report",
    "latest_report_for",
    "pair_flags",
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
) -> _Pairs:
    """The pairs of legacy keys in (lo, hi] (None: open) and the rule over them.

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
    )
    matched = (
        sa.select(
            *[c.label(f"l_{n}") for n, c in lcols.items()],
            *[c.label(f"u_{n}") for n, c in ucols.items()],
        )
        .select_from(lt.table.outerjoin(U, on))
        .where(*_range(lt.id, lo, hi))
    )
    gone = ~sa.exists(sa.select(lt.id).where(lt.id == U.c.legacy_id))
    orphans = sa.select(
        *[sa.cast(sa.null(), c.type).label(f"l_{n}") for n, c in lcols.items()],
        *[c.label(f"u_{n}") for n, c in ucols.items()],
    ).where(
        U.c.legacy_system == system.value,
        U.c.legacy_id.is_not(None),
        *_range(U.c.legacy_id, lo, hi),
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


def _count_chunk(conn: sa.Connection, pairs: _Pairs) -> dict[str, int]:
    """One statement: the counts of one chunk, summed by the database."""
    any_kind = sa.or_(*pairs.flags.values())
    cols = [sa.func.count().label("total"), sa.func.sum(_as_int(sa.not_(any_kind))).label("ok")]
    cols += [sa.func.sum(_as_int(cond)).label(kind) for kind, cond in pairs.flags.items()]
    row = conn.execute(sa.select(*cols).select_from(pairs.source).where(pairs.scope)).one()
    return {key: int(value or 0) for key, value in row._mapping.items()}


def _next_bound(conn: sa.Connection, lt: LegacyTable, lo: int | None, chunk: int) -> int | None:
    """The upper key of the chunk after ``lo``, or None when it is the last (open) one."""
    keys = sa.select(lt.id.label("k")).where(*_range(lt.id, lo, None))
    sub = keys.order_by(lt.id).limit(chunk).subquery()
    hi, n = conn.execute(sa.select(sa.func.max(sub.c.k), sa.func.count()).select_from(sub)).one()
    return int(hi) if n >= chunk else None


def _key_chunks(
    conn: sa.Connection, lt: LegacyTable, chunk: int
) -> Iterator[tuple[int | None, int | None]]:
    """(lo, hi] legacy key ranges of ``chunk`` keys; first open below, last open above."""
    lo: int | None = None
    while True:
        hi = _next_bound(conn, lt, lo, chunk)
        yield lo, hi
        if hi is None:
            return
        lo = hi


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


# --- the check ------------------------------------------------------------------------


def _check_system(
    conn: sa.Connection,
    lt: LegacyTable,
    since: datetime | None,
    report: CheckReport,
    examples: int,
    chunk: int,
    project_pending: bool,
) -> None:
    counts = dict.fromkeys(("total", "ok", *KINDS), 0)
    for lo, hi in _key_chunks(conn, lt, chunk):
        pairs = pair_flags(lt, lo, hi, since, project_pending=project_pending)
        got = _count_chunk(conn, pairs)
        for key, value in got.items():
            counts[key] += value
        wanted = examples - len(report.examples)
        if wanted > 0 and got["ok"] < got["total"]:
            found = _inconsistent_rows(conn, pairs, lt.system, wanted)
            report.examples.extend(r.as_example() for r in found)
        # End the read transaction between chunks: no snapshot or lock held for long.
        conn.rollback()
    report.per_system[lt.system.value] = {
        "total": counts["total"],
        "consistent": counts["ok"],
        "inconsistencies": {k: counts[k] for k in KINDS},
    }
    report.total += counts["total"]
    report.consistent += counts["ok"]
    for kind in KINDS:
        report.inconsistencies[kind] += counts[kind]


def run_check(
    engine: sa.Engine,
    settings: Settings,
    *,
    systems: Iterable[LegacySystemType | str] | LegacySystemType | str | None = None,
    since: str | datetime | None = None,
    examples: int = 10,
    store: bool = True,
    chunk: int = DEFAULT_CHUNK,
) -> CheckReport:
    """Diff every legacy table in scope against ``unified_transactions``; store the report.

    ``since`` (ISO time, age like ``1h``, or datetime) limits the check to pairs where
    either side was updated since then. ``examples`` inconsistent rows are kept in the
    report with both sides' values.
    """
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise InputError(f"examples must be a non-negative integer, got {examples!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"chunk must be a positive integer, got {chunk!r}")
    wanted = parse_systems(systems)
    since_at = parse_since(since)
    tables = resolve_legacy_tables(engine, settings, systems=wanted)
    report = CheckReport(scope=scope_of(wanted, since_at), systems=[s.value for s in wanted])
    report.since = since_at
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            project = pending_replay_exists(conn)
            for system in wanted:
                _check_system(conn, tables[system], since_at, report, examples, chunk, project)
    except sa.exc.OperationalError as exc:
        raise StorageError(f"check failed: {str(exc.orig).strip()}") from None
    report.duration_ms = (time.perf_counter() - started) * 1000
    report.created_at = utcnow()
    if store:
        _store(engine, report)
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
    )
    report.started_at = as_utc(row["started_at"]) or report.started_at
    report.created_at = as_utc(row["created_at"]) or report.created_at
    return report


def latest_report(engine: sa.Engine, *, scope: str | None = None) -> CheckReport | None:
    """The most recent stored report (of ``scope``, e.g. :data:`FULL_SCOPE`), or None.

    ``scope=None`` returns the most recent report whatever its scope; a phase gate that
    needs "everything is consistent" should ask for ``scope="all"``.
    """
    q = sa.select(check_reports).order_by(
        check_reports.c.created_at.desc(), check_reports.c.id.desc()
    )
    if scope is not None:
        q = q.where(check_reports.c.scope == scope)
    with engine.connect() as conn:
        row = conn.execute(q.limit(1)).mappings().first()
    return _from_row(row) if row else None


# How many recent reports latest_report_for looks through for one covering a system.
COVERING_LOOKBACK = 200


def latest_report_for(
    engine: sa.Engine, system: LegacySystemType, *, full: bool
) -> CheckReport | None:
    """The most recent stored report that covered ``system`` (``full``: all its rows,
    no ``--since``), or None; a full check of every system covers each."""
    q = (
        sa.select(check_reports)
        .order_by(check_reports.c.created_at.desc(), check_reports.c.id.desc())
        .limit(COVERING_LOOKBACK)
    )
    if full:
        q = q.where(check_reports.c.since.is_(None))
    with engine.connect() as conn:
        for row in conn.execute(q).mappings():
            report = _from_row(row)
            if system.value in report.systems or not report.systems:
                return report
    return None
