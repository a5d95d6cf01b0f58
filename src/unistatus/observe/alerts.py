"""Alert evaluation: the rules applied, their state persisted, notified, responded to.

Each evaluation stores one state row per rule (firing / resolved / unknown), notifies
once per change, and runs the switchable automated responses. The parts: the rules and
thresholds (:mod:`~unistatus.observe.alert_rules`), the persisted state
(:mod:`~unistatus.observe.alert_state`) and the responses
(:mod:`~unistatus.observe.alert_responses`); the whole story: ``docs/alerts.md``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.db.failures import one_line, read_only_refusal
from unistatus.db.retry import is_read_only, is_retryable
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import StorageError, UnistatusError
from unistatus.migration.capture import fold_writers
from unistatus.migration.verify import (
    DEFAULT_BUSY_MAX_WAIT,
    DEFAULT_ROWS_PER_ROUND,
    DEFAULT_SECONDS_PER_ROUND,
    verify_changes,
)
from unistatus.observe.alert_responses import Responder
from unistatus.observe.alert_rules import STALL_SECONDS, Level, Observation, observe
from unistatus.observe.alert_state import (
    AlertState,
    baseline_p95_ms,
    current_rows,
    ensure_rows,
    keep_baseline,
    legacy_primary_baselines,
    load_states,
    notification,
    update_state,
)
from unistatus.observe.metrics import (
    DEFAULT_WINDOW_SECONDS,
    Snapshot,
    collect_snapshot,
    database_reachable,
)
from unistatus.observe.notify import Notification, Notifier
from unistatus.observe.retention import MAX_ROWS_PER_CALL, RETAINED, prune_table

__all__ = ["Monitor", "evaluate"]

log = logging.getLogger("unistatus.observe.alerts")
# How often a monitor keeps house: folds the capture's writer counts
# (capture.fold_writers) and deletes what is past its retention (observe.retention).
FOLD_EVERY_SECONDS = 600.0


class Monitor:
    """Evaluates the rules, persists their state, notifies, and runs the responses."""

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        *,
        notifier: Notifier | None = None,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        stall_seconds: float = STALL_SECONDS,
        verify_rows: int = DEFAULT_ROWS_PER_ROUND,
        verify_seconds: float | None = DEFAULT_SECONDS_PER_ROUND,
        verify_busy_wait: float = DEFAULT_BUSY_MAX_WAIT,
    ) -> None:
        self.engine = engine
        # Rows changed since the last verified point checked per evaluation and system
        # (0: off), the seconds spent on each system, at most (None: unbounded), and
        # how long a new pass may wait beside live traffic (0: never waits).
        self.verify_rows = verify_rows
        self.verify_seconds = verify_seconds
        self.verify_busy_wait = verify_busy_wait
        self.settings = settings
        self.notifier = notifier or Notifier.from_settings(settings)
        self.window_seconds = window_seconds
        self.stall_seconds = stall_seconds
        self.ops = ops_for(engine)
        # While the database is down nothing can be persisted: remember in memory (since
        # when it is down: None while it is up).
        self._down_since: datetime | None = None
        # Why the last evaluation's state could not be stored (a lock, a deadlock; None:
        # it was): `serve` says it in /health.
        self.unstored: str | None = None
        self._said_how_it_sees = False  # whether it read how much of the activity it sees
        self._housekept_at: float | None = None
        # Rows deleted per table and retention call, at most; a call that stopped there
        # goes on at the next evaluation.
        self.prune_rows = MAX_ROWS_PER_CALL
        self._prune_more = False

    def evaluate(self, *, now: datetime | None = None) -> list[AlertState]:
        """One evaluation: verify, judge, persist, notify, respond; then keep house
        (after the alerts, which never wait for it), unless the database is down."""
        states = self._judge(now or utcnow())
        if not any(s.name == "database_down" and s.firing for s in states):
            self.housekeep()
        return states

    def _judge(self, now: datetime) -> list[AlertState]:
        self.verify()
        snap = collect_snapshot(self.engine, self.settings, window_seconds=self.window_seconds)
        observations = observe(snap, now=now, stall_seconds=self.stall_seconds)
        if not snap.database_up:
            return self._database_down(observations[0], now)
        try:
            to_notify = self._store(snap, observations, now)
        except sa.exc.DBAPIError as exc:
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            # A lock not had in time, a deadlock, a connection the server dropped (a
            # failover, a pooler's restart: the pool is renewed): the next one stores.
            if is_retryable(exc) or exc.connection_invalidated:
                log.warning(
                    "alert state not stored (%s): nothing notified or acted on this "
                    "evaluation; the next tries again",
                    first,
                )
                self.unstored = first
                return _unstored(observations, now, first)
            if database_reachable(self.engine) is None:  # reachable: it refuses the write
                hint = (
                    read_only_refusal(who="the monitor")
                    if is_read_only(exc)
                    else "run `unistatus init` to upgrade the schema"
                )
                raise StorageError(f"cannot store alert state ({first}); {hint}") from None
            # It went away between the snapshot and now.
            obs = Observation(
                "database_down", Level.CRITICAL, True, 1.0, None, f"database unreachable: {first}"
            )
            return self._database_down(obs, now)
        self.unstored = None
        return self._act(snap, observations, to_notify, now)

    def verify(self) -> None:
        """A round of continuous verification first, so the rules judge a fresh rate.

        A failure is logged and left to the rules (the database_down rule, a stale
        check): it never stops the evaluation.
        """
        if self.verify_rows <= 0:
            return
        if not self._said_how_it_sees:  # once it could tell
            what = "continuous verification's wait for live traffic"
            self._said_how_it_sees = self.ops.say_if_activity_hidden(what, log)
        try:
            verify_changes(
                self.engine,
                self.settings,
                max_rows=self.verify_rows,
                max_seconds=self.verify_seconds,
                busy_max_wait=self.verify_busy_wait,
            )
        except (sa.exc.SQLAlchemyError, UnistatusError) as exc:
            # One line, never the statement's parameters (they hold the rows' data).
            prefix = "continuous verification failed: "
            log.warning("%s%s", prefix, one_line(exc).removeprefix(prefix))

    def housekeep(self) -> None:
        """Now and then (every :data:`FOLD_EVERY_SECONDS`, and at the first evaluation):
        fold the capture's writer counts of sessions gone quiet into one row per writer
        (``fold_writers``), so the table the rules and ``/metrics`` read stays as small
        as the writers are few; and delete the idempotency keys and continuous
        verification reports past their retention (:mod:`unistatus.observe.retention`),
        again at the next evaluation while a call stopped at its bound. A failure is
        logged, each table's on its own; it never stops the evaluation."""
        ticks = time.monotonic()
        due = self._housekept_at is None or ticks - self._housekept_at >= FOLD_EVERY_SECONDS
        if not due and not self._prune_more:
            return
        if due:
            self._housekept_at = ticks
            try:
                fold_writers(self.engine)
            except (sa.exc.SQLAlchemyError, UnistatusError) as exc:
                log.warning("folding the capture's writer counts failed: %s", exc)
        self._prune_more = False
        for retained in RETAINED:
            try:
                deleted = prune_table(
                    self.engine, self.settings, retained, max_rows=self.prune_rows
                )
            except (sa.exc.SQLAlchemyError, UnistatusError) as exc:
                log.warning("deleting the %s past their retention failed: %s", retained.what, exc)
                continue
            if deleted >= self.prune_rows:
                self._prune_more = True
                log.info(
                    "retention: deleted %d %s; more remain (next evaluation)",
                    deleted,
                    retained.what,
                )
            elif deleted:
                log.info("retention: deleted %d %s", deleted, retained.what)

    def _database_down(self, obs: Observation, now: datetime) -> list[AlertState]:
        if self._down_since is None:
            self._down_since = now
            self.notifier.send(notification(obs, "firing", now))
        return [
            AlertState(
                obs.name,
                obs.level.value,
                "firing",
                self._down_since,
                obs.value,
                None,
                obs.message,
                now,
                self._down_since,  # notified then, once
                "firing",
            )
        ]

    def _store(
        self, snap: Snapshot, observations: list[Observation], now: datetime
    ) -> list[Notification]:
        """Store what the evaluation saw (one transaction); the notifications it claimed."""
        to_notify: list[Notification] = []
        baselines = self._baselines(snap)
        with self.ops.write_transaction() as conn:
            ensure_rows(self.ops, conn, observations, now)
            old = current_rows(conn)
            for obs in observations:
                note = update_state(conn, obs, old[obs.name], now)
                if note is not None:
                    to_notify.append(note)
            keep_baseline(self.ops, conn, baselines, now)
        return to_notify

    def _act(
        self,
        snap: Snapshot,
        observations: list[Observation],
        to_notify: list[Notification],
        now: datetime,
    ) -> list[AlertState]:
        """After the state is stored: notify, respond, and read the states back."""
        if self._down_since is not None:  # the database is back: say so once
            self._down_since = None
            if not any(n.name == "database_down" for n in to_notify):
                to_notify.append(notification(observations[0], "resolved", now))
        for note in to_notify:
            self.notifier.send(note)
        Responder(self.engine, self.settings, self.notifier, self.ops).respond(snap)
        return load_states(self.engine)

    def _baselines(self, snap: Snapshot) -> dict[str, float]:
        """The legacy-primary p95s over the window (read before the write transaction;
        none while the statistics cannot be read)."""
        if snap.sources.get("stats") != "ok":
            return {}
        # Only while a system writes in DUAL_WRITE_LEGACY_PRIMARY (phases 1 and 2): the
        # four reads cost ~10% of an evaluation, and nothing else adds to the baseline.
        modes = {str(s.get("mode")) for s in (snap.systems or {}).values()} | {str(snap.mode)}
        if DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY.value not in modes:
            return {}
        try:
            return legacy_primary_baselines(self.engine, self.window_seconds)
        except (sa.exc.SQLAlchemyError, UnistatusError) as exc:
            log.warning("cannot read the legacy-primary p95 baseline: %s", exc)
            return {}

    def baseline_p95_ms(self, system: LegacySystemType | None = None) -> float | None:
        """The legacy-primary p95 (ms) the latency rollback compares ``system``'s with
        (None: every system's): remembered, else from the stored statistics."""
        return baseline_p95_ms(self.engine, system)


def evaluate(
    engine: sa.Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    notifier: Notifier | None = None,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> list[AlertState]:
    """One evaluation of every rule (state persisted, notifications, responses)."""
    return Monitor(engine, settings, notifier=notifier, window_seconds=window_seconds).evaluate(
        now=now
    )


def _unstored(observations: list[Observation], now: datetime, why: str) -> list[AlertState]:
    """What an evaluation saw, as states to show, where they could not be stored (``why``):
    each rule as it stands now, "not stored" in its message."""
    return [
        AlertState(
            obs.name,
            obs.level.value,
            obs.state,
            now,
            obs.value,
            obs.threshold,
            f"{obs.message} (not stored: {why})",
            now,
        )
        for obs in observations
    ]
