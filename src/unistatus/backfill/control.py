"""What an operator changes on a running backfill, through the database: every worker
(on every host) reads it between batches, so nothing restarts.

- Pause and resume: a flag (``backfill.paused``); paused workers hold before their next
  batch.
- Tuning (``unistatus backfill tune``): the rate, the target batch duration, the batch
  bounds and the health limits, one control key each (``backfill.<name>``), every
  change logged in the control log with its actor and reason.

Which value a worker uses (:func:`effective_tuning`): the newest of the run's own
option (as of the run's start) and a tune made since the job was planned; without
either, the settings' default (``[backfill]``). A tune made before the job was planned
belongs to an earlier job and is not used, so :func:`tune` refuses to store one while
no job is unfinished: it would be shown and never used. It checks that, and the batch
bounds it leaves, in the transaction that stores it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.backfill.activity import read_workers, workers_maybe_busy
from unistatus.backfill.plan import RUNNING as JOB_RUNNING
from unistatus.clock import as_utc
from unistatus.config import BackfillSettings, Settings
from unistatus.db.control import write_value
from unistatus.db.dialect import ops_for
from unistatus.db.failures import storage_errors
from unistatus.db.mode_reads import read_value
from unistatus.db.server_clock import database_now
from unistatus.db.tables import control_log, migration_control
from unistatus.db.tables_backfill import backfill_jobs as J
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, StorageError

PAUSE_KEY = "backfill.paused"
TUNE_PREFIX = "backfill."
OFF = "off"
# Whose tuning current_tuning() shows (its ``of``).
OF_WORKERS = "running workers"  # the live workers' own, as they reported it
OF_NEXT_RUN = "next run"  # an unfinished job no worker runs: a run started now
OF_NEW_JOB = "new job"  # no unfinished job: the settings (a run's options over them)


def pause_key(system: LegacySystemType | None) -> str:
    """The flag of ``system``'s backfill (``backfill.paused.CASHOUT``); None: of all."""
    return PAUSE_KEY if system is None else f"{PAUSE_KEY}.{system.value}"


def is_paused(conn: sa.Connection, system: LegacySystemType | None = None) -> bool:
    """Whether the backfill is paused: all of it, or (``system``) that system's."""
    keys = [PAUSE_KEY] if system is None else [PAUSE_KEY, pause_key(system)]
    q = sa.select(migration_control.c.value).where(migration_control.c.key.in_(keys))
    return "true" in set(conn.execute(q).scalars())


def paused_clause(system: LegacySystemType | None = None) -> sa.ColumnElement[bool]:
    """SQL: true while the backfill (of ``system``, when given) is paused (to fold the
    check into another query)."""
    # Plain comparisons, no IN list: the batch statements are compiled once
    # (unistatus.db.prepared), with no expanding parameter to fill in.
    key = migration_control.c.key
    which = (
        key == PAUSE_KEY if system is None else sa.or_(key == PAUSE_KEY, key == pause_key(system))
    )
    return sa.select(sa.literal(1)).where(which, migration_control.c.value == "true").exists()


def _set(
    engine: sa.Engine, paused: bool, actor: str, reason: str, system: LegacySystemType | None
) -> dict[str, Any]:
    ops = ops_for(engine)
    value = "true" if paused else "false"
    with storage_errors("cannot change the backfill pause flag"), ops.write_transaction() as conn:
        change = write_value(conn, pause_key(system), value, actor=actor, reason=reason)
        if system is None and not paused:
            # Resuming all of it resumes each system paused on its own too.
            for one in LegacySystemType:
                if read_value(conn, pause_key(one)) == "true":
                    write_value(conn, pause_key(one), value, actor=actor, reason=reason)
        # Whether a backfill (of ``system``) is running: a pause is kept either way, and
        # one started later waits for the resume.
        running = sa.select(J.c.system).where(J.c.state == JOB_RUNNING)
        if system is not None:
            running = running.where(J.c.system == system.value)
        # A job left "running" by workers that all ended (Ctrl-C, killed) runs no more.
        active = conn.execute(running.limit(1)).first() is not None and bool(
            workers_maybe_busy(conn)
        )
    return {"paused": paused, "running": active, **change.as_dict()}


def pause(
    engine: sa.Engine, *, actor: str, reason: str, system: LegacySystemType | None = None
) -> dict[str, Any]:
    """Hold every running backfill worker before its next batch (they wait, not exit):
    of every system, or (``system``) of that system only."""
    return _set(engine, True, actor, reason, system)


def resume(
    engine: sa.Engine, *, actor: str, reason: str, system: LegacySystemType | None = None
) -> dict[str, Any]:
    """Let paused backfill workers continue (every system's, or ``system``'s)."""
    return _set(engine, False, actor, reason, system)


@dataclass(frozen=True)
class Pause:
    """A pause flag set now: of every system's backfill (``system`` None) or of one."""

    system: LegacySystemType | None
    by: str
    since: datetime | None
    reason: str | None

    def describe(self) -> str:
        which = "the backfill" if self.system is None else f"{self.system.value}'s backfill"
        why = f": {self.reason}" if self.reason else ""
        when = f" at {self.since.isoformat(timespec='seconds')}" if self.since else ""
        resume_cmd = "unistatus backfill resume" + (
            f" --system {self.system.value.lower()}" if self.system is not None else ""
        )
        return f"{which} is paused (by {self.by}{when}{why}): its workers wait until `{resume_cmd}`"


def active_pauses(engine: sa.Engine, systems: list[LegacySystemType] | None = None) -> list[Pause]:
    """The pause flags set now that hold back a backfill of ``systems`` (None: every
    system), each with who set it, when and why (the control log's newest entry)."""
    wanted = [None, *(systems or list(LegacySystemType))]
    keys = {pause_key(s): s for s in wanted}
    C, L = migration_control, control_log
    with storage_errors("cannot read the backfill pause flags"), engine.connect() as conn:
        flags = conn.execute(
            sa.select(C.c.key, C.c.updated_at, C.c.updated_by).where(
                C.c.key.in_(list(keys)), C.c.value == "true"
            )
        ).all()
        pauses = []
        for key, updated_at, updated_by in flags:
            reason = conn.execute(
                sa.select(L.c.reason).where(L.c.key == key).order_by(L.c.id.desc()).limit(1)
            ).scalar_one_or_none()
            pauses.append(Pause(keys[key], updated_by, as_utc(updated_at), reason))
    return sorted(pauses, key=lambda p: "" if p.system is None else p.system.value)


# --- tuning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tuning:
    """How a worker sizes and paces its batches, and when it holds back.

    ``max_rows_per_second`` is for the whole backfill: each worker takes its share (the
    rate divided by the workers alive). ``target_batch_ms`` 0: fixed batches of the
    run's --batch-size. A limit of None never holds a batch back.
    """

    max_rows_per_second: float | None = None
    target_batch_ms: float = 200.0
    min_batch_rows: int = 1_000
    max_batch_rows: int = 100_000
    max_p95_ms: float | None = None
    p95_over_baseline: float | None = 1.2
    max_replication_lag_seconds: float | None = 10.0
    max_lock_waits: int | None = 2

    @classmethod
    def from_settings(cls, settings: BackfillSettings, **given: Any) -> Tuning:
        """The settings' values, with ``given`` ones (not None) over them."""
        base = cls(
            max_rows_per_second=None,
            target_batch_ms=settings.target_batch_ms,
            min_batch_rows=settings.min_batch_rows,
            max_batch_rows=settings.max_batch_rows,
            max_p95_ms=settings.max_p95_ms,
            p95_over_baseline=settings.p95_over_baseline,
            max_replication_lag_seconds=settings.max_replication_lag_seconds,
            max_lock_waits=settings.max_lock_waits,
        )
        return base.changed({k: v for k, v in given.items() if v is not None})

    def changed(self, values: dict[str, Any]) -> Tuning:
        """A copy with ``values`` (checked: :func:`parse_tuning`)."""
        parsed = {name: parse_tuning(name, value) for name, value in values.items()}
        return replace(self, **parsed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


TUNABLE = tuple(f.name for f in fields(Tuning))
# The lowest rate a run or a tune may set (rows/s, the whole backfill): below it a batch
# owes days of waiting (1e-9 rows/s: longer than the platform can sleep), which is a
# pause, and ``backfill pause`` says so.
MIN_ROWS_PER_SECOND = 0.001
# Where 0 means "no limit" (a rate of 0 rows/s or a limit of 0 ms would stop the run).
_ZERO_IS_OFF = {"max_rows_per_second", "max_p95_ms", "max_replication_lag_seconds"}
_INTEGERS = {"min_batch_rows", "max_batch_rows", "max_lock_waits"}
_NEVER_OFF = {"target_batch_ms", "min_batch_rows", "max_batch_rows"}


def parse_tuning(name: str, value: Any) -> Any:
    """One tuning value from a number or its text (``"off"``: no limit); InputError."""
    if name not in TUNABLE:
        raise InputError(f"unknown backfill setting {name!r}; known: {', '.join(TUNABLE)}")
    if value is None or (isinstance(value, str) and value.strip().lower() in (OFF, "none")):
        if name in _NEVER_OFF:
            raise InputError(f"{name} cannot be off")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number or 'off', got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise InputError(f"{name} must be a number >= 0 or 'off', got {value!r}")
    if name in _ZERO_IS_OFF and number == 0:
        return None
    if name in _INTEGERS:
        if number != int(number):
            raise InputError(f"{name} must be a whole number, got {value!r}")
        if name != "max_lock_waits" and number < 1:
            raise InputError(f"{name} must be at least 1, got {value!r}")
        return int(number)
    if name == "max_rows_per_second" and number < MIN_ROWS_PER_SECOND:
        raise InputError(
            f"max_rows_per_second must be at least {MIN_ROWS_PER_SECOND:g} rows/s, got "
            f"{value!r}; to stop the backfill for a while: `unistatus backfill pause`"
        )
    if name == "p95_over_baseline" and number < 1:
        raise InputError(f"p95_over_baseline must be at least 1 (or 'off'), got {value!r}")
    return number


def _stored_text(value: Any) -> str:
    """A value as stored: every digit (a float's repr reads back exactly; ``:g`` kept
    six, 1234567 became 1234570), without a float's trailing ``.0``."""
    if value is None:
        return OFF
    text = repr(value)
    return text[:-2] if isinstance(value, float) and text.endswith(".0") else text


def tune(
    engine: sa.Engine,
    *,
    actor: str,
    reason: str,
    settings: Settings | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """Change a running backfill: every worker, on every host, from its next batch.

    ``changes``: tuning names (:data:`TUNABLE`) and values (a number, or None / "off"
    for no limit). Each is stored as control key ``backfill.<name>`` and logged.
    Refused (InputError, nothing stored) without an unfinished job: a new job starts
    from the settings and its own options. With one that no worker runs now, its next
    run takes the tune (``of`` in the result says which). ``settings``: the defaults
    a bound given alone is checked against (None: the built-in ones).
    """
    given = {name: value for name, value in changes.items() if value is not None}
    if not given:
        raise InputError(f"nothing to tune: give at least one of {', '.join(TUNABLE)}")
    parsed = {name: parse_tuning(name, value) for name, value in given.items()}
    base = Tuning() if settings is None else Tuning.from_settings(settings.backfill)
    ops = ops_for(engine)
    logged = []
    with storage_errors("cannot tune the backfill"), ops.write_transaction() as conn:
        # Checked in the transaction that stores it, the unfinished jobs' rows locked
        # (SQLite: the write lock, taken at BEGIN): a tune made at the same time waits,
        # then checks against this one's values; a job cannot finish in between.
        conn.execute(
            sa.select(J.c.system)
            .where(J.c.state == JOB_RUNNING)
            .order_by(J.c.system)
            .with_for_update()
        )
        in_force = _in_force(conn, base, next_batch=True)
        if in_force["of"] == OF_NEW_JOB:
            raise InputError(
                "no backfill job is running or unfinished: nothing stored. A tune belongs "
                "to the job it is made during; a new job starts from the backfill settings "
                "and the options given to `unistatus backfill`."
            )
        _check_bounds(parsed, in_force)
        for name, value in parsed.items():
            change = write_value(
                conn, TUNE_PREFIX + name, _stored_text(value), actor=actor, reason=reason
            )
            logged.append(change.as_dict())
    return {"tuned": parsed, "changes": logged, "of": in_force["of"]}


def _check_bounds(parsed: dict[str, Any], in_force: dict[str, Any]) -> None:
    """The batch bounds a tune leaves: min not above max (as ``backfill`` refuses)."""
    values = {**in_force["values"], **parsed}
    low, high = values["min_batch_rows"], values["max_batch_rows"]
    if low <= high:
        return
    both = "min_batch_rows" in parsed and "max_batch_rows" in parsed
    source = "" if both else " in force"
    raise InputError(
        f"min_batch_rows ({low}) would be above max_batch_rows ({high}{source}): "
        "nothing stored; give both bounds"
    )


@dataclass(frozen=True)
class StoredValue:
    value: Any
    updated_at: datetime
    updated_by: str


def stored_tuning(conn: sa.Connection) -> dict[str, StoredValue]:
    """The tuning values ``backfill tune`` stored, by name."""
    C = migration_control
    keys = [TUNE_PREFIX + name for name in TUNABLE]
    out: dict[str, StoredValue] = {}
    for key, value, at, by in conn.execute(
        sa.select(C.c.key, C.c.value, C.c.updated_at, C.c.updated_by).where(C.c.key.in_(keys))
    ):
        name = key[len(TUNE_PREFIX) :]
        try:
            parsed = parse_tuning(name, value)
        except InputError:
            continue  # a value written by hand that we cannot read: the default holds
        out[name] = StoredValue(parsed, as_utc(at) or at, by)
    return out


def effective_tuning(
    base: Tuning,
    given: set[str],
    run_started: datetime,
    job_started: datetime | None,
    stored: dict[str, StoredValue],
) -> tuple[Tuning, dict[str, str]]:
    """The values a worker uses now, and where each comes from.

    ``base``: the settings' defaults with the run's options over them; ``given``: the
    names the run was given explicitly. A stored value counts when it was tuned since
    the job was planned, and then wins over a run's option older than it.
    """
    values: dict[str, Any] = {}
    sources = {name: ("option" if name in given else "settings") for name in TUNABLE}
    for name, s in stored.items():
        if job_started is None or s.updated_at < job_started:
            continue  # no job, or tuned for an earlier one
        if name in given and s.updated_at < run_started:
            continue
        values[name] = s.value
        sources[name] = f"tune by {s.updated_by} at {s.updated_at.isoformat()}"
    return replace(base, **values), sources


def unfinished_since(conn: sa.Connection) -> datetime | None:
    """When the oldest unfinished job (running, paused or interrupted) was planned; None
    without one (every job complete, or none planned)."""
    started = conn.execute(
        sa.select(sa.func.min(J.c.started_at)).where(J.c.state == JOB_RUNNING)
    ).scalar_one_or_none()
    return as_utc(started)


def current_tuning(engine: sa.Engine, settings: Settings) -> dict[str, Any]:
    """The tuning in force, where each value comes from, and whose it is (``of``):

    - ``running workers``: what the live workers use (their run's options, the tunes
      made since the job was planned, the settings), as they reported it; the first
      one's, if hosts run with different options (each has its own in its row);
    - ``next run``: an unfinished job no worker runs: what a run started now without
      options would use (a run's own options win over it);
    - ``new job``: no unfinished job: the settings' (a tune belonged to its job).
    """
    try:
        with engine.connect() as conn:
            return _in_force(conn, Tuning.from_settings(settings.backfill))
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"cannot read the backfill's tuning: {exc.orig}") from None


def _in_force(conn: sa.Connection, base: Tuning, *, next_batch: bool = False) -> dict[str, Any]:
    """The tuning in force (:func:`current_tuning`). ``next_batch``: with the tunes the
    running workers have not applied yet over what they reported, as they will be from
    their next batch (what a new tune's bounds are checked against)."""
    stored = stored_tuning(conn)
    job_started = unfinished_since(conn)
    values, sources = effective_tuning(base, set(), database_now(conn), job_started, stored)
    if job_started is None:
        return {"values": values.as_dict(), "sources": sources, "of": OF_NEW_JOB}
    reported = _workers_tuning(conn)
    if reported is None:
        return {"values": values.as_dict(), "sources": sources, "of": OF_NEXT_RUN}
    in_use, why, started = reported
    if next_batch:
        # A tune stored since that worker started is newer than its run's options, so it
        # wins at the worker's next re-read (effective_tuning); an older one it reported.
        in_use = {**in_use, **{n: s.value for n, s in stored.items() if s.updated_at >= started}}
    return {
        "values": {**values.as_dict(), **in_use},
        "sources": {**sources, **why},
        "of": OF_WORKERS,
    }


def _workers_tuning(
    conn: sa.Connection,
) -> tuple[dict[str, Any], dict[str, str], datetime] | None:
    """The tuning the first live worker reported using, each value's source, and when
    the worker started."""
    for worker in read_workers(conn):
        readings = worker["readings"]
        values, sources = readings.get("tuning"), readings.get("tuning_sources")
        if isinstance(values, dict) and isinstance(sources, dict):
            return (
                {k: v for k, v in values.items() if k in TUNABLE},
                {k: str(v) for k, v in sources.items() if k in TUNABLE},
                datetime.fromisoformat(worker["started_at"]),
            )
    return None
