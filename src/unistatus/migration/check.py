"""``unistatus check``: the full, set-based diff between the legacy tables and unified.

One statement per chunk of legacy keys, counted by the database; the report is stored
(``unistatus_check_reports``) for the gates, alerts and dashboard. How rows are paired
and counted: docs/check.md.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.db.binding import require_bound
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables_check import check_reports
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, StorageError
from unistatus.migration.check_out import MismatchWriter
from unistatus.migration.check_runs import (
    CONTINUOUS,
    RunState,
    SystemPosition,
    add_counts,
    latest_unfinished,
)
from unistatus.migration.check_sql import (
    DEFAULT_CHUNK,
    KINDS,
    RECHECK_BATCH,
    InconsistentRow,
    chunk_keys,
    count_chunk,
    count_first_keys,
    example_window,
    inconsistent_rows,
    iter_inconsistent,
    pair_flags,
    pending_replay_exists,
    projected_legacy_status,
    recheck,
    rule_flags,
)
from unistatus.migration.check_times import parse_duration, parse_since

# Inconsistent pairs updated this recently may be a write in flight: they are re-checked.
# Older ones have been inconsistent for longer than any write takes.
RECHECK_WINDOW = timedelta(minutes=5)

__all__ = [
    "DEFAULT_CHUNK",
    "RECHECK_BATCH",
    "RangeScan",
    "FULL_SCOPE",
    "KINDS",
    "CheckReport",
    "InconsistentRow",
    "count_first_keys",
    "iter_inconsistent",
    "latest_report",
    "latest_report_for",
    "pair_flags",
    "pending_replay_exists",
    "projected_legacy_status",
    "recheck",
    "rule_flags",
    "parse_duration",
    "parse_since",
    "parse_systems",
    "run_check",
    "scope_of",
    "store_report",
]

FULL_SCOPE = "all"  # every system, every row: what phase gates should read


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


# --- inputs ---------------------------------------------------------------------------


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


# --- the check ------------------------------------------------------------------------


@dataclass
class RangeScan:
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
    # Count by one FULL JOIN (check_sql.pair_flags): when other ranges are counted at once.
    full_join: bool = False

    def range(
        self, conn: sa.Connection, lt: LegacyTable, lo: int | None
    ) -> tuple[int | None, dict[str, int]]:
        """Check the range above ``lo``: its upper key (None: the last) and its counts.

        Inconsistent pairs updated within :data:`RECHECK_WINDOW` (a write may be in
        flight) are re-checked (:func:`recheck`) before they are counted, kept as
        examples or written to --out; older ones have been inconsistent for longer than
        any write takes. Nothing more is read for a consistent range.
        """
        hi, span = chunk_keys(conn, lt, lo, self.chunk)
        pairs = pair_flags(
            lt, lo, hi, self.since, project_pending=self.project_pending, full_join=self.full_join
        )
        cutoff = utcnow() - RECHECK_WINDOW
        self.ops.plan_for_scans(conn, self.settings.check_work_mem_mb)
        counts, recent, spots = count_chunk(conn, pairs, cutoff, span)
        if counts["ok"] >= counts["total"]:
            conn.rollback()
            return hi, counts
        # The recent inconsistent pairs, as first seen (their kinds, by key, from the
        # counting statement), then as they are once no write to them is in flight
        # (None: consistent now, a write caught half-way).
        now: dict[int, InconsistentRow | None] = {}
        # Every inconsistent pair of the range is a recent one: the re-check read them
        # all, and the examples and --out need no read of their own.
        covered = self.recheck and len(recent) == counts["total"] - counts["ok"]
        if recent and self.recheck:
            conn.rollback()  # no snapshot held while waiting for writers
            keys = sorted(recent)
            now = dict.fromkeys(keys)
            for row in recheck(
                self.ops,
                lt,
                keys,
                since=self.since,
                project_pending=self.project_pending,
                statement_ms=self.settings.statement_timeout_ms,
                lock_ms=self.settings.lock_timeout_ms,
            ):
                if row.legacy_id is not None:
                    now[row.legacy_id] = row
            for kinds in recent.values():  # counted as first seen: count them as they are now
                counts["ok"] += 1
                for kind in kinds:
                    counts[kind] -= 1
            for still in now.values():
                if still is not None:
                    counts["ok"] -= 1
                    for kind in still.kinds:
                        counts[kind] += 1
        wanted = self.examples - len(self.kept_examples)
        if wanted > 0 or self.out is not None:
            window = None if self.out is not None else example_window(spots, wanted)
            if covered:
                listed = [row for row in now.values() if row is not None]
            elif window is not None:
                # Only the examples: read from the keys the counting statement located
                # them in (a few slices of the range), not from the whole range again.
                near = pair_flags(lt, *window, self.since, project_pending=self.project_pending)
                self.ops.plan_for_scans(conn)
                listed = inconsistent_rows(conn, near, lt.system, wanted)
            else:
                self.ops.plan_for_scans(conn)
                listed = inconsistent_rows(conn, pairs, lt.system, None if self.out else wanted)
            for first in listed:
                shown = now.get(first.legacy_id, first) if first.legacy_id in now else first
                if shown is None:
                    continue
                if len(self.kept_examples) < self.examples:
                    self.kept_examples.append(shown.as_example())
                if self.out is not None:
                    self.out.write(shown.as_record())
        conn.rollback()
        counts["ok"] = max(0, min(counts["ok"], counts["total"]))
        return hi, counts


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
    scan: RangeScan,
    run: RunState,
    lt: LegacyTable,
    deadline: float | None,
    on_range: Callable[[LegacySystemType, SystemPosition], None] | None,
    stop: threading.Event | None = None,
) -> bool:
    """Walk one system's ranges from its stored position; False when out of time (or
    told to ``stop``: another system's walk failed)."""
    pos = run.systems[lt.system]
    with scan.engine.connect() as conn:
        while not pos.done:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if stop is not None and stop.is_set():
                return False
            hi, got = scan.range(conn, lt, pos.position)
            out_bytes = scan.out.sync() if scan.out is not None else None
            # The range's counts and the position past it, in one transaction: a run
            # killed at any point has done both or neither. On the range's connection,
            # committed asynchronously (PostgreSQL, :meth:`DialectOps.bound_batch`): a
            # server crash may lose the last positions, never half of one, and a resumed
            # run then checks those ranges again.
            pos.counts = add_counts(pos.counts, got)
            pos.examples = scan.kept_examples[: scan.examples]
            pos.position, pos.done = hi, hi is None
            pos.ranges += 1
            pos.out_bytes = out_bytes
            with conn.begin():
                settings = scan.settings
                scan.ops.bound_batch(conn, settings.statement_timeout_ms, settings.lock_timeout_ms)
                run.commit(conn, lt.system)
            if on_range is not None:
                on_range(lt.system, pos)
    return True


def _check_systems(
    scans: Mapping[LegacySystemType, RangeScan],
    run: RunState,
    tables: Mapping[LegacySystemType, LegacyTable],
    deadline: float | None,
    on_range: Callable[[LegacySystemType, SystemPosition], None] | None,
    at_once: bool,
) -> bool:
    """Walk every system's ranges; False when out of time before all were covered.

    ``at_once``: each system on its own connection and thread, side by side (PostgreSQL;
    each system's positions are its own rows, committed on its own connection). Not with
    ``--out``: one file receives every system's mismatches and a resumed run cuts it at
    one byte offset, so the systems are walked one after another.
    """
    order = list(scans)
    if not at_once:
        for system in order:
            if not _check_system(scans[system], run, tables[system], deadline, on_range):
                return False
        return True
    failed = threading.Event()

    def walk(system: LegacySystemType) -> bool:
        try:
            return _check_system(scans[system], run, tables[system], deadline, on_range, failed)
        except BaseException:
            failed.set()  # the others stop after their range: the error is reported now
            raise

    with ThreadPoolExecutor(max_workers=len(order), thread_name_prefix="check") as pool:
        futures = [pool.submit(walk, system) for system in order]
        return all([f.result() for f in futures])


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
    require_bound(engine, settings.schema)  # before the run's first row is written
    try:
        run = _open_run(engine, systems, since, examples, chunk, out, resume, store)
        opts = run.options
        wanted = [LegacySystemType.parse(s) for s in opts["systems"]]
        since_at = parse_since(opts["since"])
        tables = resolve_legacy_tables(engine, settings, systems=wanted, columns_only=True)
        out_path = opts.get("out")
        writer = MismatchWriter(out_path, keep_bytes=run.out_bytes) if out_path else None
        try:
            with engine.connect() as conn:
                project = pending_replay_exists(conn)
                spans = {s: _key_span(conn, tables[s]) for s in wanted}
            ops = ops_for(engine)
            at_once = ops.concurrent_reads and len(wanted) > 1 and writer is None
            scans = {
                system: RangeScan(
                    engine,
                    ops,
                    settings,
                    since_at,
                    int(opts["chunk"]),
                    int(opts["examples"]),
                    project,
                    writer,
                    recheck_in_flight,
                    kept_examples=list(run.systems[system].examples),
                    full_join=at_once,
                )
                for system in wanted
            }
            finished = _check_systems(scans, run, tables, deadline, on_range, at_once)
        finally:
            if writer is not None:
                writer.close()
    except sa.exc.OperationalError as exc:
        raise StorageError(f"check failed: {str(exc.orig).strip()}") from None
    report = _report_of(run, wanted, since_at, spans)
    kept = [e for system in wanted for e in scans[system].kept_examples]
    report.examples = kept[: int(opts["examples"])]
    report.duration_ms = (time.perf_counter() - started) * 1000
    report.created_at = utcnow()
    report.complete = finished
    if finished:
        run.finish(engine)
    if store:
        store_report(engine, report)
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


def store_report(engine: sa.Engine, report: CheckReport) -> None:
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
    not_scope: str | None = None,
) -> CheckReport | None:
    """The most recent stored report (of ``scope``, e.g. :data:`FULL_SCOPE`; not of
    ``not_scope``), or None.

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
    if not_scope is not None:
        q = q.where(R.c.scope != not_scope)
    if complete:
        q = q.where(R.c.complete.is_(True))
    if covering_since is not None:
        q = q.where(sa.or_(R.c.since.is_(None), R.c.since <= covering_since))
    with engine.connect() as conn:
        row = conn.execute(q.limit(1)).mappings().first()
    return _from_row(row) if row else None


# How many recent reports latest_report_for looks through for one covering a system.
COVERING_LOOKBACK = 200


def latest_report_for(
    engine: sa.Engine,
    system: LegacySystemType,
    *,
    full: bool,
    not_scope: str | None = None,
    partial_scope: str | None = None,
) -> CheckReport | None:
    """The most recent stored report that covered ``system`` (``full``: all its rows,
    no ``--since``), or None; a full check of every system covers each.

    An incomplete report (a run stopped by --max-duration) covered only part of the
    keys and is skipped, except a report of ``partial_scope``: a round of continuous
    verification is stored incomplete while any system's pass goes on, and its figures
    per system are each that system's own.
    """
    R = check_reports
    whole: sa.ColumnElement[bool] = R.c.complete.is_(True)
    if partial_scope is not None:
        whole = sa.or_(whole, R.c.scope == partial_scope)
    q = (
        sa.select(R)
        .order_by(R.c.created_at.desc(), R.c.id.desc())
        .where(whole)
        .limit(COVERING_LOOKBACK)
    )
    if full:
        q = q.where(R.c.since.is_(None))
    if not_scope is not None:
        q = q.where(R.c.scope != not_scope)
    with engine.connect() as conn:
        for row in conn.execute(q).mappings():
            report = _from_row(row)
            if system.value in report.systems or not report.systems:
                return report
    return None
