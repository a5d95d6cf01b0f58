"""The persisted state of the alert rules: one ``alert_state`` row per rule.

Reads (:func:`load_states`) and the writes one evaluation makes inside its transaction:
a row per new rule, each rule's new state with the claim of its notification (only the
evaluator whose UPDATE matched notifies), the legacy-primary p95 baselines (every
system's and each system's), and the claim of a firing alert's response slot (only
one evaluator responds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.db.dialect import DialectOps
from unistatus.db.system_keys import SYSTEMS
from unistatus.db.tables_alerts import alert_state, monitor_values
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.observe.alert_rules import Level, Observation
from unistatus.observe.notify import Notification
from unistatus.observe.stats import WRITES, window

__all__ = [
    "BASELINE_KEY",
    "RUNNING",
    "AlertState",
    "baseline_key",
    "baseline_p95_ms",
    "claim_response",
    "current_rows",
    "ensure_rows",
    "keep_baseline",
    "legacy_primary_baselines",
    "load_states",
    "notification",
    "release_response",
    "set_response",
    "update_state",
]

BASELINE_KEY = "p95_baseline_ms"
# A baseline is only taken from a window with at least this many operations.
BASELINE_MIN_OPERATIONS = 20
# The writes a baseline is taken from: the dual write that unified primary replaces.
# Not LEGACY_ONLY's: a failure of a process that never read its mode is filed under it
# (its stand-in, adapter/runner.py), with the failure's latency.
_LEGACY_PRIMARY = (DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY.value,)
# Every stored statistic (pruning folds old rows, it keeps their sums).
_EVER = 100 * 365 * 24 * 3600.0


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


def notification(obs: Observation, state: str, now: datetime) -> Notification:
    """The notification of ``obs`` entering ``state``."""
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


def ensure_rows(
    ops: DialectOps, conn: sa.Connection, observations: list[Observation], now: datetime
) -> None:
    """A row for every rule that has none yet (an existing row is left as it is)."""
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
    conn.execute(ops.insert(alert_state).on_conflict_do_nothing(), rows)


def current_rows(conn: sa.Connection) -> dict[str, Any]:
    """Every rule's stored row, by name (as this transaction sees them)."""
    return {r.name: r for r in conn.execute(sa.select(alert_state)).all()}


def update_state(
    conn: sa.Connection, obs: Observation, row: Any, now: datetime
) -> Notification | None:
    """Store what ``obs`` sees; the notification to send if this evaluator claimed it."""
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
            return notification(obs, "info", now)
        return None
    state = obs.state
    values["state"] = state
    values["since"] = sa.case((a.state == state, a.since), else_=now)
    if state == "resolved":
        values["response"] = None  # a new firing episode may respond again
        values["marker"] = None
    elif state == "firing":
        values["marker"] = _crossing_marker(obs)
        # The episode is open while its firing was notified (an unknown evaluation between
        # keeps it open): a system that crossed since is news, and gets its own response,
        # once no response is running (another evaluator's: never two at once).
        if row.notified_state == "firing" and _newly_crossing(obs, row.marker):
            claimed = conn.execute(
                sa.update(alert_state)
                .where(
                    where,
                    a.notified_state == "firing",
                    _same_marker(row.marker),
                    sa.or_(a.response.is_(None), a.response.not_like(f"%{RUNNING}")),
                )
                .values(**values, response=None, notified_at=now)
            ).rowcount
            if claimed:
                return notification(obs, state, now)
            del values["marker"]  # not claimed: the next evaluation tries again
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
    return notification(obs, state, now) if claimed else None


# How a response in progress reads (alert_responses: "<action>: running").
RUNNING = ": running"


def _crossing_marker(obs: Observation) -> str | None:
    """What a firing rule's ``marker`` holds: the systems whose own figures cross
    (``details["systems"]``, comma-separated), None when not known per system."""
    systems = obs.details.get("systems")
    return ",".join(sorted(systems)) if systems else None


def _newly_crossing(obs: Observation, marker: str | None) -> list[str]:
    """The systems crossing now that did not at the last evaluation (``marker``); none
    when the last one knew no system (its response was for every system)."""
    if marker is None:
        return []
    return sorted(set(obs.details.get("systems") or ()) - set(marker.split(",")))


def _same_marker(marker: str | None) -> sa.ColumnElement[bool]:
    m = alert_state.c.marker
    return m.is_(None) if marker is None else m == marker


def legacy_primary_baselines(engine: sa.Engine, seconds: float) -> dict[str, float]:
    """The baselines the last ``seconds`` give, by key: the p95 of the writes made in a
    legacy-primary mode (the mode each operation was stored with, whatever the modes
    are now), of every system together and of each system on its own, where at least
    :data:`BASELINE_MIN_OPERATIONS` of them ran."""
    out: dict[str, float] = {}
    for system in (None, *SYSTEMS):
        perf = window(engine, seconds, operation=WRITES, mode=_LEGACY_PRIMARY, system=system)
        if perf.count >= BASELINE_MIN_OPERATIONS and perf.p95_ms is not None:
            out[baseline_key(system)] = perf.p95_ms
    return out


def keep_baseline(
    ops: DialectOps, conn: sa.Connection, baselines: dict[str, float], now: datetime
) -> None:
    """Remember the legacy-primary p95s (:func:`legacy_primary_baselines`): the latency
    rollback's baselines."""
    for key, p95 in baselines.items():
        stmt = ops.insert(monitor_values).values(key=key, value=p95, updated_at=now)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[monitor_values.c.key], set_={"value": p95, "updated_at": now}
            )
        )


def baseline_key(system: LegacySystemType | None) -> str:
    """The ``monitor_values`` key of a system's baseline (None: every system's)."""
    return BASELINE_KEY if system is None else f"{BASELINE_KEY}:{system.value}"


def baseline_p95_ms(engine: sa.Engine, system: LegacySystemType | None = None) -> float | None:
    """The legacy-primary p95 (ms) the latency rollback compares with, if any is known.

    ``system``'s remembered one, else every system's remembered one; with neither (a
    monitor that was not running while legacy was primary), the p95 of the writes
    stored in a legacy-primary mode, ``system``'s else every system's (a read of the
    whole statistics table: only then). None: no legacy-primary write was ever stored."""
    whose = (system, None) if system is not None else (None,)
    with engine.connect() as conn:
        for key in map(baseline_key, whose):
            value = conn.execute(
                sa.select(monitor_values.c.value).where(monitor_values.c.key == key)
            ).scalar_one_or_none()
            if value is not None:
                return float(value)
    for chosen in whose:
        stored = window(engine, _EVER, operation=WRITES, mode=_LEGACY_PRIMARY, system=chosen)
        if stored.count and stored.p95_ms is not None:
            return stored.p95_ms
    return None


def claim_response(ops: DialectOps, name: str, response: str) -> bool:
    """Take the response slot of a firing alert (only one evaluator responds)."""
    with ops.write_transaction() as conn:
        return bool(
            conn.execute(
                sa.update(alert_state)
                .where(alert_state.c.name == name, alert_state.c.response.is_(None))
                .values(response=response)
            ).rowcount
        )


def release_response(ops: DialectOps, name: str) -> None:
    """Give a claimed response slot back (its response waits: the next evaluation of
    the still firing alert claims it again)."""
    with ops.write_transaction() as conn:
        conn.execute(sa.update(alert_state).where(alert_state.c.name == name).values(response=None))


def set_response(conn: sa.Connection, name: str, response: str) -> None:
    """Record how a claimed response ended."""
    conn.execute(sa.update(alert_state).where(alert_state.c.name == name).values(response=response))
