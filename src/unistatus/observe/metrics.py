"""The live figures of the migration, read from the database, each known or unknown.

One :class:`Snapshot` feeds everything that shows or judges the migration: alert
evaluation, ``/health``, ``/api/v1/status``, ``/metrics`` and both dashboards. It is
read from the database (not from this process's memory) so it reflects every process
that runs an adapter. Each source is read through ``_read``: a database error, a missing
table, or one of our typed errors (a :class:`UnistatusError`: a stored value or setting
our checks refuse) makes that source unknown with the reason, never a made-up number;
any other exception is a bug and raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from unistatus.backfill import current_tuning, quarantine_count, read_workers
from unistatus.backfill import progress as backfill_progress
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.connection_limit import (
    connection_limit_error,
    pool_capacity,
    refused_for_a_limit,
)
from unistatus.db.control import get_modes
from unistatus.db.failures import once_more_if_dropped
from unistatus.db.mode_reads import mode_summary
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import UnistatusError
from unistatus.migration.phases import PhaseStatus, phase_statuses, together_status
from unistatus.migration.repair_queue import open_repair_count
from unistatus.migration.replay import pending_count
from unistatus.migration.replay_conflicts import open_conflict_count
from unistatus.migration.verify import (
    judged_report,
    system_populations,
    verification_status,
)
from unistatus.observe.backfill_metrics import backfill_worker_families
from unistatus.observe.backfill_throttle import throttle_view
from unistatus.observe.bypass import BypassWriters, read_bypass_writers, writer_series
from unistatus.observe.judged import (
    Population,
    judged_inconsistent_rows,
    overall_consistency,
    populations_of,
    report_consistency,
    system_consistency,
)
from unistatus.observe.operation_metrics import operation_families, window_families
from unistatus.observe.phase_progress import PHASE_NAMES, phase_bars, read_retirement
from unistatus.observe.stats import WRITES, stats_totals, window

__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "PHASE_NAMES",
    "Snapshot",
    "SnapshotCollector",
    "collect_snapshot",
    "database_reachable",
    "judged_consistency",
    "progress_unknown",
    "system_consistency",
]

log = logging.getLogger("unistatus.observe.metrics")

T = TypeVar("T")
DEFAULT_WINDOW_SECONDS = 300.0


@dataclass
class Snapshot:
    """Everything known about the migration at one moment; ``None`` means unknown."""

    taken_at: datetime
    window_seconds: float
    database_up: bool
    database_error: str | None = None
    # Every system's mode while they agree, "mixed" while they differ (see systems).
    mode: str | None = None
    # Every system's phase while they agree, else the lowest (see systems, phases).
    phase: int | None = None
    # Each system's phase while they differ (None while they agree).
    phases: dict[str, int] | None = None
    # Per legacy system: mode, phase, the next phase's gates on its data, its
    # consistency (latest check covering it) and its operations over the window.
    systems: dict[str, dict[str, Any]] | None = None
    gates: list[dict[str, Any]] | None = None
    performance: dict[str, Any] | None = None
    last_check: dict[str, Any] | None = None
    progress: dict[str, dict[str, Any]] | None = None
    # Every backfill worker's row (finished ones too: their held seconds count).
    backfill_workers: list[dict[str, Any]] | None = None
    # The backfill's tuning in force (``backfill status`` reads it too).
    backfill_tuning: dict[str, Any] | None = None
    repair_open: int | None = None
    quarantine: int | None = None
    # Open conflicts of the replay to legacy (changes it did not apply; see rollback).
    replay_conflicts: int | None = None
    # The capture of writes that bypass the adapter: on or off, the writers seen.
    bypass: BypassWriters | None = None
    # Phase 4's steps done (read in phase 4 only; see observe.phase_progress).
    retirement: dict[str, bool] | None = None
    # Changes made while legacy was frozen that a rollback would replay (phase 4 only).
    replay_pending: int | None = None
    # Continuous verification: its watermark and lag, per system.
    verification: dict[str, Any] | None = None
    # Each system's rows, which a report of the rows changed since a time is judged
    # against (:mod:`unistatus.observe.judged`).
    populations: dict[str, Population] | None = None
    mapping: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def consistency_rate(self) -> float | None:
        """The latest check's consistency over every system's rows (rows awaiting the
        backfill counted: :func:`judged_consistency` is the alerts' figure). A round of
        continuous verification is judged against the systems' rows, never its own rate
        of the few rows it read; None when it cannot be (no full check of any)."""
        return report_consistency(self.last_check, self.populations or {})

    @property
    def unknown(self) -> dict[str, str]:
        """Sources that could not be read, with the reason."""
        return {k: v for k, v in self.sources.items() if v != "ok"}

    def perf(self, key: str) -> float | None:
        if not self.performance:
            return None
        value = self.performance.get(key)
        return float(value) if value is not None else None

    @property
    def backfill_throttle(self) -> dict[str, Any] | None:
        """Running or waiting and why, the batch size and its target (both dashboards)."""
        return throttle_view(self.backfill_workers, self.backfill_tuning)

    def _phase_name(self) -> str | None:
        if self.phases:  # the lowest is the phase; the name says the systems differ
            each = ", ".join(f"{s.lower()} {p}" for s, p in sorted(self.phases.items()))
            return f"systems in different phases ({each})"
        return PHASE_NAMES.get(self.phase, "Not started") if self.phase is not None else None

    def phase_bars(self) -> list[dict[str, Any]]:
        """One progress bar per phase (:func:`~unistatus.observe.phase_progress.phase_bars`)."""
        return phase_bars(self.phase, self.gates, self.progress, self.retirement)

    def as_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at.isoformat(),
            "window_seconds": self.window_seconds,
            "database": {"up": self.database_up, "error": self.database_error},
            "mode": self.mode,
            "phase": self.phase,
            "phase_name": self._phase_name(),
            "systems": self.systems,
            "gates": self.gates,
            "performance": self.performance,
            "data_quality": {
                "mapping": self.mapping,
                "consistency_rate": self.consistency_rate,
                "last_check": self.last_check,
                "repair_open": self.repair_open,
                "quarantine": self.quarantine,
                "replay_conflicts": self.replay_conflicts,
                "replay_pending": self.replay_pending,
                "verification": self.verification,
            },
            "capture": self.bypass.as_dict() if self.bypass is not None else None,
            "progress": {
                "systems": self.progress,
                "phases": self.phase_bars(),
                "workers": [w for w in self.backfill_workers or [] if w["alive"]]
                if self.backfill_workers is not None
                else None,
                "throttle": self.backfill_throttle,
            },
            "sources": self.sources,
        }


def _read(sources: dict[str, str], name: str, fn: Callable[[], T]) -> T | None:
    """Run one source; when the database cannot answer, record why and return None.

    Only real causes become unknown: a database error, a missing table, a stored value
    or setting our own checks refuse (a :class:`UnistatusError`). Anything else is a bug
    and raises.
    """
    try:
        value = fn()
    except sa.exc.DBAPIError as exc:
        # The driver's first line: its next ones (and SQLAlchemy's text) quote the SQL.
        sources[name] = f"unknown: database error: {_first_line(exc.orig or exc)}"
        return None
    except (sa.exc.SQLAlchemyError, UnistatusError) as exc:
        log.warning("reading %s failed: %s", name, _first_line(exc))  # not the SQL quoted
        sources[name] = f"unknown: {type(exc).__name__}: {_first_line(exc)}"
        return None
    sources[name] = "ok"
    return value


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def judged_consistency(snap: Snapshot) -> tuple[float | None, int]:
    """The consistency rate the alerts judge, every system together, and how many rows
    it leaves out (:mod:`unistatus.observe.judged`). Without per-system figures the
    report's own rate is used as it is; without the backfill's progress (unreadable:
    :func:`progress_unknown`) it is None: the rows awaiting the backfill cannot be told
    apart, and counted they read as a collapse."""
    report = snap.last_check
    if not report:
        return None, 0
    if not report.get("per_system"):
        return snap.consistency_rate, 0
    if snap.progress is None:  # progress_unknown says why
        return None, 0
    return overall_consistency(report, snap.progress, snap.populations or {})


def progress_unknown(snap: Snapshot) -> str | None:
    """Why the judged consistency is unknown though a check report was read (None: it
    is not): the backfill's progress, which tells the rows awaiting it apart, could not
    be read."""
    report = snap.last_check
    if report and report.get("per_system") and snap.progress is None:
        return f"backfill progress {snap.sources.get('backfill', 'unknown')}"
    return None


def database_reachable(engine: sa.Engine) -> str | None:
    """None when the database answers, else the reason it does not. A pooled connection
    the server dropped (a restart, a failover) is no answer: SQLAlchemy then invalidates
    the pool (no pre-ping: engine.py), and a fresh connection is asked once more. A
    connection refused for a limit (a role's CONNECTION LIMIT, max_connections) says so:
    the server is up, and full (db.connection_limit)."""
    try:
        once_more_if_dropped(engine, lambda conn: conn.execute(sa.select(1)))
    except Exception as exc:
        if refused_for_a_limit(exc):
            return str(connection_limit_error(None, exc, pool_capacity(engine)))
        orig = getattr(exc, "orig", None) or exc
        text = str(orig).strip().splitlines()
        return text[0] if text else type(exc).__name__
    return None


def collect_snapshot(
    engine: sa.Engine, settings: Settings, *, window_seconds: float = DEFAULT_WINDOW_SECONDS
) -> Snapshot:
    """Read every figure from the database (one call per source, bounded queries)."""
    error = database_reachable(engine)
    snap = Snapshot(
        taken_at=utcnow(),
        window_seconds=window_seconds,
        database_up=error is None,
        database_error=error,
        mapping=LegacyStatusMapper().validate().as_dict(),
    )
    if error is not None:
        return snap
    src = snap.sources

    def mode() -> str:
        return mode_summary(get_modes(engine))

    def phases() -> dict[LegacySystemType, PhaseStatus]:
        return phase_statuses(engine, settings)

    def performance() -> dict[str, Any]:
        data: dict[str, Any] = window(engine, window_seconds, operation=WRITES).as_dict()
        return data

    def last_check() -> dict[str, Any] | None:
        report = judged_report(engine)
        return None if report is None else dict(report.as_dict())

    def progress() -> dict[str, dict[str, Any]]:
        return {system: dict(info) for system, info in backfill_progress(engine, settings).items()}

    snap.mode = _read(src, "mode", mode)
    each = _read(src, "phase", phases)
    if each is not None:
        lowest = min(each.values(), key=lambda st: st.phase)
        together = _read(src, "phase", lambda: together_status(engine, settings, each))
        snap.phase = lowest.phase
        snap.gates = [g.as_dict() for g in (together or lowest).gates]
        if len({st.phase for st in each.values()}) > 1:
            # No one next phase: each system's gates, named by it.
            snap.phases = {s.value: st.phase for s, st in each.items()}
            snap.gates = [
                {**g.as_dict(), "name": f"{s.value.lower()}: {g.name}", "system": s.value}
                for s, st in each.items()
                for g in st.gates
            ]
    snap.performance = _read(src, "stats", performance)
    snap.last_check = _read(src, "check", last_check)
    snap.progress = _read(src, "backfill", progress)
    counted = _read(src, "check", lambda: system_populations(engine))
    snap.populations = None if counted is None else populations_of(counted, snap.progress or {})
    snap.backfill_workers = _read(
        src, "backfill_workers", lambda: read_workers(engine, include_finished=True)
    )
    snap.backfill_tuning = _read(src, "backfill_tuning", lambda: current_tuning(engine, settings))
    snap.verification = _read(src, "verification", lambda: verification_status(engine))
    if each is not None:
        snap.systems = _read(
            src,
            "systems",
            lambda: _systems(engine, each, snap.progress, snap.populations, window_seconds),
        )
    snap.repair_open = _read(src, "repair_queue", lambda: int(open_repair_count(engine)))
    snap.quarantine = _read(src, "quarantine", lambda: int(quarantine_count(engine)))
    snap.replay_conflicts = _read(src, "replay_conflicts", lambda: int(open_conflict_count(engine)))
    snap.bypass = _read(src, "capture", lambda: read_bypass_writers(engine))
    if snap.phase == 4:
        snap.retirement = _read(src, "retirement", lambda: read_retirement(engine, settings))
        snap.replay_pending = _read(src, "replay_pending", lambda: int(pending_count(engine)))
    return snap


def _systems(
    engine: sa.Engine,
    statuses: dict[LegacySystemType, PhaseStatus],
    progress: dict[str, dict[str, Any]] | None,
    populations: dict[str, Population] | None,
    window_seconds: float,
) -> dict[str, dict[str, Any]]:
    """Each system's own figures (mode, phase, gates, consistency, operations)."""
    out: dict[str, dict[str, Any]] = {}
    for system, st in statuses.items():
        report = judged_report(engine, system)
        shown = report.as_dict() if report is not None else None
        population = (populations or {}).get(system.value)
        rate, judged = system_consistency(shown, system.value, progress, population)
        inconsistent = judged_inconsistent_rows(shown, system.value, progress, population)
        if progress is None:  # the rows awaiting the backfill unknown: neither is judged
            judged = inconsistent = None
        perf = window(engine, window_seconds, operation=WRITES, system=system)
        out[system.value] = {
            "mode": st.mode.value,
            "phase": st.phase,
            "phase_name": PHASE_NAMES.get(st.phase, "Not started"),
            "expected_mode": st.expected_mode.value,
            "next_phase": st.next_phase,
            "ready": st.ready,
            "gates": [g.as_dict() for g in st.gates],
            "consistency_rate": rate,
            "alert_consistency_rate": judged,
            "alert_inconsistent_rows": inconsistent,
            "check_id": report.id if report is not None else None,
            "performance": perf.as_dict(),
        }
    return out


# --- Prometheus ---------------------------------------------------------------------


class SnapshotCollector:
    """A prometheus-client collector that reads the database at scrape time.

    Every metric name the service exposes is listed in :data:`METRICS` (the exports
    use that list, and a test checks the two agree).
    """

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        alerts: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.window_seconds = window_seconds
        self.alerts = alerts

    def describe(self) -> list[Any]:
        return []  # described lazily: collect() needs the database

    def collect(self) -> Iterator[Any]:
        snap = collect_snapshot(self.engine, self.settings, window_seconds=self.window_seconds)
        up = GaugeMetricFamily(
            "unistatus_database_up", "1 when the database answers", value=int(snap.database_up)
        )
        yield up
        sources = GaugeMetricFamily(
            "unistatus_source_up", "1 when a source of figures could be read", labels=["source"]
        )
        for name, state in snap.sources.items():
            sources.add_metric([name], 1 if state == "ok" else 0)
        yield sources
        if snap.systems is not None:
            mode = GaugeMetricFamily(
                "unistatus_mode",
                "1 for each legacy system's current dual-write mode",
                labels=["mode", "system"],
            )
            phase = GaugeMetricFamily(
                "unistatus_phase", "Each legacy system's migration phase", labels=["system"]
            )
            for system, info in snap.systems.items():
                for m in DualWriteMode:
                    mode.add_metric([m.value, system], 1 if m.value == info["mode"] else 0)
                phase.add_metric([system], info["phase"])
            yield mode
            yield phase
        yield from self._stats_families(snap)
        rates = {
            system: info
            for system, info in (snap.systems or {}).items()
            if info.get("consistency_rate") is not None
        }
        if rates:
            rate = GaugeMetricFamily(
                "unistatus_consistency_rate",
                "Each legacy system's consistency in the latest check report covering it (0..1)",
                labels=["system"],
            )
            judged = GaugeMetricFamily(
                "unistatus_consistency_alert_rate",
                "Each legacy system's consistency the alerts judge (rows awaiting its "
                "backfill not counted)",
                labels=["system"],
            )
            for system, info in rates.items():
                rate.add_metric([system], info["consistency_rate"])
                if info["alert_consistency_rate"] is not None:  # unknown: no sample
                    judged.add_metric([system], info["alert_consistency_rate"])
            yield rate
            yield judged
        if snap.last_check:
            created = snap.last_check.get("created_at")
            if created:
                ts = datetime.fromisoformat(str(created)).timestamp()
                yield GaugeMetricFamily(
                    "unistatus_last_check_timestamp_seconds",
                    "When the latest check report was written (Unix time)",
                    value=ts,
                )
        yield from self._verification_families(snap)
        if snap.progress is not None:
            ratio = GaugeMetricFamily(
                "unistatus_backfill_progress_ratio",
                "Backfill progress per system (0..1)",
                labels=["system"],
            )
            for system, info in snap.progress.items():
                if info.get("percent") is not None:
                    ratio.add_metric([system], float(info["percent"]) / 100.0)
            yield ratio
            yield GaugeMetricFamily(
                "unistatus_backfill_paused",
                "1 while the backfill is paused on purpose (backfill pause, or a rollback)",
                value=int(any(info.get("paused") for info in snap.progress.values())),
            )
        if snap.backfill_workers is not None:
            yield from backfill_worker_families(snap.backfill_workers)
        if snap.repair_open is not None:
            yield GaugeMetricFamily(
                "unistatus_repair_queue_open",
                "Unresolved repair queue entries",
                value=snap.repair_open,
            )
        if snap.quarantine is not None:
            yield GaugeMetricFamily(
                "unistatus_quarantine_rows",
                "Rows kept aside by backfill (unmappable)",
                value=snap.quarantine,
            )
        if snap.replay_conflicts is not None:
            yield GaugeMetricFamily(
                "unistatus_replay_conflicts_open",
                "Changes a rollback's replay kept aside (legacy held something else), "
                "not yet decided (unistatus rollback conflicts)",
                value=snap.replay_conflicts,
            )
        if snap.bypass is not None:
            yield GaugeMetricFamily(
                "unistatus_capture_enabled",
                "1 while the capture of writes that bypass the adapter is enabled",
                value=int(snap.bypass.enabled),
            )
            bypass = CounterMetricFamily(
                "unistatus_bypass_writes",
                "Rows written to the legacy tables (or unified_transactions: system UNIFIED) "
                "not through unistatus, seen by the capture; the first 20 writers by name, "
                'later ones per system as writer="other"',
                labels=["system", "writer"],
            )
            for system, writer, writes in writer_series(snap.bypass.writers):
                bypass.add_metric([system, writer], writes)
            yield bypass
        yield GaugeMetricFamily(
            "unistatus_mapping_coverage_ratio",
            "Share of legacy statuses with a unified mapping",
            value=float(snap.mapping.get("coverage", 0.0)),
        )
        firing = GaugeMetricFamily(
            "unistatus_alert_firing", "1 while an alert fires", labels=["alert", "level"]
        )
        for alert in self._alerts():
            firing.add_metric(
                [alert["name"], alert["level"]], 1 if alert["state"] == "firing" else 0
            )
        yield firing

    def _alerts(self) -> list[dict[str, Any]]:
        if self.alerts is None:
            return []
        try:
            return self.alerts()
        except Exception as exc:
            log.warning("reading alert state failed: %s", exc)
            return []

    @staticmethod
    def _verification_families(snap: Snapshot) -> Iterator[Any]:
        info = snap.verification
        if not info or not info.get("systems"):
            return
        lag = GaugeMetricFamily(
            "unistatus_verification_lag_seconds",
            "Age of continuous verification's watermark: every change before it is verified",
            labels=["system"],
        )
        mark = GaugeMetricFamily(
            "unistatus_verification_watermark_timestamp_seconds",
            "Continuous verification's watermark (Unix time)",
            labels=["system"],
        )
        for system, one in sorted(info["systems"].items()):
            if one.get("watermark") is None:
                continue
            lag.add_metric([system], float(one["lag_seconds"]))
            mark.add_metric([system], datetime.fromisoformat(one["watermark"]).timestamp())
        yield lag
        yield mark

    def _stats_families(self, snap: Snapshot) -> Iterator[Any]:
        if snap.performance is not None:
            per_system = {
                system: info["performance"] for system, info in (snap.systems or {}).items()
            }
            if snap.systems is None:  # the phases could not be read: each system's window
                per_system = {
                    s.value: window(
                        self.engine, self.window_seconds, operation=WRITES, system=s
                    ).as_dict()
                    for s in LegacySystemType
                }
            yield from window_families(per_system)
        totals = _read(snap.sources, "stats_totals", lambda: stats_totals(self.engine))
        if totals is not None:
            yield from operation_families(totals)
