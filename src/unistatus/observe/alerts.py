"""Alert rules, their persisted state, and the automated responses.

Each evaluation stores one state row per rule (firing / resolved / unknown), notifies
once per change, and runs the switchable automated responses. The rules, thresholds
(``docs/status-model.md``) and responses: ``docs/alerts.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.config import Settings
from unistatus.db.control import write_value
from unistatus.db.dialect import ops_for
from unistatus.db.tables_alerts import alert_state, monitor_values
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import StorageError
from unistatus.migration.repair import run_repair
from unistatus.migration.rollback import emergency_rollback, rollback_current_phase
from unistatus.observe.metrics import (
    DEFAULT_WINDOW_SECONDS,
    Snapshot,
    collect_snapshot,
    database_reachable,
    judged_consistency,
)
from unistatus.observe.notify import Notification, Notifier

__all__ = [
    "AUTO_RESPONSE_KEY",
    "AlertState",
    "Level",
    "Monitor",
    "Observation",
    "evaluate",
    "load_states",
    "observe",
]

log = logging.getLogger("unistatus.observe.alerts")

AUTO_RESPONSE_KEY = "auto_response"
BASELINE_KEY = "p95_baseline_ms"
ACTOR = "monitor"
# The latency rollback needs p95 this much worse than the legacy-primary baseline.
LATENCY_REGRESSION = 1.20
# A baseline is only taken from a window with at least this many operations.
BASELINE_MIN_OPERATIONS = 20
STALL_SECONDS = 3600.0
MILESTONES = (25, 50, 75, 100)

THRESHOLDS: dict[str, float] = {
    "consistency_critical": 0.99,
    "consistency_warning": 0.999,
    "error_rate_critical": 0.01,
    "error_rate_warning": 0.001,
    "latency_p95_critical": 500.0,
    "latency_p95_warning": 200.0,
    "backfill_stalled": STALL_SECONDS,
}
UNIFIED_PRIMARY_MODES = (DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, DualWriteMode.UNIFIED_ONLY)
LEGACY_PRIMARY_MODES = (DualWriteMode.LEGACY_ONLY, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)


class Level(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Observation:
    """What one rule sees now. ``firing`` None = unknown (its source is unavailable).

    Info rules are events: ``marker`` identifies the latest event (the phase number,
    the check report id, the highest milestone); a new marker is a new event.
    """

    name: str
    level: Level
    firing: bool | None
    value: float | None
    threshold: float | None
    message: str
    marker: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if self.level is Level.INFO:
            return "info"
        return {True: "firing", False: "resolved", None: "unknown"}[self.firing]


@dataclass(frozen=True)
class AlertState:
    """The persisted state of one rule."""

    name: str
    level: str
    state: str
    since: datetime
    value: float | None
    threshold: float | None
    message: str
    evaluated_at: datetime
    notified_at: datetime | None = None
    notified_state: str | None = None
    response: str | None = None
    marker: str | None = None

    @property
    def firing(self) -> bool:
        return self.state == "firing"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "level": self.level,
            "state": self.state,
            "since": self.since.isoformat(),
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
            "evaluated_at": self.evaluated_at.isoformat(),
            "notified_at": self.notified_at.isoformat() if self.notified_at else None,
            "response": self.response,
        }


# --- rules --------------------------------------------------------------------------


def _threshold_rule(
    name: str,
    level: Level,
    value: float | None,
    *,
    known: bool,
    below: bool,
    what: str,
    unit: str,
    empty: str,
) -> Observation:
    """A "value below/above threshold" rule; unknown when its source is unavailable."""
    threshold = THRESHOLDS[name]
    if not known:
        return Observation(name, level, None, None, threshold, f"{what} unknown")
    if value is None:  # the source answered, but there was nothing to measure
        return Observation(name, level, False, None, threshold, empty)
    firing = value < threshold if below else value > threshold
    shown = _pct if unit == "%" else (lambda v: f"{v:.1f} ms")
    message = f"{what} {shown(value)} (threshold {'<' if below else '>'} {shown(threshold)})"
    return Observation(name, level, firing, value, threshold, message)


def _pct(v: float | None) -> str:
    return "unknown" if v is None else f"{v * 100:.3f}%"


def observe(
    snap: Snapshot, *, now: datetime, stall_seconds: float = STALL_SECONDS
) -> list[Observation]:
    """Apply every rule to a snapshot (pure: no database, no side effects)."""
    out: list[Observation] = [
        Observation(
            "database_down",
            Level.CRITICAL,
            not snap.database_up,
            0.0 if snap.database_up else 1.0,
            None,
            "database reachable"
            if snap.database_up
            else f"database unreachable: {snap.database_error}",
        )
    ]
    check_known = snap.sources.get("check") == "ok"
    stats_known = snap.sources.get("stats") == "ok"
    count = int(snap.perf("count") or 0)
    error_rate = snap.perf("error_rate") if count else None
    p95 = snap.perf("p95_ms")
    idle = "no operations in the window"
    consistency, not_backfilled = judged_consistency(snap)
    what = "consistency"
    if not_backfilled:
        what += f" ({not_backfilled} rows awaiting backfill not counted)"
    for level, suffix in ((Level.CRITICAL, "critical"), (Level.WARNING, "warning")):
        out.append(
            _threshold_rule(
                f"consistency_{suffix}",
                level,
                consistency,
                known=check_known,
                below=True,
                what=what,
                unit="%",
                empty="no check report yet",
            )
        )
        out.append(
            _threshold_rule(
                f"error_rate_{suffix}",
                level,
                error_rate,
                known=stats_known,
                below=False,
                what=f"error rate over {count} operations",
                unit="%",
                empty=idle,
            )
        )
        out.append(
            _threshold_rule(
                f"latency_p95_{suffix}",
                level,
                p95,
                known=stats_known,
                below=False,
                what="p95 latency",
                unit="ms",
                empty=idle,
            )
        )
    out.append(_stalled(snap, now, stall_seconds))
    out.extend(_info_events(snap))
    return out


def _stalled(snap: Snapshot, now: datetime, stall_seconds: float) -> Observation:
    name = "backfill_stalled"
    if snap.progress is None:
        return Observation(name, Level.WARNING, None, None, stall_seconds, "progress unknown")
    stalled: dict[str, float] = {}
    for system, info in snap.progress.items():
        started = (info.get("percent") or 0) > 0 or info.get("state") not in (
            None,
            "not_started",
            "pending",
        )
        updated = _parse_time(info.get("updated_at"))
        paused = info.get("paused") or info.get("state") == "paused"  # deliberate, not stalled
        if info.get("complete") or paused or not started or updated is None:
            continue
        idle = (now - updated).total_seconds()
        if idle > stall_seconds:
            stalled[system] = idle
    if not stalled:
        return Observation(name, Level.WARNING, False, 0.0, stall_seconds, "backfill progressing")
    worst = max(stalled.values())
    text = ", ".join(f"{s} idle {v / 3600:.1f} h" for s, v in sorted(stalled.items()))
    return Observation(
        name,
        Level.WARNING,
        True,
        worst,
        stall_seconds,
        f"migration progress stalled: {text}",
        details={"idle_seconds": stalled},
    )


def _info_events(snap: Snapshot) -> list[Observation]:
    out: list[Observation] = []
    if snap.phase is not None:
        out.append(
            Observation(
                "phase_transition",
                Level.INFO,
                None,
                float(snap.phase),
                None,
                f"phase transition completed: now phase {snap.phase} (mode {snap.mode})",
                marker=str(snap.phase),
            )
        )
    for system, info in sorted((snap.progress or {}).items()):
        percent = info.get("percent")
        if percent is None:
            continue
        reached = [m for m in MILESTONES if float(percent) >= m]
        # Marker "0" before the first milestone, so that reaching 25% is news too.
        top = reached[-1] if reached else 0
        out.append(
            Observation(
                f"milestone_backfill_{system.lower()}",
                Level.INFO,
                None,
                float(percent),
                None,
                f"milestone reached: {system} backfill {top}%"
                if top
                else f"{system} backfill below {MILESTONES[0]}%",
                marker=str(top),
            )
        )
    report = snap.last_check
    if report is not None and report.get("id") is not None:
        rate = snap.consistency_rate
        passed = report.get("inconsistent") == 0
        verdict = "passed" if passed else f"failed ({report.get('inconsistent')} inconsistent)"
        out.append(
            Observation(
                "validation",
                Level.INFO,
                None,
                rate,
                None,
                f"validation {verdict}: {report.get('consistent')}/{report.get('total')} "
                f"consistent ({_pct(rate)}, scope {report.get('scope')})",
                marker=str(report["id"]),
            )
        )
    return out


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str) and value:
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


# --- state --------------------------------------------------------------------------


def _row_state(r: Any) -> AlertState:
    return AlertState(
        name=r.name,
        level=r.level,
        state=r.state,
        since=as_utc(r.since) or utcnow(),
        value=r.value,
        threshold=r.threshold,
        message=r.message,
        evaluated_at=as_utc(r.evaluated_at) or utcnow(),
        notified_at=as_utc(r.notified_at),
        notified_state=r.notified_state,
        response=r.response,
        marker=r.marker,
    )


def load_states(engine: sa.Engine) -> list[AlertState]:
    """Every persisted alert (critical first, then by name)."""
    order = sa.case({"critical": 0, "warning": 1, "info": 2}, value=alert_state.c.level, else_=3)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(alert_state).order_by(order, alert_state.c.name)).all()
    return [_row_state(r) for r in rows]


def _notification(obs: Observation, state: str, now: datetime) -> Notification:
    return Notification(
        name=obs.name,
        level=obs.level.value,
        state=state,
        message=obs.message,
        value=obs.value,
        threshold=obs.threshold,
        at=now,
        details=obs.details or None,
    )


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
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.notifier = notifier or Notifier.from_settings(settings)
        self.window_seconds = window_seconds
        self.stall_seconds = stall_seconds
        self.ops = ops_for(engine)
        # While the database is down nothing can be persisted: remember in memory.
        self._down_notified = False

    def evaluate(self, *, now: datetime | None = None) -> list[AlertState]:
        now = now or utcnow()
        snap = collect_snapshot(self.engine, self.settings, window_seconds=self.window_seconds)
        observations = observe(snap, now=now, stall_seconds=self.stall_seconds)
        if not snap.database_up:
            return self._database_down(observations[0], now)
        try:
            return self._persist(snap, observations, now)
        except sa.exc.DBAPIError as exc:
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            if database_reachable(self.engine) is None:  # reachable: the schema is the problem
                raise StorageError(
                    f"cannot store alert state ({first}); run `unistatus init` to upgrade the "
                    "schema"
                ) from None
            # It went away between the snapshot and now.
            obs = Observation(
                "database_down", Level.CRITICAL, True, 1.0, None, f"database unreachable: {first}"
            )
            return self._database_down(obs, now)

    def _database_down(self, obs: Observation, now: datetime) -> list[AlertState]:
        if not self._down_notified:
            self._down_notified = True
            self.notifier.send(_notification(obs, "firing", now))
        return [
            AlertState(
                obs.name,
                obs.level.value,
                "firing",
                now,
                obs.value,
                None,
                obs.message,
                now,
                now,
                "firing",
            )
        ]

    def _persist(
        self, snap: Snapshot, observations: list[Observation], now: datetime
    ) -> list[AlertState]:
        to_notify: list[Notification] = []
        with self.ops.write_transaction() as conn:
            self._ensure_rows(conn, observations, now)
            old = {r.name: r for r in conn.execute(sa.select(alert_state)).all()}
            for obs in observations:
                note = self._update(conn, obs, old[obs.name], now)
                if note is not None:
                    to_notify.append(note)
            self._keep_baseline(conn, snap, now)
        if self._down_notified:  # the database is back: say so once
            self._down_notified = False
            if not any(n.name == "database_down" for n in to_notify):
                to_notify.append(_notification(observations[0], "resolved", now))
        for note in to_notify:
            self.notifier.send(note)
        self._respond(snap, now)
        return load_states(self.engine)

    def _ensure_rows(
        self, conn: sa.Connection, observations: list[Observation], now: datetime
    ) -> None:
        rows = [
            {
                "name": o.name,
                "level": o.level.value,
                "state": o.state,
                "since": now,
                "value": o.value,
                "threshold": o.threshold,
                "marker": None,
                "message": o.message,
                "evaluated_at": now,
            }
            for o in observations
        ]
        conn.execute(self.ops.insert(alert_state).on_conflict_do_nothing(), rows)

    def _update(
        self, conn: sa.Connection, obs: Observation, row: Any, now: datetime
    ) -> Notification | None:
        a = alert_state.c
        where = a.name == obs.name
        values: dict[str, Any] = {
            "level": obs.level.value,
            "value": obs.value,
            "threshold": obs.threshold,
            "message": obs.message,
            "evaluated_at": now,
        }
        if obs.level is Level.INFO:
            if obs.marker is None or obs.marker == row.marker:
                conn.execute(sa.update(alert_state).where(where).values(values))
                return None
            # A new event. The first marker ever seen is the starting point, not news.
            guard = a.marker.is_(None) if row.marker is None else a.marker == row.marker
            claimed = conn.execute(
                sa.update(alert_state)
                .where(where, guard)
                .values(**values, marker=obs.marker, since=now, notified_at=now)
            ).rowcount
            if claimed and row.marker is not None:
                return _notification(obs, "info", now)
            return None
        state = obs.state
        values["state"] = state
        values["since"] = sa.case((a.state == state, a.since), else_=now)
        if state == "resolved":
            values["response"] = None  # a new firing episode may respond again
        conn.execute(sa.update(alert_state).where(where).values(values))
        # Claim the notification: only the evaluator whose UPDATE matched sends it.
        if state == "firing":
            claim = sa.or_(a.notified_state.is_(None), a.notified_state != "firing")
        elif state == "resolved":
            claim = a.notified_state == "firing"
        else:
            return None  # unknown: keep quiet, and do not forget an unresolved firing
        claimed = conn.execute(
            sa.update(alert_state).where(where, claim).values(notified_state=state, notified_at=now)
        ).rowcount
        return _notification(obs, state, now) if claimed else None

    def _keep_baseline(self, conn: sa.Connection, snap: Snapshot, now: datetime) -> None:
        """While legacy is primary, remember its p95: the latency rollback's baseline."""
        p95 = snap.perf("p95_ms")
        if (
            snap.mode not in {m.value for m in LEGACY_PRIMARY_MODES}
            or p95 is None
            or (snap.perf("count") or 0) < BASELINE_MIN_OPERATIONS
        ):
            return
        stmt = self.ops.insert(monitor_values).values(key=BASELINE_KEY, value=p95, updated_at=now)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[monitor_values.c.key], set_={"value": p95, "updated_at": now}
            )
        )

    def baseline_p95_ms(self) -> float | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(monitor_values.c.value).where(monitor_values.c.key == BASELINE_KEY)
            ).scalar_one_or_none()
        return float(value) if value is not None else None

    # --- automated responses --------------------------------------------------------

    def _respond(self, snap: Snapshot, now: datetime) -> None:
        auto = self.settings.auto_responses
        states = {s.name: s for s in load_states(self.engine) if s.firing and s.response is None}
        mode = DualWriteMode(snap.mode) if snap.mode else None
        if "consistency_critical" in states:
            if not auto.rollback_on_critical_consistency:
                self._claim("consistency_critical", "none: rollback_on_critical_consistency is off")
            elif mode is DualWriteMode.LEGACY_ONLY:
                self._claim("consistency_critical", "none: already LEGACY_ONLY")
            else:
                self._run(
                    "consistency_critical",
                    "emergency_rollback",
                    states["consistency_critical"].message,
                    lambda reason: emergency_rollback(
                        self.engine, self.settings, actor=ACTOR, reason=reason
                    ),
                )
        if "consistency_warning" in states:
            if not auto.repair_on_consistency_warning:
                self._claim("consistency_warning", "none: repair_on_consistency_warning is off")
            elif mode is DualWriteMode.UNIFIED_ONLY:
                # Legacy is frozen: nothing to repair it with until a rollback replays it.
                self._detailed_logging(snap)
                self._claim("consistency_warning", "none: legacy is frozen in UNIFIED_ONLY")
            else:
                self._detailed_logging(snap)
                self._run(
                    "consistency_warning",
                    "repair",
                    states["consistency_warning"].message,
                    lambda reason: _repair(self, mode, reason),
                )
        if "latency_p95_critical" in states:
            self._latency_response(states["latency_p95_critical"], snap, mode)

    def _latency_response(
        self, state: AlertState, snap: Snapshot, mode: DualWriteMode | None
    ) -> None:
        if not self.settings.auto_responses.rollback_on_latency:
            self._claim(state.name, "none: rollback_on_latency is off")
            return
        if mode not in UNIFIED_PRIMARY_MODES:
            return  # legacy is primary: nothing to roll back; the alert notifies
        p95 = snap.perf("p95_ms")
        baseline = self.baseline_p95_ms()
        if p95 is None or baseline is None or p95 <= baseline * LATENCY_REGRESSION:
            log.warning(
                "p95 %s ms with the unified side primary; baseline %s ms: no rollback "
                "(needs > %d%% worse than the baseline)",
                p95,
                baseline,
                round((LATENCY_REGRESSION - 1) * 100),
            )
            return  # reconsidered on the next evaluation while the alert fires
        reason = (
            f"{state.message}; {p95 / baseline * 100 - 100:.0f}% above the legacy-primary "
            f"baseline {baseline:.1f} ms"
        )
        # The spec's response is "roll back to legacy primary": one phase back from 3, and
        # from 4 (UNIFIED_ONLY) the phase-4 procedure, which replays to legacy first.
        action = "rollback_phase"

        def act(why: str) -> Any:
            return rollback_current_phase(self.engine, self.settings, actor=ACTOR, reason=why)

        self._run(state.name, action, reason, act)

    def _detailed_logging(self, snap: Snapshot) -> None:
        logging.getLogger("unistatus").setLevel(logging.DEBUG)
        log.warning("consistency below 99.9%%: latest check report %s", snap.last_check)

    def _claim(self, name: str, response: str) -> bool:
        """Take the response slot of a firing alert (only one evaluator responds)."""
        with self.ops.write_transaction() as conn:
            return bool(
                conn.execute(
                    sa.update(alert_state)
                    .where(alert_state.c.name == name, alert_state.c.response.is_(None))
                    .values(response=response)
                ).rowcount
            )

    def _run(self, name: str, action: str, reason: str, act: Callable[[str], Any]) -> None:
        if not self._claim(name, f"{action}: running"):
            return
        why = f"automated response to {name}: {reason}"
        try:
            result = act(why)
            outcome = f"{action}: done"
        except Exception as exc:
            log.error("automated response %s for %s failed: %s", action, name, exc)
            outcome = f"{action}: failed: {type(exc).__name__}: {exc}"
            result = None
        detail = result.as_dict() if hasattr(result, "as_dict") else None
        with self.ops.write_transaction() as conn:
            conn.execute(
                sa.update(alert_state).where(alert_state.c.name == name).values(response=outcome)
            )
            write_value(
                conn,
                AUTO_RESPONSE_KEY,
                outcome[:256],
                actor=ACTOR,
                reason=why,
                metadata={"alert": name, "action": action, "result": _jsonable(detail)},
            )
        self.notifier.send(
            Notification(
                name=name,
                level="critical" if "failed" in outcome else "warning",
                state="response",
                message=f"automated response {outcome} ({reason})",
            )
        )


def _repair(monitor: Monitor, mode: DualWriteMode | None, reason: str) -> Any:
    """Repair with the side the current mode reads as the winner (it is authoritative)."""
    strategy = "unified_wins" if mode is not None and mode.reads_unified else "legacy_wins"
    return run_repair(
        monitor.engine, monitor.settings, strategy=strategy, actor=ACTOR, reason=reason
    )


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


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
