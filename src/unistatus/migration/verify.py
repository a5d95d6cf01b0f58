"""Continuous verification: every row changed since the last verified point, each round.

``monitor`` and ``serve`` call :func:`verify_changes` on each evaluation. Per legacy
system it keeps a *watermark* (every change stamped before it has been verified) and a
*pass*: the key ranges are walked with the check's own statement, restricted to pairs
where either side was updated since ``watermark - SLACK``; a round stops, per system,
after the range that reaches ``max_rows`` rows or ``max_seconds``, and the next round
goes on from there. When a pass has covered every range, the moment it began becomes
the new watermark. Position and watermark live in ``unistatus_check_runs`` (run
``continuous``), committed range by range like a check's. Inconsistent pairs are
re-checked as the check does (no alarm from a write in flight); a pass ends counting the
transactions acknowledged without a legacy row (``missing_legacy``) changed since its
watermark, as the check counts them. Each round that
verified rows stores a report (scope ``continuous``, ``complete`` when every system
finished its pass and none waited), which the alerts read; gates read complete full
checks only.

Beside live traffic (other applications' sessions at work:
:meth:`~unistatus.db.dialect.DialectOps.live_sessions`) a new pass waits until the time
since the last one began is :data:`BUSY_PACE` times that pass's length, and at most
``busy_max_wait``: a pass reads every key range, and live writes wait for the core it
takes. A pass in progress goes on by one range of ``chunk / BUSY_NARROWER`` keys a
round (it may have begun while the database was quiet) for ``busy_max_wait`` after it
began, then as when quiet: the watermark lags by at most about twice (that wait, a pass
and an evaluation). A system that waits verifies
nothing that round; its figures in the round's report are its last pass's, marked
``deferred`` and left out of the round's totals, so the alerts keep judging it by what
it last found.

Limits: the legacy and unified tables have no index on ``updated_at`` (revision 0012
keeps status changes HOT), so a pass reads every key range once, filtered before the
join (only the changed pairs are joined: ``check_sql.pair_flags`` with ``since``); the
time bound spreads a big table's pass over several rounds: its length grows with the
table, not each evaluation's; a writer
transaction open longer than ``SLACK`` can commit a change stamped before the
watermark (a full ``unistatus check`` still sees it).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.db.dialect import DialectOps, ops_for
from unistatus.db.failures import one_line
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.queued_legacy import count_missing_legacy
from unistatus.db.server_clock import clock_of, database_now
from unistatus.db.tables_check import check_reports
from unistatus.domain.consistency import InconsistencyKind
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import StorageError
from unistatus.migration.check_reports import (
    CONTINUOUS_SCOPE,
    FULL_SCOPE,
    CheckReport,
    full_check_starts,
    inconsistent_reports,
    insert_report,
    latest_report,
    latest_report_for,
)
from unistatus.migration.check_rule import KINDS
from unistatus.migration.check_runs import (
    CONTINUOUS,
    RunState,
    SystemPosition,
    add_counts,
    zero_counts,
)
from unistatus.migration.check_scan import RangeScan
from unistatus.migration.check_sql import DEFAULT_CHUNK
from unistatus.migration.unreplayed import projected_systems

__all__ = [
    "CONTINUOUS_SCOPE",
    "BUSY_NARROWER",
    "BUSY_PACE",
    "DEFAULT_BUSY_MAX_WAIT",
    "DEFAULT_ROWS_PER_ROUND",
    "DEFAULT_SECONDS_PER_ROUND",
    "SLACK",
    "judged_report",
    "system_populations",
    "verification_status",
    "verify_changes",
]

# Changed rows verified per round and system, at most (a round ends after the range
# that reaches it).
DEFAULT_ROWS_PER_ROUND = 200_000
# Seconds a round spends on one system, at most (a range begun is finished): the pass
# reads every key range (no index on updated_at), about 1.3 s per million legacy rows
# on the 2-core test machine, so a big table's pass is spread over several rounds
# instead of holding the monitor's evaluation (and its alerts) for its whole length.
DEFAULT_SECONDS_PER_ROUND = 2.0
# Changes stamped this long before the watermark are verified again by the next pass:
# a writer's transaction commits after it stamped its rows, and hosts' clocks differ.
SLACK = timedelta(seconds=60)
# Beside live traffic, a pass takes at most one part in BUSY_PACE of the time: the next
# begins BUSY_PACE times the last one's length after it began (a pass of 1M rows, ~1.5
# s, every ~15 s instead of each evaluation).
BUSY_PACE = 10.0
# A young pass beside live traffic reads one range a round, this many times narrower
# than ``chunk`` (25k keys of the default 250k: about 0.07 s of one core per system at
# 1M rows).
BUSY_NARROWER = 10
# A new pass begins at most this many seconds after the last began (the gates and
# alerts read a rate a few minutes old at most: the watermark's lag stays below this, a
# pass and an evaluation).
DEFAULT_BUSY_MAX_WAIT = 120.0


def _verified_by_full_check(conn: sa.Connection) -> datetime | None:
    """Where a first pass may start: the start of the latest complete full check."""
    R = check_reports
    q = (
        sa.select(R.c.started_at)
        .where(R.c.scope == FULL_SCOPE, R.c.complete.is_(True))
        .order_by(R.c.started_at.desc())
        .limit(1)
    )
    return as_utc(conn.execute(q).scalar_one_or_none())


def _state(engine: sa.Engine) -> RunState:
    with engine.connect() as conn:
        state = RunState.load(conn, CONTINUOUS)
        verified = _verified_by_full_check(conn)
    missing = [s for s in LegacySystemType if state is None or s not in state.systems]
    if missing:
        try:
            new = RunState.start(engine, {"scope": CONTINUOUS_SCOPE}, missing, run=CONTINUOUS)
        except sa.exc.IntegrityError:  # another monitor created them first
            new = None
        with engine.connect() as conn:
            state = RunState.load(conn, CONTINUOUS)
        if state is not None and new is not None:
            with engine.begin() as conn:
                for system in missing:
                    state.systems[system].watermark = verified
                    state.commit(conn, system)
    if state is None:
        raise StorageError("continuous verification: its positions cannot be read")
    return state


def verify_changes(
    engine: sa.Engine,
    settings: Settings,
    *,
    max_rows: int = DEFAULT_ROWS_PER_ROUND,
    max_seconds: float | None = DEFAULT_SECONDS_PER_ROUND,
    busy_max_wait: float = DEFAULT_BUSY_MAX_WAIT,
    busy_pace: float = BUSY_PACE,
    chunk: int = DEFAULT_CHUNK,
    store: bool = True,
) -> CheckReport:
    """One round of continuous verification (see the module doc); its report.

    Per system, the round ends after the range that reaches ``max_rows`` changed rows
    or ``max_seconds`` (None: no time bound); at least one range is read, and the next
    round goes on from there. Beside live traffic a pass in progress reads one range of
    ``chunk / BUSY_NARROWER`` keys for ``busy_max_wait`` after it began (``max_rows``
    and ``max_seconds`` apply again after that), and a new pass waits (``busy_pace`` times
    the last pass's length, ``busy_max_wait`` seconds at most; 0: never waits): the
    system then verifies nothing this round: its figures are its last pass's, marked
    ``deferred`` and left out of the round's totals, and the round is stored incomplete
    (the alerts read it; no gate takes it for a complete verification).
    """
    started = time.perf_counter()
    ops = ops_for(engine)
    try:
        state = _state(engine)
        tables = resolve_legacy_tables(engine, settings, require_status=False, columns_only=True)
        with engine.connect() as conn:
            # The database's clock: a pass's start becomes the watermark that rows'
            # updated_at are compared with (a host clock ahead would skip them).
            now = database_now(conn)
            clock_of(engine).measure(conn)  # a write in flight is judged on it (check_scan)
            projected = projected_systems(conn)
            # Last (its failure spoils nothing read). Siblings count: in `serve` they
            # are its API's writes (`monitor`'s sessions are a tool's, never counted).
            busy = busy_max_wait > 0 and bool(ops.live_sessions_if_known(conn, siblings=True))
        report = CheckReport(scope=CONTINUOUS_SCOPE, systems=[s.value for s in LegacySystemType])
        report.run = CONTINUOUS
        complete = True
        watermarks: list[datetime] = []
        for system in LegacySystemType:
            lt = tables.get(system)
            pos = state.systems[system]
            if lt is None or lt.status is None:
                continue  # retired: legacy holds no status any more
            if busy and pos.watermark is not None and _waits(pos, now, busy_pace, busy_max_wait):
                # Its last pass's figures, carried over (out of the round's totals).
                carried = _figures(pos.counts, True, pos.watermark)
                report.per_system[system.value] = {**carried, "deferred": "live_traffic"}
                watermarks.append(pos.watermark)
                complete = False  # not verified up to now: no gate takes this round
                continue
            if pos.pass_started_at is None:  # a new pass
                pos.pass_started_at = now
                pos.position, pos.done, pos.counts, pos.ranges = None, False, zero_counts(), 0
            since = pos.watermark - SLACK if pos.watermark is not None else None
            # One core (no parallel workers), the others left to live traffic; beside
            # it, one narrow range a round while the pass is young (then as when quiet,
            # so that the watermark's lag stays bounded).
            width, until = chunk, None
            if busy and _young(pos, now, busy_max_wait):
                width, until = max(1, chunk // BUSY_NARROWER), time.monotonic()
            elif max_seconds is not None:
                until = time.monotonic() + max_seconds
            scan = RangeScan(
                engine, ops, settings, since, width, 0, system in projected, parallel=False
            )
            got = zero_counts()
            with engine.connect() as conn:
                while True:
                    hi, counts = scan.range(conn, lt, pos.position)
                    got = add_counts(got, counts)
                    pos.counts = add_counts(pos.counts, counts)
                    pos.position, pos.ranges = hi, pos.ranges + 1
                    if hi is None:  # the pass is done: its start is the new watermark
                        pos.watermark, pos.pass_started_at = pos.pass_started_at, None
                        pos.position = None
                        # Acknowledged without a legacy row: no legacy key to pair
                        # them by, counted once a pass as check counts them.
                        missing = _missing_legacy(conn, ops, system, since)
                        got = add_counts(got, missing)
                        pos.counts = add_counts(pos.counts, missing)
                    # On the range's connection, committed asynchronously as a check's
                    # positions are (PostgreSQL): a crash may lose the last positions,
                    # and the next round then verifies those ranges again.
                    with conn.begin():
                        ops.bound_batch(
                            conn, settings.statement_timeout_ms, settings.lock_timeout_ms
                        )
                        state.commit(conn, system)
                    if hi is None:
                        break
                    if got["total"] >= max_rows or (
                        until is not None and time.monotonic() >= until
                    ):
                        complete = False
                        break
            if pos.watermark is not None:
                watermarks.append(pos.watermark)
            report.per_system[system.value] = _figures(
                got, pos.pass_started_at is None, pos.watermark
            )
            report.total += got["total"]
            report.consistent += got["ok"]
            for kind in KINDS:
                report.inconsistencies[kind] += got[kind]
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"continuous verification failed: {one_line(exc)}") from None
    report.since = min(watermarks) - SLACK if watermarks else None
    report.complete = complete
    report.duration_ms = (time.perf_counter() - started) * 1000
    report.created_at = utcnow()
    if store and report.total > 0:
        # A round that verified nothing stores nothing: 0 of 0 would read as 100%.
        with engine.begin() as conn:
            report.created_at = database_now(conn)  # the clock of the watermark
            insert_report(conn, report)
    return report


def _missing_legacy(
    conn: sa.Connection, ops: DialectOps, system: LegacySystemType, since: datetime | None
) -> dict[str, int]:
    """The system's transactions acknowledged without a legacy row (``missing_legacy``)
    changed since ``since``, as counts to add to a pass's (read on one core, as the
    pass's ranges are)."""
    ops.plan_for_scans(conn, parallel=False)
    n = count_missing_legacy(conn, [system.value], since)[system.value]
    conn.rollback()  # the read's transaction ends: the position is committed after it
    return {"total": n, InconsistencyKind.MISSING_LEGACY.value: n}


def _waits(pos: SystemPosition, now: datetime, pace: float, max_wait: float) -> bool:
    """Beside live traffic, whether a new pass waits (the module doc). The last pass,
    from its start (the watermark) to its last range (its position's ``updated_at``),
    took ``length``; the next begins ``pace`` times that after it began, ``max_wait`` at
    most. (A pass spread over several rounds counts the time between them too: the next
    waits longer, up to ``max_wait``.)"""
    if pos.pass_started_at is not None or pos.watermark is None:
        return False  # a pass begun goes on; a system never verified begins now
    length = max((pos.updated_at - pos.watermark).total_seconds(), 0.0)
    waited = (now - pos.watermark).total_seconds()
    # A negative wait: the database's clock was set back since the last pass began.
    return 0 <= waited < min(length * pace, max_wait)


def _young(pos: SystemPosition, now: datetime, max_wait: float) -> bool:
    """The pass in progress began less than ``max_wait`` seconds ago (beside live
    traffic it then reads one narrow range a round; older, as when quiet)."""
    if pos.pass_started_at is None:
        return False
    return (now - pos.pass_started_at).total_seconds() < max_wait


def _figures(counts: dict[str, int], complete: bool, watermark: datetime | None) -> dict[str, Any]:
    """One system's figures in a round's report, from its counts."""
    return {
        "total": int(counts.get("total", 0)),
        "consistent": int(counts.get("ok", 0)),
        "inconsistencies": {kind: int(counts.get(kind, 0)) for kind in KINDS},
        "complete": complete,
        "watermark": watermark.isoformat() if watermark else None,
    }


def verification_status(engine: sa.Engine, *, now: datetime | None = None) -> dict[str, Any]:
    """The watermark of continuous verification and its age (lag), per system and overall.

    ``watermark`` None: it has never completed a pass (``lag_seconds`` None too).
    """
    try:
        with engine.connect() as conn:
            state = RunState.load(conn, CONTINUOUS)
            now = now or database_now(conn)  # the watermark's clock
    except sa.exc.SQLAlchemyError:
        state = None
    now = now or utcnow()
    systems: dict[str, Any] = {}
    marks = []
    for system, pos in (state.systems if state else {}).items():
        mark = pos.watermark
        if mark is not None:
            marks.append(mark)
        systems[system.value] = {
            "watermark": mark.isoformat() if mark else None,
            "lag_seconds": round((now - mark).total_seconds(), 1) if mark else None,
            "in_pass": pos.pass_started_at is not None,
            "position": pos.position,
            "updated_at": pos.updated_at.isoformat(),
        }
    oldest = min(marks) if marks and len(marks) == len(systems) else None
    return {
        "watermark": oldest.isoformat() if oldest else None,
        "lag_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
        "systems": systems,
    }


def _inconsistent(report: CheckReport, system: LegacySystemType | None) -> bool:
    if system is None:
        return report.consistent < report.total
    figures = report.per_system.get(system.value) or {}
    return int(figures.get("consistent") or 0) < int(figures.get("total") or 0)


def judged_report(engine: sa.Engine, system: LegacySystemType | None = None) -> CheckReport | None:
    """The report the alerts and dashboards judge consistency by (of ``system``, or of
    every system together).

    The latest one, so a round of continuous verification raises a new mismatch within
    minutes. But a round that found every changed row consistent read only those rows:
    it cannot clear what the last check found in rows it did not read again, so while
    that check (of every key range) holds inconsistencies, it is the one judged; nor what
    a round since found: the newest such round is judged until a check.

    Of every system together, only reports that covered every system count (a full
    check, a round of continuous verification): a check of some systems
    (``check --system``) was shown as the whole database's figure, 100% for cashouts
    beside a firing alert for escrows (a probe).
    """
    if system is None:
        latest = latest_report(engine, covering_all=True)
    else:
        latest = latest_report_for(engine, system, full=False, partial_scope=CONTINUOUS_SCOPE)
    if latest is None or _inconsistent(latest, system):
        return latest
    found = _round_not_cleared(engine, system)  # what a clean report since cannot clear
    if found is not None:
        return found
    if latest.scope != CONTINUOUS_SCOPE:
        return latest
    if system is None:
        before = latest_report(engine, complete=True, not_scope=CONTINUOUS_SCOPE, covering_all=True)
    else:
        before = latest_report_for(engine, system, full=False, not_scope=CONTINUOUS_SCOPE)
    return before if before is not None and _inconsistent(before, system) else latest


def _round_not_cleared(engine: sa.Engine, system: LegacySystemType | None) -> CheckReport | None:
    """The newest round of continuous verification that found ``system`` (None: any
    system) inconsistent since a full check of it last began: the rounds after it read
    other rows, so it holds until a check reads every row again (it was "resolved" by the
    next clean round while the row still differed: a probe). A check that began before
    the round found the mismatch may have read the row before it changed: it clears
    nothing. Judged over the system's rows, it keeps that check's inconsistent rows too
    (observe.judged)."""
    wanted = [system] if system is not None else list(LegacySystemType)
    cleared = full_check_starts(engine)
    cuts = [cleared.get(s) for s in wanted]
    lowest = None if any(c is None for c in cuts) else min(c for c in cuts if c is not None)
    for found in inconsistent_reports(engine, scope=CONTINUOUS_SCOPE, after=lowest):
        stored = found.created_at
        for s in wanted:
            cut = cleared.get(s)
            if _inconsistent(found, s) and (cut is None or stored > cut):
                return found
    return None


def system_populations(engine: sa.Engine) -> dict[str, tuple[int, int]]:
    """Each system's (rows, inconsistent rows) as the latest full check of it counted
    them (a system no full check covered is left out): what a report of the rows changed
    since a time (a round of continuous verification) is judged against
    (:mod:`unistatus.observe.judged`)."""
    out: dict[str, tuple[int, int]] = {}
    for system in LegacySystemType:
        full = latest_report_for(engine, system, full=True)
        figures = (full.per_system.get(system.value) if full else None) or {}
        if figures.get("total") is not None:
            total, good = int(figures["total"]), int(figures.get("consistent") or 0)
            out[system.value] = (total, max(0, total - good))
    return out
