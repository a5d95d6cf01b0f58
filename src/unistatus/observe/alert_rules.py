"""The alert rules: their thresholds as data, and what each rule sees in a snapshot.

:func:`observe` applies every rule to a metrics :class:`~unistatus.observe.metrics.Snapshot`
and returns one :class:`Observation` per rule (firing / resolved / unknown, or an info
event). Pure: no database, no side effects. The thresholds are decisions of the status
model (``docs/status-model.md``); the rules: ``docs/alerts.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from unistatus.clock import as_utc
from unistatus.db.connection_limit import refused_for_a_limit
from unistatus.domain.statuses import DualWriteMode
from unistatus.observe.metrics import Snapshot, judged_consistency, progress_unknown

__all__ = [
    "DATABASE_REACHABLE",
    "ACTIONS",
    "MILESTONES",
    "STALL_SECONDS",
    "THRESHOLDS",
    "Level",
    "Observation",
    "observe",
]

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


# What an operator does when a rule fires: the "what you do" column of the alert table
# in docs/runbook.md, word for word (a test compares them). The exported Prometheus
# rules carry it as their ``runbook`` annotation; ``repair_queue_not_empty`` is a
# Prometheus rule only (the monitor shows the queue on the dashboards), and so is
# ``metrics_absent``: the monitor is the process whose figures are missing, it cannot
# judge its own absence (no THRESHOLDS entry).
ACTIONS: dict[str, str] = {
    "database_down": (
        "Restore the database; adapters fail their writes cleanly (no partial dual write)."
    ),
    "consistency_critical": (
        "Confirm `unistatus mode get` shows the systems the alert names in LEGACY_ONLY "
        "and health is not down (it stays degraded while this alert fires, until a full "
        "check finds the rows consistent again). Collect `unistatus diagnose`. Read the "
        "check examples "
        "(`unistatus check --examples 50`); find the cause before returning with `phase "
        "advance --system S`."
    ),
    "consistency_warning": (
        "Look at the inconsistency kinds in `unistatus check --json`. "
        "`missing_unified`: backfill / adapter gap. `status_mismatch` / "
        "`field_mismatch`: `unistatus repair --strategy ...` (legacy_wins while legacy "
        "is primary, unified_wins after). `unmappable_legacy`: quarantine, product "
        "decision. `legacy_status_drift`: legacy-only changes left `legacy_status` "
        "stale; `unistatus repair --strategy legacy_wins --reason ...` (any strategy "
        "fixes it). Do not advance a phase until it resolves."
    ),
    "error_rate_critical": (
        "Look at the service log for the failing operation and `unistatus dashboard`. "
        "Database trouble (timeouts, locks) or a bad deploy: consider `unistatus "
        "rollback --emergency` if writes are failing."
    ),
    "error_rate_warning": "Investigate before the next phase (it blocks the gates into 2 and 4).",
    "latency_p95_critical": (
        "Check database load, locks, slow queries. If unified primary was rolled back, "
        "fix and re-advance through the gates."
    ),
    "latency_p95_warning": (
        "Look for the cause (load, indexes, a running backfill: it holds back by itself "
        "above 1.2x its baseline p95 (`backfill status` says so); lower it further with "
        "`backfill tune --max-rows-per-second R` or `--max-p95-ms`, or `backfill pause`). "
        "Blocks the gate into 4."
    ),
    "backfill_stalled": (
        "`unistatus backfill status` shows which system stopped and since when; restart "
        "the workers with the same `unistatus backfill` command (they resume from the "
        "checkpoint, nothing is copied twice). Production is not affected: do not roll "
        "back. A backfill paused on purpose (`backfill pause`, or by a rollback) is not "
        "stalled; `unistatus backfill resume` continues it."
    ),
    "metrics_absent": (
        "Is `unistatus serve` running (`curl -s localhost:5000/health`), and can "
        "Prometheus reach its `/metrics` (its targets page: `up`)? Restart it. Meanwhile "
        "no rule is judged and no automated response runs unless `unistatus monitor` does."
    ),
    "repair_queue_not_empty": (
        "`unistatus repair --strategy ... --dry-run` shows what the queued entries "
        "would change; run it with `--reason` to close them (legacy_wins while legacy "
        "is primary, unified_wins after). A transaction whose legacy INSERT was refused "
        "(`missing_legacy`) gets its legacy row once legacy takes it; while legacy still "
        "refuses it, repair counts it failed and keeps it queued: see docs/repair.md."
    ),
    "quarantine_rows": (
        "`unistatus diagnose` lists them (raw value, reason, writer). Fix the data or "
        "extend the mapping, then `unistatus backfill --retry-quarantine`; a bypass "
        "writer's later mappable write resolves its entry. Blocks the gate into 3."
    ),
    "replay_conflicts_open": (
        "`unistatus rollback conflicts` lists each change the replay kept aside (what "
        "legacy was expected to hold, what it held, the change); decide each with "
        "`unistatus rollback resolve ID --keep-legacy --reason ...` (or `--apply`). Nothing is "
        "lost meanwhile; `repair` leaves those transactions alone. Blocks the gates into 3 "
        "and 4."
    ),
    "bypass_writes_unified_only": (
        "`unistatus capture status` names the writer (application_name/login role, "
        "client address): convert that code path to the adapter."
    ),
    "phase_transition": "Confirm it was planned (control log).",
    "milestone_backfill_<system>": "None.",
    "validation": "On failure, see the consistency alerts.",
}


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


def _per_system(
    obs: Observation, values: dict[str, float | None], *, below: bool, unit: str
) -> Observation:
    """``obs`` (every system together) judged per system too: it fires if the figures
    of every system together or of any one system cross; ``details["systems"]`` names
    the systems whose own figures crossed (what the automated responses act on), the
    value is the worst of them."""
    threshold = obs.threshold
    if threshold is None or obs.firing is None:
        return obs
    crossed = {
        system: v
        for system, v in values.items()
        if v is not None and (v < threshold if below else v > threshold)
    }
    if not crossed:
        return obs
    shown = _pct if unit == "%" else (lambda v: f"{v:.1f} ms")
    worst = min(crossed.values()) if below else max(crossed.values())
    if obs.value is not None and (obs.value < worst if below else obs.value > worst):
        worst = obs.value
    listed = ", ".join(f"{system} {shown(v)}" for system, v in sorted(crossed.items()))
    message = f"{obs.message}; crossed by {listed}" if obs.firing else f"{listed} crossed"
    if not obs.firing:
        message = f"{message} (threshold {'<' if below else '>'} {shown(threshold)})"
    return Observation(
        obs.name,
        obs.level,
        True,
        worst,
        threshold,
        message,
        details={**obs.details, "systems": crossed},
    )


def _system_values(snap: Snapshot, key: str) -> dict[str, float | None]:
    """Each system's ``key`` (``alert_consistency_rate``, or a figure of its operations
    over the window: ``performance.<name>``, None while it ran none)."""
    out: dict[str, float | None] = {}
    for system, info in (snap.systems or {}).items():
        if key.startswith("performance."):
            perf = info.get("performance") or {}
            value = perf.get(key.partition(".")[2]) if perf.get("count") else None
        else:
            value = info.get(key)
        out[system] = float(value) if value is not None else None
    return out


# database_down's message while the database is up (any other quotes its error).
DATABASE_REACHABLE = "database reachable"


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
            DATABASE_REACHABLE if snap.database_up else _down_because(snap.database_error),
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
    unjudged = progress_unknown(snap)
    if unjudged is not None:  # the rows awaiting the backfill cannot be told apart
        what += f" (the rows awaiting backfill unknown: {unjudged})"
    by_system = {
        "consistency": _system_values(snap, "alert_consistency_rate"),
        "error_rate": _system_values(snap, "performance.error_rate"),
        "latency_p95": _system_values(snap, "performance.p95_ms"),
    }
    for level, suffix in ((Level.CRITICAL, "critical"), (Level.WARNING, "warning")):
        rule = _threshold_rule(
            f"consistency_{suffix}",
            level,
            consistency,
            known=check_known and unjudged is None,
            below=True,
            what=what,
            unit="%",
            empty=(
                "no full check yet: the rounds of continuous verification read the rows "
                "changed since a time, judged against a full check's (`unistatus check`)"
                if snap.last_check
                else "no check report yet"
            ),
        )
        out.append(_per_system(rule, by_system["consistency"], below=True, unit="%"))
        rule = _threshold_rule(
            f"error_rate_{suffix}",
            level,
            error_rate,
            known=stats_known,
            below=False,
            what=f"error rate over {count} operations",
            unit="%",
            empty=idle,
        )
        out.append(_per_system(rule, by_system["error_rate"], below=False, unit="%"))
        rule = _threshold_rule(
            f"latency_p95_{suffix}",
            level,
            p95,
            known=stats_known,
            below=False,
            what="p95 latency",
            unit="ms",
            empty=idle,
        )
        out.append(_per_system(rule, by_system["latency_p95"], below=False, unit="ms"))
    out.append(_stalled(snap, now, stall_seconds))
    out.append(_quarantine(snap))
    out.append(_replay_conflicts(snap))
    out.append(_bypass_unified_only(snap, now))
    out.extend(_info_events(snap))
    return out


def _stalled(snap: Snapshot, now: datetime, stall_seconds: float) -> Observation:
    name = "backfill_stalled"
    if snap.progress is None:
        return Observation(name, Level.WARNING, None, None, stall_seconds, "progress unknown")
    stalled: dict[str, float] = {}
    running = 0  # systems whose backfill started and is not complete
    for system, info in snap.progress.items():
        started = (info.get("percent") or 0) > 0 or info.get("state") not in (
            None,
            "not_started",
            "pending",
        )
        updated = _parse_time(info.get("updated_at"))
        paused = info.get("paused") or info.get("state") == "paused"  # deliberate, not stalled
        running += bool(started and not info.get("complete") and not paused)
        if info.get("complete") or paused or not started or updated is None:
            continue
        idle = (now - updated).total_seconds()
        if idle > stall_seconds:
            stalled[system] = idle
    if not stalled:
        said = "backfill progressing" if running else "no backfill running"
        return Observation(name, Level.WARNING, False, 0.0, stall_seconds, said)
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


def _count_rule(name: str, count: int | None, *, what: str, some: str, none: str) -> Observation:
    """A warning while ``count`` (rows waiting for an operator) is above 0; unknown while
    its source is unavailable. ``some`` is formatted with ``n``."""
    if count is None:
        return Observation(name, Level.WARNING, None, None, 0.0, f"{what} unknown")
    message = some.format(n=count) if count else none
    return Observation(name, Level.WARNING, count > 0, float(count), 0.0, message)


def _quarantine(snap: Snapshot) -> Observation:
    """Rows kept aside unmapped (by the backfill, or a bypass writer's unmappable value):
    they block the gate into phase 3 and need a product decision."""
    return _count_rule(
        "quarantine_rows",
        snap.quarantine,
        what="quarantine",
        some="{n} unmappable legacy rows in the quarantine (listed by `unistatus diagnose`)",
        none="quarantine empty",
    )


def _replay_conflicts(snap: Snapshot) -> Observation:
    """Changes a rollback's replay did not apply over legacy (legacy held something else):
    kept as conflicts, nothing lost, but each waits for an operator's decision."""
    return _count_rule(
        "replay_conflicts_open",
        snap.replay_conflicts,
        what="replay conflicts",
        some="{n} open replay conflicts: changes the rollback kept aside, not applied over "
        "legacy (`unistatus rollback conflicts`)",
        none="no open replay conflict",
    )


def _bypass_unified_only(snap: Snapshot, now: datetime) -> Observation:
    """A bypass write to a frozen legacy table (UNIFIED_ONLY) within the window: mirrored
    into unified, nothing lost, but a code path still writes legacy."""
    name = "bypass_writes_unified_only"
    frozen = DualWriteMode.UNIFIED_ONLY.value
    if snap.bypass is None or snap.mode is None:
        return Observation(name, Level.WARNING, None, None, 0.0, "capture or mode unknown")
    if not snap.bypass.enabled:
        return Observation(name, Level.WARNING, False, 0.0, 0.0, "capture not enabled")
    # The writers' times are the database's: the window ends at its time of the read.
    since = (snap.bypass.read_at or now) - timedelta(seconds=snap.window_seconds)
    # A frozen system: its own mode is UNIFIED_ONLY (every system's, as before, without
    # per-system figures); the writer's mark says under which mode it wrote.
    frozen_systems = {
        system for system, info in (snap.systems or {}).items() if info.get("mode") == frozen
    }
    recent = [
        w
        for w in snap.bypass.writers
        if w.last_mode == frozen and w.last_seen_at is not None and w.last_seen_at >= since
    ]
    if snap.mode != frozen and not frozen_systems:
        recent = []
    if not recent:
        return Observation(
            name, Level.WARNING, False, 0.0, 0.0, "no bypass write to frozen legacy tables"
        )
    names = ", ".join(sorted({f"{w.writer} ({w.system})" for w in recent}))
    return Observation(
        name,
        Level.WARNING,
        True,
        float(len(recent)),
        0.0,
        f"bypass writes to frozen legacy tables in {frozen} over the last "
        f"{snap.window_seconds:g} s (mirrored into unified): {names}",
        details={"writers": [w.as_dict() for w in recent]},
    )


def _info_events(snap: Snapshot) -> list[Observation]:
    out: list[Observation] = []
    phases = {s: i.get("phase") for s, i in (snap.systems or {}).items()}
    if snap.systems and len(set(phases.values())) > 1:
        # Systems in different phases: a transition of any one system is an event.
        each = ", ".join(
            f"{system} phase {info.get('phase')} ({info.get('mode')})"
            for system, info in sorted(snap.systems.items())
        )
        marker = ",".join(f"{s}={p}" for s, p in sorted(phases.items()))
        out.append(
            Observation(
                "phase_transition",
                Level.INFO,
                None,
                float(snap.phase) if snap.phase is not None else None,
                None,
                f"phase transition completed: now {each}",
                marker=marker,
                details={"systems": phases},
            )
        )
    elif snap.phase is not None:
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


def _down_because(error: str | None) -> str:
    """Why the database is down: unreachable, or up and refusing connections for a limit
    (its message says so itself: "the server refused a connection: ...")."""
    return str(error) if refused_for_a_limit(error or "") else f"database unreachable: {error}"
