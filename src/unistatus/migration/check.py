"""``unistatus check``: the full, set-based diff between the legacy tables and unified.

One statement per chunk of legacy keys, counted by the database; the report is stored
(``unistatus_check_reports``) for the gates, alerts and dashboard. How rows are paired
and counted: docs/check.md. The statements are :mod:`check_sql`'s, the walk over the
key ranges :mod:`check_scan`'s, the stored reports :mod:`check_reports`'.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.config import NetworkSettings, Settings
from unistatus.db.binding import require_bound
from unistatus.db.database_files import refuse_database_file
from unistatus.db.dialect import ops_for
from unistatus.db.failures import read_only_refusal
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.queued_legacy import count_missing_legacy
from unistatus.db.retry import is_read_only
from unistatus.db.revisions import require_current_schema
from unistatus.db.server_clock import clock_of, database_now
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, StorageError
from unistatus.migration.check_claim import claim_run
from unistatus.migration.check_out import MismatchWriter
from unistatus.migration.check_recheck import RECHECK_BATCH, recheck
from unistatus.migration.check_reports import (
    COVERING_LOOKBACK,
    FULL_SCOPE,
    CheckReport,
    insert_report,
    latest_report,
    latest_report_for,
    store_report,
)
from unistatus.migration.check_rule import KINDS, rule
from unistatus.migration.check_runs import (
    CONTINUOUS,
    RunState,
    SystemPosition,
    latest_unfinished,
    new_run_id,
)
from unistatus.migration.check_scan import RECHECK_WINDOW, RangeScan, room_for_walks, walk_systems
from unistatus.migration.check_sql import (
    DEFAULT_CHUNK,
    InconsistentRow,
    count_first_keys,
    iter_inconsistent,
    pair_flags,
    pending_replay_exists,
    projected_legacy_status,
)
from unistatus.migration.check_times import parse_duration, parse_since
from unistatus.migration.repair_plan import MISSING_LEGACY
from unistatus.migration.unreplayed import projected_systems, unreplayed_outside_unified_only

__all__ = [
    "COVERING_LOOKBACK",
    "CheckInterrupted",
    "DEFAULT_CHUNK",
    "DEFAULT_EXAMPLES",
    "RECHECK_BATCH",
    "RECHECK_WINDOW",
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
    "unreplayed_outside_unified_only",
    "rule",
    "parse_duration",
    "parse_since",
    "parse_systems",
    "run_check",
    "scope_of",
    "store_report",
]

DEFAULT_EXAMPLES = 10  # inconsistent rows a report keeps, unless told


class CheckInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into one) stopped a check: what it leaves.

    ``run``: the stored run (None: none stored yet, or ``store=False``);
    ``counted_all``: every key range of it was counted before the stop, its report not
    stored: ``--resume`` stores it (the walks at once stop only after their current
    range, which may be a system's last one).
    """

    def __init__(self, run: str | None, counted_all: bool) -> None:
        super().__init__(run, counted_all)
        self.run, self.counted_all = run, counted_all


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


def run_check(
    engine: sa.Engine,
    settings: Settings,
    *,
    systems: Iterable[LegacySystemType | str] | LegacySystemType | str | None = None,
    since: str | datetime | None = None,
    examples: int | None = None,
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
    either side was updated since then. ``examples`` inconsistent rows (None:
    :data:`DEFAULT_EXAMPLES`) are kept in the report with both sides' values; ``out``
    writes every one to a JSON-lines file.

    The run commits its position after each key range (``unistatus_check_runs``):
    ``resume=True`` (or a run id) goes on with the latest unfinished run, with its
    options, after a kill or a ``max_duration`` stop. ``max_duration`` (seconds) stops
    between ranges; the report is stored with ``complete=False`` and says how far each
    system got. With ``store=False`` nothing is written (positions stay in memory).

    On PostgreSQL the systems are walked at once (``check_scan.walk_systems``), and
    ``on_range(system, position)`` is then called from their threads.
    """
    if examples is not None and (
        isinstance(examples, bool) or not isinstance(examples, int) or examples < 0
    ):
        raise InputError(f"examples must be a non-negative integer, got {examples!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"chunk must be a positive integer, got {chunk!r}")
    if max_duration is not None and not max_duration > 0:
        raise InputError(f"max_duration must be a positive number of seconds, got {max_duration!r}")
    deadline = time.monotonic() + max_duration if max_duration is not None else None
    started = time.perf_counter()
    require_bound(engine, settings.schema)  # before the run's first row is written
    require_current_schema(engine, "check")  # an older release's: its tables are missing
    held = ExitStack()  # the claim on the run, until its report is stored
    finished_walk = False
    run: RunState | None = None
    try:
        # A new run's tables are read before it is stored: a legacy table that cannot be
        # read leaves no run behind for --resume to take instead of an interrupted one.
        tables = None if resume is not False else _tables(engine, settings, parse_systems(systems))
        run, writer = _open_run(
            engine, systems, since, examples, chunk, out, resume, store, held, settings.network
        )
        opts = run.options
        wanted = [LegacySystemType.parse(s) for s in opts["systems"]]
        since_at = parse_since(opts["since"], judge_future=False)  # judged when stored
        tables = tables or _tables(engine, settings, wanted)
        try:
            with engine.connect() as conn:
                clock_of(engine).measure(conn)  # a write in flight is judged on it
                projected = projected_systems(conn)
                spans = {s: _key_span(conn, tables[s]) for s in wanted}
            ops = ops_for(engine)
            at_once = (
                ops.concurrent_reads
                and len(wanted) > 1
                and writer is None
                and room_for_walks(engine, len(wanted))
            )
            scans = {
                system: RangeScan(
                    engine,
                    ops,
                    settings,
                    since_at,
                    int(opts["chunk"]),
                    int(opts["examples"]),
                    system in projected,
                    writer,
                    recheck_in_flight,
                    # Its own only: a run stored before 2026-12-04 kept the earlier
                    # systems' examples in every system's position as well.
                    kept_examples=[
                        e for e in run.systems[system].examples if e["system"] == system.value
                    ],
                    full_join=at_once,
                )
                for system in wanted
            }
            finished = walk_systems(scans, run, tables, deadline, on_range, at_once)
            finished_walk = True
        finally:
            if writer is not None:
                writer.close()
    except sa.exc.DBAPIError as exc:
        if is_read_only(exc):
            raise StorageError(
                "check failed (a check stores its positions and report): "
                f"{read_only_refusal(exc, who='the check')}"
            ) from None
        if not isinstance(exc, sa.exc.OperationalError):
            raise
        raise StorageError(f"check failed: {str(exc.orig).strip()}") from None
    except sa.exc.TimeoutError as exc:  # no connection free in the engine's pool
        raise StorageError(f"check failed: {exc}") from None
    except KeyboardInterrupt as stop:
        raise _interrupted(run) from stop
    finally:
        if not finished_walk:
            held.close()  # stopped by an error: released now
    try:
        with held:  # released once the run is marked finished and its report stored
            return _finish(
                engine, run, wanted, since_at, spans, scans, opts, started, finished, store
            )
    except KeyboardInterrupt as stop:
        raise _interrupted(run) from stop


def _interrupted(run: RunState | None) -> CheckInterrupted:
    if run is None or not run.persist:
        return CheckInterrupted(None, counted_all=False)
    return CheckInterrupted(run.run, counted_all=run.complete and not run.finished)


def _finish(
    engine: sa.Engine,
    run: RunState,
    wanted: list[LegacySystemType],
    since_at: datetime | None,
    spans: Mapping[LegacySystemType, tuple[int | None, int | None]],
    scans: Mapping[LegacySystemType, RangeScan],
    opts: Mapping[str, Any],
    started: float,
    finished: bool,
    store: bool,
) -> CheckReport:
    report = _report_of(run, wanted, since_at, spans)
    _count_missing_legacy(engine, report, wanted, since_at)
    kept = [e for system in wanted for e in scans[system].kept_examples]
    report.examples = kept[: int(opts["examples"])]
    report.duration_ms = (time.perf_counter() - started) * 1000
    report.created_at = utcnow()  # unstored; stored, the database's time (below)
    report.complete = finished
    if not store:  # nor is the run (memory only)
        return report
    # One transaction: a run is finished exactly when its report is stored (a stop in
    # between would leave a finished run, no report, and nothing for --resume to take).
    with engine.begin() as conn:
        report.created_at = database_now(conn)  # gates compare it across hosts
        insert_report(conn, report)
        if finished:
            run.finish(conn)
    return report


def _tables(
    engine: sa.Engine, settings: Settings, wanted: list[LegacySystemType]
) -> dict[LegacySystemType, LegacyTable]:
    return resolve_legacy_tables(engine, settings, systems=wanted, columns_only=True)


def _out_file(out: str | os.PathLike[str], url: sa.URL) -> str:
    """--out as the absolute path of a regular file (or of none yet): a run flushes it
    to disk per range and a resumed one cuts it back and goes on, which a pipe or a FIFO
    cannot do (their lines were written, then the run failed "Invalid argument"). Never
    the database's own file (``url``'s), nor a stream under another name (/dev/stdout
    redirected to a file: the report, written there too, overwrote the lines)."""
    if str(out) == "-":
        raise InputError("--out -: a check writes a file a resumed run goes on with, not stdout")
    if _is_an_output_stream(out):
        raise InputError(
            f"--out {out}: this process's stdout or stderr (as --out - is), not a file of "
            "its own a resumed run goes on with"
        )
    refuse_database_file(out, url)
    path = Path(out)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise InputError(
            f"--out {out}: not a regular file (a pipe, a FIFO, a device); a check writes a "
            "file it flushes per range and a resumed run goes on with"
        )
    return str(path.resolve())


def _is_an_output_stream(out: str | os.PathLike[str]) -> bool:
    """Whether ``out`` is this process's stdout or stderr under another name
    (/dev/stdout redirected to a file, a link to it): the report written there too
    overwrote every line."""
    try:
        found = os.stat(out)
    except OSError:
        return False
    for fd in (1, 2):
        try:
            stream = os.fstat(fd)
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (stream.st_dev, stream.st_ino):
            return True
    return False


def _open_run(
    engine: sa.Engine,
    systems: Iterable[LegacySystemType | str] | LegacySystemType | str | None,
    since: str | datetime | None,
    examples: int | None,
    chunk: int,
    out: str | os.PathLike[str] | None,
    resume: bool | str,
    store: bool,
    held: ExitStack,
    network: NetworkSettings,
) -> tuple[RunState, MismatchWriter | None]:
    """The run to walk, claimed in ``held`` (:func:`claim_run`, its connection bounded
    by ``network``): a new one, or the one ``resume`` names, loaded once claimed (as
    the process before left it); and its --out file's writer (:func:`_out_writer`)."""
    if resume is False:
        wanted = parse_systems(systems)
        # An age counts back from the database's clock, the one the rows are compared
        # on (a host ahead would scope from the database's future and find nothing).
        if isinstance(since, str):
            with engine.connect() as conn:
                since_at = parse_since(since, now=database_now(conn))
        else:
            since_at = parse_since(since)
        out_path = _out_file(out, engine.url) if out is not None else None
        options = {
            "systems": [s.value for s in wanted],
            "since": since_at.isoformat() if since_at else None,
            "scope": scope_of(wanted, since_at),
            "chunk": chunk,
            "examples": DEFAULT_EXAMPLES if examples is None else examples,
            "out": out_path,
        }
        # Opened before the run is stored: a file that cannot be opened leaves no run
        # behind, which a later --resume would take (failing on it again) instead of
        # the interrupted run before it.
        writer = _out_writer(out_path, 0, held)
        fresh = new_run_id()
        if store:  # claimed before it is stored: no resume can take it first
            held.enter_context(claim_run(engine, fresh, network))
        return RunState.start(engine, options, wanted, persist=store, run=fresh), writer
    # Refused rather than ignored: the run goes on with the options it started with.
    if systems is not None or since is not None or out is not None or examples is not None:
        raise InputError(
            "a resumed run keeps its own systems, --since, --out and --examples: give none of them"
        )
    if not store:
        raise InputError("a resumed run stores its report (store=False cannot resume)")
    with engine.connect() as conn:
        name = resume if isinstance(resume, str) else latest_unfinished(conn)
    if name and name != CONTINUOUS:
        held.enter_context(claim_run(engine, name, network))
    with engine.connect() as conn:
        state = RunState.load(conn, name) if name else None
    if state is None or name == CONTINUOUS:
        raise InputError(
            "no interrupted check run to resume"
            + (f" named {resume!r}" if isinstance(resume, str) else "")
            + ": run `unistatus check` without --resume"
        )
    if state.finished:
        raise InputError(f"check run {name} has finished, its report stored: nothing to resume")
    # Every range counted, no report (stopped after the walks' last range, before the
    # report was stored): the walk has nothing left, the report is stored from the counts.
    return state, _out_writer(state.options.get("out"), state.out_bytes, held)


def _out_writer(path: str | None, keep_bytes: int, held: ExitStack) -> MismatchWriter | None:
    """The --out file's writer (None without --out), closed with ``held`` at the latest:
    a run that fails before its walk does not leave it open."""
    if not path:
        return None
    writer = MismatchWriter(path, keep_bytes=keep_bytes)
    held.callback(writer.close)
    return writer


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


def _count_missing_legacy(
    engine: sa.Engine,
    report: CheckReport,
    wanted: Sequence[LegacySystemType],
    since: datetime | None,
) -> None:
    """Count the transactions acknowledged without a legacy row (``missing_legacy``:
    their legacy INSERT refused under ``primary_wins``, queued): no legacy key points at
    them, so the walk over the legacy keys cannot pair them, and legacy lacks them."""
    with engine.connect() as conn:
        counts = count_missing_legacy(conn, [s.value for s in wanted], since)
    for system, n in counts.items():
        mine = report.per_system[system]
        mine["inconsistencies"][MISSING_LEGACY] = n
        mine["total"] += n
        report.total += n
        report.inconsistencies[MISSING_LEGACY] += n
