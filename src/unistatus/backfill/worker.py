"""One backfill worker: claim chunks, copy them, checkpoint them, in ONE transaction.

The claim (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), the ``INSERT ... SELECT`` of the
chunks, the quarantine of their unmappable rows and the chunks' ``done`` mark commit
together. A worker killed at any instant leaves its chunks pending and untouched, and
the next worker (this host or another) copies them exactly once.

Between batches the worker adapts to the database: it sizes the next batch to take
the target duration (:mod:`~unistatus.backfill.sizing`), re-reads what operators
changed (pause, ``backfill tune``: :mod:`~unistatus.backfill.control`), holds back
while the database is unhealthy (:mod:`~unistatus.backfill.health`), keeps its share
of the rate, and records all of it for ``backfill status`` and ``/metrics``
(:mod:`~unistatus.backfill.activity`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa

from unistatus.backfill import health
from unistatus.backfill.activity import PAUSED as PAUSED_STATE
from unistatus.backfill.activity import (
    RUNNING,
    Activity,
    forget_old,
    live_workers,
    shared_baseline,
)
from unistatus.backfill.batch import ChunkCopier, Copied
from unistatus.backfill.control import Tuning, effective_tuning, is_paused, stored_tuning
from unistatus.backfill.pacing import Clock, Pacer
from unistatus.backfill.plan import RUNNING as JOB_RUNNING
from unistatus.backfill.plan import any_pending
from unistatus.backfill.ramp import Ramp
from unistatus.backfill.sizing import BatchSizer
from unistatus.clock import as_utc
from unistatus.config import Settings
from unistatus.db.connection_limit import connection_limit_error, refused_for_a_limit
from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import LegacyTable
from unistatus.db.retry import retry_reason
from unistatus.db.server_clock import database_now
from unistatus.db.tables import unified_transactions
from unistatus.db.tables_backfill import backfill_jobs as J
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import StorageError

log = logging.getLogger("unistatus.backfill")

MAX_ATTEMPTS = 8
PAUSE_POLL_SECONDS = 0.2
# The tuning (and the count of live workers, for the rate's share) is re-read between
# batches, at most this often: a tune reaches every worker within about this long.
TUNING_REFRESH_SECONDS = 0.25


class _Paused:
    """The batch was not run: the backfill is paused."""


PAUSED = _Paused()
_T = TypeVar("_T")


@dataclass(frozen=True)
class BatchResult:
    system: LegacySystemType
    start_id: int
    end_id: int
    rows: int  # planned rows of the chunk (what progress counts)
    inserted: int
    already_present: int
    quarantined: int
    retries: int
    chunks: int = 1


@dataclass
class Tally:
    """What one worker did in this invocation."""

    batches: int = 0
    rows: int = 0
    inserted: int = 0
    already_present: int = 0
    quarantined: int = 0
    retries: int = 0
    per_system: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, b: BatchResult) -> None:
        self.batches += 1
        self.rows += b.rows
        self.inserted += b.inserted
        self.already_present += b.already_present
        self.quarantined += b.quarantined
        self.retries += b.retries
        s = self.per_system.setdefault(
            b.system.value,
            {"batches": 0, "inserted": 0, "already_present": 0, "quarantined": 0, "retries": 0},
        )
        s["batches"] += 1
        s["inserted"] += b.inserted
        s["already_present"] += b.already_present
        s["quarantined"] += b.quarantined
        s["retries"] += b.retries

    def merge(self, other: Tally) -> None:
        for name in ("batches", "rows", "inserted", "already_present", "quarantined", "retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for system, counts in other.per_system.items():
            mine = self.per_system.setdefault(system, dict.fromkeys(counts, 0))
            for key, value in counts.items():
                mine[key] = mine.get(key, 0) + value


def worker_name(index: int | None = None) -> str:
    """``host:pid``, and ``host:pid.N`` for the N-th of a process's worker threads."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    return (name if index is None else f"{name}.{index}")[-64:]


class Worker:
    """Copies chunks until none is left, adapting between batches (see the module).

    ``tuning``: the settings' values with the run's options over them (``given``: the
    names the run was given explicitly, at ``run_started``); ``backfill tune`` changes
    them while it runs. ``batch_size``: the size batches start at (fixed when the
    target duration is 0).
    """

    def __init__(
        self,
        engine: sa.Engine,
        ops: DialectOps,
        settings: Settings,
        tables: dict[LegacySystemType, LegacyTable],
        *,
        tuning: Tuning | None = None,
        given: frozenset[str] = frozenset(),
        run_started: datetime | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
        keep_going: Callable[[], bool] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
        extra: bool = False,
    ) -> None:
        self.engine = engine
        self.ops = ops
        self.settings = settings
        self.tables = tables
        self.clock = clock or Clock()
        self.base = tuning or Tuning.from_settings(settings.backfill)
        self.tuning = self.base
        self.given = given
        self.run_started = run_started or self.clock.now()
        self.batch_size = batch_size
        self.on_batch = on_batch
        # Asked before each batch; False stops the worker (Ctrl-C, another worker failed).
        self.keep_going = keep_going
        self.name = name or worker_name()
        # The second or later worker of its process: it waits beside live traffic.
        self.extra = extra
        self.tally = Tally()
        self.pacer = Pacer(None, self.clock)
        self._copiers = {system: ChunkCopier(ops, lt) for system, lt in tables.items()}
        self._exhausted: set[LegacySystemType] = set()
        self._chunk_rows: dict[LegacySystemType, int] = {}
        self._sizers: dict[LegacySystemType, BatchSizer] = {}
        self._learned: BatchSizer | None = None  # the sizer of the last batch
        self._job_started: datetime | None = None
        self._baseline: float | None = None
        self._learning_since: datetime | None = None  # holding to learn the baseline
        self.ramp = Ramp()  # the first worker's rate cap beside live traffic
        self._quiet_rate: float | None = None  # rows/s of its batches, smoothed
        self._share: float | None = None  # its share of --max-rows-per-second
        self._health_tables = [lt.table for lt in tables.values()] + [unified_transactions]
        self._refreshed_at: float | None = None
        self._probed_at: float | None = None
        self._live_at_probe: int | None = None  # live sessions the last probe saw
        self._probe_failed = False
        self.sources: dict[str, str] = {}
        self.activity = Activity(ops, self.name, batch_rows=batch_size or 0)

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> Tally:
        """Copy chunks until none is left to claim; hold while paused or unhealthy."""
        self._begin()
        try:
            self._loop()
        finally:
            self.activity.finish(self.clock.timer())
        return self.tally

    def _loop(self) -> None:
        held = False
        while True:
            if not self._going():
                return
            self._refresh()
            if not self._hold_while_unhealthy():
                return
            started = self.clock.timer()
            result = self._batch_with_retries()
            elapsed = self.clock.timer() - started
            if result is None:
                return
            if result is PAUSED:
                held = True
                self._record_pause()
                continue
            assert isinstance(result, BatchResult)
            if held:
                held = False
                self.activity.state = RUNNING
                self.pacer.reset()  # a pause is not credit for a burst afterwards
            sizer = self._sizers[result.system]
            next_rows = sizer.observe(result.rows, elapsed)
            if elapsed > 0 and result.rows:  # smoothed: one slow batch is not its speed
                rate, last = result.rows / elapsed, self._quiet_rate
                self._quiet_rate = rate if last is None else 0.7 * last + 0.3 * rate
            self._learned = sizer
            self.activity.batch(result.rows, elapsed, next_rows)
            self.tally.add(result)
            if self.on_batch is not None:
                self.on_batch(result)
            self.pacer.after(result.rows, self._while_pacing)
            self.activity.write(self.clock.timer())

    def _going(self) -> bool:
        return self.keep_going is None or self.keep_going()

    def _begin(self) -> None:
        """The jobs' chunk sizes and start, the p95 baseline, this worker's row."""
        systems = [s.value for s in self.tables]
        try:
            with self.engine.connect() as conn:
                jobs = conn.execute(
                    sa.select(J.c.system, J.c.batch_size, J.c.started_at, J.c.state).where(
                        J.c.system.in_(systems)
                    )
                ).all()
        except sa.exc.DBAPIError as exc:
            raise _storage_error(exc, "reading the backfill jobs") from None
        by_system = {row.system: row for row in jobs}
        started = [
            as_utc(row.started_at) for row in jobs if row.state == JOB_RUNNING and row.started_at
        ]
        self._job_started = min((s for s in started if s is not None), default=None)
        for system in self.tables:
            job = by_system.get(system.value)
            self._chunk_rows[system] = int(job.batch_size) if job is not None else 1
        self._refresh(force=True)
        first = next(iter(self._sizers.values()), None)
        self.activity.batch_rows = first.rows if first is not None else 0
        job_started = self._job_started
        if job_started is not None and self.tuning.p95_over_baseline is not None:
            self._baseline = self._guarded(
                lambda: health.baseline_p95(
                    self.engine, job_started, self.settings.backfill.p95_min_operations
                ),
                None,
            )
        forget_old(self.ops)
        self.activity.write(self.clock.timer(), force=True)

    # --- between batches --------------------------------------------------------------

    def _refresh(self, *, force: bool = False) -> None:
        """Re-read the tuning and the live workers (at most every 0.25 s) and apply them."""
        now = self.clock.timer()
        if not force and self._refreshed_at is not None:
            if now - self._refreshed_at < TUNING_REFRESH_SECONDS:
                return
        self._refreshed_at = now
        try:
            with self.engine.connect() as conn:
                stored = stored_tuning(conn)
                live = live_workers(conn)
        except sa.exc.DBAPIError as exc:
            raise _storage_error(exc, "reading the backfill's tuning") from None
        self.tuning, self.sources = effective_tuning(
            self.base, set(self.given), self.run_started, self._job_started, stored
        )
        t = self.tuning
        for system in self.tables:
            sizer = self._sizers.get(system)
            if sizer is None:
                start = self.batch_size or self._chunk_rows[system]
                low = min(t.min_batch_rows, start)
                self._sizers[system] = BatchSizer(start, t.target_batch_ms, low, t.max_batch_rows)
            else:
                low = min(t.min_batch_rows, sizer.start)
                sizer.retarget(t.target_batch_ms, low, t.max_batch_rows)
        self._share = t.max_rows_per_second / live if t.max_rows_per_second else None
        self._pace()
        self.activity.tuned(
            {
                "target_batch_ms": t.target_batch_ms,
                "max_rows_per_second": t.max_rows_per_second,
                "min_batch_rows": t.min_batch_rows,
                "max_batch_rows": t.max_batch_rows,
                "workers_alive": live,
                # All of it and where each value comes from, for `backfill status`.
                "tuning": t.as_dict(),
                "tuning_sources": dict(self.sources),
            }
        )

    def _limits(self) -> health.Limits:
        t = self.tuning
        return health.Limits(
            max_p95_ms=t.max_p95_ms,
            baseline_p95_ms=self._baseline,
            p95_over_baseline=t.p95_over_baseline,
            max_replication_lag_seconds=t.max_replication_lag_seconds,
            max_lock_waits=t.max_lock_waits,
            max_live_operations=self.settings.backfill.p95_min_operations - 1
            if self.extra
            else None,
            learning_baseline=self.settings.backfill.p95_min_operations - 1
            if self._baseline is None and t.p95_over_baseline is not None and not self.extra
            else None,
        )

    def _probe(self) -> health.Decision:
        """Read the health and decide (the readings go to this worker's row)."""
        b = self.settings.backfill
        readings = self._guarded(
            lambda: health.read_health(
                self.engine,
                self.ops,
                self._health_tables,
                window_seconds=b.p95_window_seconds,
                min_operations=b.p95_min_operations,
                now=self.clock.now(),
            ),
            health.Readings(),
        )
        self._learn_baseline()
        limits = self._limits()
        self._probed_at, self._live_at_probe = self.clock.timer(), readings.live_sessions
        decision = health.decide(readings, limits)
        if decision.reason != health.BASELINE:
            self._learning_since = None
        elif self._learning_since is None:
            self._learning_since = self.clock.now()
        self._follow_traffic(decision, readings, limits)
        self.activity.saw(  # after the ramp moved: the cap this probe set
            readings,
            {
                "p95_limit_ms": limits.p95_limit_ms,
                "baseline_p95_ms": self._baseline,
                "max_replication_lag_seconds": limits.max_replication_lag_seconds,
                "max_lock_waits": limits.max_lock_waits,
                "ramp_rows_per_second": self.ramp.binding(self._quiet_rate),
            },
        )
        return decision

    def _follow_traffic(
        self, decision: health.Decision, readings: health.Readings, limits: health.Limits
    ) -> None:
        """The first worker's rate cap beside live traffic (:mod:`.ramp`): restarted by
        any hold, moved by the p95 of the operations made since it last changed."""
        if self.extra:
            return
        if decision.throttled:
            self.ramp.restart()
        else:
            since, now = self.ramp.changed_at, self.clock.now()
            min_operations = self.settings.backfill.p95_min_operations
            judged = (
                None
                if since is None
                else self._guarded(
                    lambda: health.p95_since(self.engine, since, now, min_operations), None
                )
            )
            self.ramp.update(
                live_sessions=readings.live_sessions,
                quiet_rate=self._quiet_rate,
                limit_ms=limits.p95_limit_ms,
                p95_since_change=judged,
                now=now,
                baseline_ms=self._baseline,
                live_writes=readings.operations >= self.settings.backfill.p95_min_operations,
            )
        self._pace()

    def _pace(self) -> None:
        """The pacer's rate: the stricter of the rate limit's share and the ramp's cap."""
        rates = [r for r in (self._share, self.ramp.binding(self._quiet_rate)) if r is not None]
        self.pacer.set_rate(min(rates) if rates else None)

    def _while_pacing(self, seconds: float) -> bool:
        """Between the slices of a wait for the rate (:mod:`.pacing`): the wait counted,
        the row kept beating (a long wait is not a worker gone), the tuning re-read (a
        tune applies to the rest of the wait); False: told to stop."""
        self.activity.held(self._pacing_reason(), seconds)
        if not self._going():
            return False
        self._refresh()
        self.activity.write(self.clock.timer())  # a tune just taken: shown at once
        return True

    def _pacing_reason(self) -> str:
        cap = self.ramp.binding(self._quiet_rate)
        if cap is not None and (self._share is None or cap < self._share):
            return health.RAMP
        return health.RATE

    def _learn_baseline(self) -> None:
        """While held to learn it: another live worker's (:func:`.activity.shared_baseline`),
        else the p95 of the operations made since the hold began, once flushed."""
        since = self._learning_since
        if since is None or self._baseline is not None:
            return
        min_operations = self.settings.backfill.p95_min_operations
        learned = self._guarded(lambda: shared_baseline(self.engine, self.name), None)
        if learned is None:
            learned = self._guarded(
                lambda: health.p95_since(self.engine, since, self.clock.now(), min_operations),
                None,
            )
        if learned is not None:
            self._baseline, self._learning_since = learned, None
            log.info("backfill worker %s learned live writes' p95: %.1f ms", self.name, learned)

    def _guarded(self, read: Callable[[], _T], unknown: _T) -> _T:
        """A health reading; unknown (and logged once) when the database cannot give it."""
        try:
            return read()
        except StorageError as exc:
            if not self._probe_failed:
                log.warning("backfill health unknown, not holding back for it: %s", exc)
            self._probe_failed = True
            return unknown

    def _hold_while_unhealthy(self) -> bool:
        """Wait while a probe's reading is above its limit; False: told to stop."""
        interval, t = self.settings.backfill.health_interval_seconds, self.tuning
        due = self._probed_at is None or self.clock.timer() - self._probed_at >= interval
        ramps = not self.extra and (t.max_p95_ms is not None or t.p95_over_baseline is not None)
        if not due and ramps:  # traffic that just appeared: probed now (the ramp's cue)
            due = health.traffic_appeared(self.engine, self.ops, self._live_at_probe)
        if not due:
            return True
        decision = self._probe()
        if not decision.throttled:
            self.activity.hold(health.GO, self.clock.now())
            return True
        while decision.throttled:
            reason = decision.reason
            assert reason is not None
            self.activity.hold(decision, self.clock.now())
            self.activity.write(self.clock.timer())
            log.info("backfill worker %s holds back: %s", self.name, decision.describe())
            before = self.clock.timer()
            self.clock.sleep(interval)
            self.activity.held(reason, self.clock.timer() - before)
            if not self._going():
                return False
            if reason == health.TRAFFIC and not self._any_pending():
                return False  # the other workers copied what was left: nothing to wait for
            self._refresh()
            decision = self._probe()
        self.activity.hold(health.GO, self.clock.now())
        self.activity.write(self.clock.timer(), force=True)
        self.pacer.reset()  # a hold is not credit for a burst afterwards
        return True

    def _any_pending(self) -> bool:
        """Whether a chunk of this worker's tables is still pending (plan.any_pending)."""
        try:
            with self.engine.connect() as conn:
                return any_pending(conn, list(self.tables))
        except sa.exc.DBAPIError as exc:
            raise _storage_error(exc, "looking for chunks left") from None

    def _record_pause(self) -> None:
        self.activity.state = PAUSED_STATE
        self.activity.write(self.clock.timer())
        before = self.clock.timer()
        self.clock.sleep(PAUSE_POLL_SECONDS)
        self.activity.held(health.PAUSED, self.clock.timer() - before)

    # --- one batch --------------------------------------------------------------------

    def _chunks(self, system: LegacySystemType) -> int:
        sizer = self._sizers[system]
        if self._learned is not None and self._learned is not sizer:
            sizer.learn_from(self._learned)  # a table's first batch: no ramp from scratch
        return sizer.chunks(self._chunk_rows[system])

    def _batch_with_retries(self) -> BatchResult | _Paused | None:
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self._batch(attempt)
            except sa.exc.DBAPIError as exc:
                # A timed-out or lock-starved batch is redone, never skipped.
                reason = retry_reason(exc)
                if reason is None:
                    raise _storage_error(exc, "copying a batch") from None
                if attempt + 1 == MAX_ATTEMPTS:
                    raise StorageError(
                        f"backfill batch failed {MAX_ATTEMPTS} times ({reason}); lower "
                        "--batch-size or --max-batch-rows, or raise statement_timeout_ms / "
                        "lock_timeout_ms. Progress so far is kept: rerun to resume."
                    ) from None
                self.clock.sleep(min(5.0, 0.05 * 2**attempt))
                if not self._going():
                    return None  # told to stop: the chunk stays pending for the next run
        return None  # pragma: no cover (the loop always returns or raises)

    def _claim(
        self, conn: sa.Connection, system: LegacySystemType, retries: int, now: datetime
    ) -> Copied | None:
        return self._copiers[system].claim_and_copy(
            conn, worker=self.name, attempts=retries + 1, now=now, chunks=self._chunks(system)
        )

    def _batch(self, retries: int) -> BatchResult | _Paused | None:
        # Statement and lock timeouts, and an asynchronous commit: safe because the
        # chunks' rows and their checkpoint are lost or kept together, and a lost
        # chunk is simply copied again (ON CONFLICT DO NOTHING).
        with self.ops.batch_transaction(
            self.settings.statement_timeout_ms, self.settings.lock_timeout_ms
        ) as conn:
            # The chunks' done_at, on the clock every host reads them by (progress).
            now = database_now(conn)
            paused = False
            for system in self.tables:
                if system in self._exhausted:
                    continue
                copied = self._claim(conn, system, retries, now)
                if copied is None:
                    if is_paused(conn, system):
                        paused = True  # this system's waits; another's may go on
                        continue
                    # Not paused as the flag reads now. Done (or the rest held by other
                    # workers), unless a resume committed between the claim and this
                    # look: then a chunk is free again, and claimed now.
                    if self._copiers[system].any_claimable(conn):
                        copied = self._claim(conn, system, retries, now)
                    if copied is None:
                        self._exhausted.add(system)
                        continue
                return BatchResult(
                    system,
                    copied.start_id,
                    copied.end_id,
                    copied.rows,
                    copied.inserted,
                    copied.already_present,
                    copied.quarantined,
                    retries,
                    copied.chunks,
                )
        return PAUSED if paused else None


def _storage_error(exc: sa.exc.DBAPIError, doing: str) -> StorageError:
    if refused_for_a_limit(exc):  # what a rerun needs: backfill.connections says it
        return connection_limit_error(f"database failed while {doing}", exc)
    first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    return StorageError(
        f"database failed while {doing}: {first}. Every committed batch is kept; "
        "rerun the same command to resume."
    )
