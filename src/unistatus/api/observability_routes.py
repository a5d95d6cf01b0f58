"""The open read endpoints: ``/health``, ``/metrics`` (Prometheus) and ``/api/v1/status``.

Every figure is read from the database at request time, so they show what every process
is doing. A database error reaches an unauthenticated client only as an error id
(:func:`~unistatus.api.error_responses.public_database_error`), and so does a figure
whose read failed: ``unknown (error id …)``, never the exception's text, which names
tables and carries the SQL (:func:`~unistatus.api.error_responses.public_unknown`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from unistatus.api.error_responses import (
    error_answers,
    failure_detail,
    public_database_error,
    public_unknown,
)
from unistatus.api.probe_deadline import ProbeDeadline, probe_deadline_ms
from unistatus.api.state import ServiceState
from unistatus.db.bounded_reads import bounded_reads
from unistatus.db.failures import errors_behind
from unistatus.db.mode_reads import MIXED
from unistatus.db.retry import retry_reason
from unistatus.migration.phases import read_system_states
from unistatus.observe.alert_rules import DATABASE_REACHABLE
from unistatus.observe.alert_state import load_states
from unistatus.observe.history import (
    HISTORY_POINTS,
    HISTORY_SECONDS,
    MIN_STEP_SECONDS,
    read_history,
)
from unistatus.observe.metrics import SnapshotCollector, collect_snapshot, database_reachable
from unistatus.redact import redact_values

__all__ = ["add_observability_routes", "health_report"]

# What a client sees of a read that failed, given (what, the detail for the log).
Unknown = Callable[[str, str], str]


def _unlogged(_what: str, _detail: str) -> str:
    """For a report whose unknowns nobody is shown: no log line for an id never given."""
    return "unknown"


def health_report(service: ServiceState, *, unknown: Unknown = public_unknown) -> dict[str, Any]:
    """``{"status": healthy|degraded|down, "checks": {...}}`` from cheap reads only, each
    bounded by ``health_timeout_ms``: one held up behind a lock is a figure unknown, the
    report degraded naming the wait, within a probe's timeout. Those bounds are the
    server's: the routes run it under :func:`bounded_health_report`'s deadline too."""
    engine = bounded_reads(service.engine, service.settings.health_timeout_ms)
    error = database_reachable(engine)
    checks: dict[str, Any] = {"database": {"status": "up" if error is None else "down"}}
    if error is not None:
        checks["database"]["error"] = public_database_error(error)
        return {"status": "down", "checks": checks}
    degraded: list[str] = []
    try:
        each = read_system_states(engine)
        modes = {mode.value for mode, _ in each.values()}
        phases = {phase for _, phase in each.values()}
        # Every system's mode and phase while they agree, "mixed" while they differ.
        checks["mode"] = modes.pop() if len(modes) == 1 else MIXED
        checks["phase"] = phases.pop() if len(phases) == 1 else MIXED
        checks["systems"] = {
            system.value: {"mode": mode.value, "phase": phase}
            for system, (mode, phase) in each.items()
        }
    except Exception as exc:
        checks["mode"] = checks["phase"] = unknown("mode and phase", failure_detail(exc))
        degraded.append(_unknown_because("mode and phase", exc))
    try:
        states = [s.as_dict() for s in load_states(engine)]
        critical = [
            a["name"] for a in states if a["state"] == "firing" and a["level"] == "critical"
        ]
        checks["critical_alerts"] = critical
        checks["warning_alerts"] = [
            a["name"] for a in states if a["state"] == "firing" and a["level"] == "warning"
        ]
        checks["alerts_evaluated_at"] = max((a["evaluated_at"] for a in states), default=None)
        if critical:
            degraded.append(f"critical alerts firing: {', '.join(critical)}")
    except Exception as exc:
        checks["critical_alerts"] = unknown("alert state", failure_detail(exc))
        degraded.append(_unknown_because("alert state", exc))
    failed = service.evaluation_failure
    if failed is not None:
        # The alerts are as last evaluated, which may be never: none of them is watched.
        checks["alert_evaluation"] = unknown("alert evaluation", failure_detail(failed))
        degraded.append("alert evaluation failing: the alerts are not evaluated")
    if degraded:
        checks["degraded_because"] = degraded
    return {"status": "degraded" if degraded else "healthy", "checks": checks}


def bounded_health_report(
    service: ServiceState, deadline: ProbeDeadline[dict[str, Any]], *, unknown: Unknown
) -> dict[str, Any]:
    """:func:`health_report` within ``deadline`` (client-side: the server-side bounds
    cannot fire while the database does not answer at all); past it, ``down``."""
    report = deadline.run(lambda: health_report(service, unknown=unknown))
    if report is not None:
        return report
    reason = f"the database did not answer within {deadline.deadline_ms} ms"
    return {"status": "down", "checks": {"database": {"status": "down", "error": reason}}}


def _unknown_because(what: str, exc: Exception) -> str:
    """``"<what> unknown"``, with the wait that ran out when one did (``lock timeout``,
    ``statement timeout``): what an operator looks for behind a degraded probe."""
    # A StorageError wraps the driver's error.
    reason = next(filter(None, map(retry_reason, errors_behind(exc))), None)
    return f"{what} unknown ({reason})" if reason else f"{what} unknown"


def add_observability_routes(app: FastAPI, service: ServiceState) -> None:
    _add_history_route(app, service)
    # /metrics and /api/v1/status read a dozen sources: behind a lock on one of our
    # tables each waited lock_timeout_ms in turn (25 s, past a scrape's 10 s timeout).
    # Their lock waits are bounded as /health's; what could not be read says so.
    snapshots = bounded_reads(service.engine, service.settings.health_timeout_ms, statements=False)
    # One deadline per route: at most one stuck probe thread each (api/probe_deadline.py).
    deadline_ms = probe_deadline_ms(service.settings.health_timeout_ms)
    probes: ProbeDeadline[dict[str, Any]] = ProbeDeadline(deadline_ms, "unistatus-health")
    summaries: ProbeDeadline[dict[str, Any]] = ProbeDeadline(deadline_ms, "unistatus-status")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        SnapshotCollector(
            snapshots,
            service.settings,
            window_seconds=service.window_seconds,
            alerts=service.alerts,
        )
    )

    @app.get(
        "/health",
        tags=["observability"],
        responses={503: {"description": "The database is down: the same report, status down."}},
    )
    def health() -> JSONResponse:
        """Database reachable, mode, phase, firing critical alerts. 503 when down."""
        report = redact_values(bounded_health_report(service, probes, unknown=public_unknown))
        return JSONResponse(report, status_code=503 if report["status"] == "down" else 200)

    @app.get("/metrics", tags=["observability"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text format, read from the database at scrape time."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/status", tags=["observability"])
    def status() -> dict[str, Any]:
        """Mode, phase, gates, progress, last check, performance and alerts."""
        snap = collect_snapshot(snapshots, service.settings, window_seconds=service.window_seconds)
        body = snap.as_dict()
        body["database"]["error"] = public_database_error(snap.database_error)
        try:
            states = [_public_alert(a) for a in service.alerts()] if snap.database_up else []
            body["alerts"] = {
                "firing": [a for a in states if a["state"] == "firing"],
                "all": states,
            }
        except Exception as exc:
            error = public_unknown("alert state", failure_detail(exc))
            body["alerts"] = {"firing": [], "all": [], "error": error}
        body["sources"] = _public_sources(snap.sources)
        body["health"] = bounded_health_report(service, summaries, unknown=_unlogged)["status"]
        redacted: dict[str, Any] = redact_values(body)
        return redacted


def _public_alert(state: dict[str, Any]) -> dict[str, Any]:
    """An alert as an unauthenticated client may see it: ``database_down``'s message
    quotes the database's error (host, port, a role's name), shown as its public form
    (the whole message in the log, under the id it names). Up, it quotes no error: as it
    is (it was logged as an error on every read)."""
    if state.get("name") != "database_down" or state.get("message") in (
        None,
        "",
        DATABASE_REACHABLE,
    ):
        return state
    said = str(state["message"]).removeprefix("database unreachable: ")
    return {**state, "message": public_database_error(said)}


def _public_sources(sources: dict[str, str]) -> dict[str, str]:
    """Each source "ok" or ``unknown (error id …)``: one id for all those unknown, whose
    reasons (a table's name, a line of SQL) go to the log under it."""
    unknown = {name: reason for name, reason in sources.items() if reason != "ok"}
    if not unknown:
        return sources
    detail = "; ".join(f"{name}: {reason}" for name, reason in unknown.items())
    shown = public_unknown("status sources", detail)
    return {name: shown if name in unknown else reason for name, reason in sources.items()}


def _add_history_route(app: FastAPI, service: ServiceState) -> None:
    @app.get(
        "/api/v1/history",
        tags=["observability"],
        responses=error_answers(422, 503),
        description="p95, error rate and throughput of the writes (create_transaction, "
        "update_status: what /api/v1/status, the gates and the alerts count; reads are left "
        "out) per step, check results, mode and phase changes: the last `seconds` in "
        f"`points` equal steps, at least {MIN_STEP_SECONDS:g} s per step "
        "(`seconds >= points`); a shorter span is refused (422).",
    )
    def history(
        seconds: float = Query(HISTORY_SECONDS, gt=0, le=86_400),
        points: int = Query(HISTORY_POINTS, ge=2, le=720),
    ) -> dict[str, Any]:
        return read_history(service.engine, seconds=seconds, points=points).as_dict()
