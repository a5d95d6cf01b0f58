"""The HTTP service: health, Prometheus metrics, status, transactions, control, dashboard.

``create_app(settings, engine)`` builds a FastAPI app; ``unistatus serve`` runs it with
uvicorn (and evaluates alerts in a background thread). Every figure is read from the
database at request time, so the service shows what every process is doing.

Errors: typed unistatus errors become 4xx with a clear ``detail`` (404 unknown
transaction, 409 refused transition / mode / gate, 422 invalid input); 503 only when
the database itself fails. Control endpoints need ``Authorization: Bearer <token>``
matching ``settings.admin_token`` (constant-time comparison); with no token configured
they are disabled (403), never open.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from unistatus import errors
from unistatus.config import Settings, load_settings
from unistatus.db.engine import create_engine
from unistatus.ids import MAX_LEGACY_ID
from unistatus.metrics import DEFAULT_WINDOW_SECONDS, collect_snapshot, database_reachable
from unistatus.statuses import DualWriteMode, UnifiedTransactionType

__all__ = ["create_app"]

log = logging.getLogger("unistatus.service")

WEB = Path(__file__).parent / "web"
MAX_BIGINT = 2**63 - 1
MAX_METADATA_CHARS = 16_384
# Printable text: no NUL or other control characters (PostgreSQL refuses NUL in text).
_PRINTABLE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=_PRINTABLE)
]
Actor = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=_PRINTABLE)
]
StatusText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=_PRINTABLE)
]
EntityId = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=64,
        description="A UTX id (UTX + 15 digits) or a legacy reference like cashout:123",
    ),
]


def _check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """JSON the database will store as it is: bounded size, no NUL characters."""
    if value is None:
        return None
    import json

    text = json.dumps(value)
    if len(text) > MAX_METADATA_CHARS:
        raise ValueError(f"metadata is too large (at most {MAX_METADATA_CHARS} characters of JSON)")
    if "\\u0000" in text:
        raise ValueError("metadata must not contain NUL characters")
    return value


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransactionCreate(_Input):
    transaction_type: UnifiedTransactionType
    user_id: int = Field(gt=0, le=MAX_BIGINT)
    amount: str = Field(
        pattern=r"^[0-9]{1,12}(\.[0-9]{1,8})?$",
        description='A positive decimal as a string (exact money, no floats), e.g. "10.50"',
        examples=["10.50"],
    )
    currency: str = Field(pattern=r"^[A-Z][A-Z0-9]{2,9}$", examples=["USD"])
    legacy_entity_id: int | None = Field(default=None, gt=0, le=MAX_LEGACY_ID)
    status: StatusText | None = None
    metadata: dict[str, Any] | None = None

    _meta = field_validator("metadata")(_check_metadata)


class StatusUpdate(_Input):
    status: StatusText = Field(description="A unified status, or a legacy status of its system")
    reason: Reason
    triggered_by: Actor
    metadata: dict[str, Any] | None = None
    force: bool = Field(default=False, description="Admin override of the transition rules")

    _meta = field_validator("metadata")(_check_metadata)


class ModeChange(_Input):
    mode: DualWriteMode
    reason: Reason
    # Enter a unified-read mode although unified may be stale (409 without it).
    force: bool = False
    actor: Actor = "api"


class PhaseAdvance(_Input):
    reason: Reason  # required, like every control change (recorded with the actor)
    force: bool = False
    actor: Actor = "api"


class ReasonedAction(_Input):
    reason: Reason
    actor: Actor = "api"


STATUS_CODES: list[tuple[type[errors.UnistatusError], int]] = [
    (errors.EntityNotFoundError, 404),
    (errors.InvalidTransitionError, 409),
    (errors.ModeError, 409),
    (errors.GateError, 409),
    (errors.InputError, 422),
    (errors.StorageError, 503),
    (errors.ConfigError, 503),
]


def status_code_for(exc: errors.UnistatusError) -> int:
    for kind, code in STATUS_CODES:
        if isinstance(exc, kind):
            return code
    return 400


class _Service:
    """What the endpoints share: settings, engine, a lazily built adapter, the monitor."""

    def __init__(self, settings: Settings, engine: sa.Engine, window_seconds: float) -> None:
        self.settings = settings
        self.engine = engine
        self.window_seconds = window_seconds
        self._adapter: Any = None
        self._stats: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor_thread: threading.Thread | None = None

    def adapter(self) -> Any:
        with self._lock:
            if self._adapter is None:
                from unistatus.adapter import DualWriteAdapter

                adapter = DualWriteAdapter(self.engine, settings=self.settings)
                try:
                    from unistatus.stats import OperationStats

                    self._stats = OperationStats(
                        self.engine, flush_seconds=self.settings.stats_flush_seconds
                    ).attach(adapter)
                except ImportError:  # statistics are optional for the API itself
                    self._stats = None
                self._adapter = adapter
            return self._adapter

    def alerts(self) -> list[dict[str, Any]]:
        from unistatus.alerts import load_states

        return [s.as_dict() for s in load_states(self.engine)]

    def start_monitor(self, interval: float) -> None:
        from unistatus.alerts import Monitor

        monitor = Monitor(self.engine, self.settings, window_seconds=self.window_seconds)

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    monitor.evaluate()
                except Exception:  # the service keeps serving whatever the monitor hits
                    log.exception("alert evaluation failed")
                self._stop.wait(interval)

        self._monitor_thread = threading.Thread(target=loop, name="unistatus-monitor", daemon=True)
        self._monitor_thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._monitor_thread is not None:
            self._monitor_thread.join(timeout=10)
        if self._stats is not None:
            self._stats.close()


def create_app(
    settings: Settings | None = None,
    engine: sa.Engine | None = None,
    *,
    monitor_interval: float | None = None,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> FastAPI:
    """The unistatus HTTP app. ``monitor_interval`` (s) evaluates alerts in the background."""
    settings = settings or load_settings()
    engine = engine or create_engine(settings.database_url)
    service = _Service(settings, engine, window_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if monitor_interval:
            service.start_monitor(monitor_interval)
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="unistatus",
        version=_version(),
        description="Migration of legacy payment statuses to the unified model: health, "
        "metrics, status, transactions and control.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(errors.UnistatusError)
    async def _typed(_request: Request, exc: errors.UnistatusError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "error": type(exc).__name__},
            status_code=status_code_for(exc),
        )

    @app.exception_handler(sa.exc.DBAPIError)
    async def _database(_request: Request, exc: sa.exc.DBAPIError) -> JSONResponse:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        log.error("database error: %s", first)
        return JSONResponse(
            {"detail": f"database error: {first}", "error": "StorageError"}, status_code=503
        )

    _observability_routes(app, service)
    _transaction_routes(app, service)
    _control_routes(app, service)
    _dashboard_routes(app)
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("unistatus")
    except Exception:
        return "0"


# --- health, metrics, status --------------------------------------------------------


def health_report(service: _Service) -> dict[str, Any]:
    """``{"status": healthy|degraded|down, "checks": {...}}`` from cheap reads only."""
    engine = service.engine
    error = database_reachable(engine)
    checks: dict[str, Any] = {"database": {"status": "up" if error is None else "down"}}
    if error is not None:
        checks["database"]["error"] = error
        return {"status": "down", "checks": checks}
    degraded: list[str] = []
    try:
        from unistatus.control import get_mode

        checks["mode"] = get_mode(engine).value
    except Exception as exc:
        checks["mode"] = f"unknown: {exc}"
        degraded.append("mode unknown")
    try:
        from unistatus.phases import read_phase

        with engine.connect() as conn:
            checks["phase"] = read_phase(conn)
    except Exception as exc:
        checks["phase"] = f"unknown: {exc}"
        degraded.append("phase unknown")
    try:
        states = service.alerts()
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
        checks["critical_alerts"] = f"unknown: {exc}"
        degraded.append("alert state unknown")
    if degraded:
        checks["degraded_because"] = degraded
    return {"status": "degraded" if degraded else "healthy", "checks": checks}


def _observability_routes(app: FastAPI, service: _Service) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from unistatus.metrics import SnapshotCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        SnapshotCollector(
            service.engine,
            service.settings,
            window_seconds=service.window_seconds,
            alerts=service.alerts,
        )
    )

    @app.get("/health", tags=["observability"])
    def health() -> JSONResponse:
        """Database reachable, mode, phase, firing critical alerts. 503 when down."""
        report = health_report(service)
        return JSONResponse(report, status_code=503 if report["status"] == "down" else 200)

    @app.get("/metrics", tags=["observability"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text format, read from the database at scrape time."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/status", tags=["observability"])
    def status() -> dict[str, Any]:
        """Mode, phase, gates, progress, last check, performance and alerts."""
        snap = collect_snapshot(
            service.engine, service.settings, window_seconds=service.window_seconds
        )
        body = snap.as_dict()
        try:
            states = service.alerts() if snap.database_up else []
            body["alerts"] = {
                "firing": [a for a in states if a["state"] == "firing"],
                "all": states,
            }
        except Exception as exc:
            body["alerts"] = {"firing": [], "all": [], "error": f"unknown: {exc}"}
        body["health"] = health_report(service)["status"]
        return body


# --- transactions -------------------------------------------------------------------


def _write_result(result: Any, created: bool = False) -> JSONResponse:
    data = result.as_dict()
    if not result.overall_success:
        # The database refused the write after retries: a server-side failure.
        return JSONResponse(
            {"detail": f"write failed: {result.error}", "error": "StorageError", "result": data},
            status_code=503,
        )
    return JSONResponse(data, status_code=201 if created and result.changed else 200)


def _transaction_routes(app: FastAPI, service: _Service) -> None:
    @app.post("/api/v1/transactions", tags=["transactions"], status_code=201)
    def create_transaction(
        body: TransactionCreate,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                description="Repeat the request with the same key to get its first result "
                "back instead of a second transaction (e.g. after a 503 whose result says "
                "outcome_unknown); the same key with another body is refused (422).",
            ),
        ] = None,
    ) -> JSONResponse:
        """Create a transaction on the sides the current mode writes (or link a legacy row)."""
        result = service.adapter().create_transaction(
            body.transaction_type,
            body.user_id,
            body.amount,
            body.currency,
            legacy_entity_id=body.legacy_entity_id,
            status=body.status,
            metadata=body.metadata,
            idempotency_key=idempotency_key,
        )
        return _write_result(result, created=True)

    @app.get("/api/v1/transactions/{entity_id}", tags=["transactions"])
    def get_transaction(entity_id: EntityId) -> dict[str, Any]:
        """The status from the authoritative side (``source`` says which)."""
        status, meta = service.adapter().get_transaction_status(entity_id)
        if status is None and meta.get("source") is None:
            raise errors.EntityNotFoundError(entity_id)
        return {"id": entity_id, "status": status.value if status else None, **meta}

    @app.post("/api/v1/transactions/{entity_id}/status", tags=["transactions"])
    def update_status(entity_id: EntityId, body: StatusUpdate) -> JSONResponse:
        """Change the status (unified or legacy value); refused transitions are 409."""
        result = service.adapter().update_status(
            entity_id,
            body.status,
            body.reason,
            body.triggered_by,
            metadata=body.metadata,
            force=body.force,
        )
        return _write_result(result)


# --- control ------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="settings.admin_token (UNISTATUS_ADMIN_TOKEN)")


def _admin(service: _Service) -> Callable[..., str]:
    def require(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        token = service.settings.admin_token
        if not token:
            raise HTTPException(
                403,
                "control endpoints are disabled: no admin token is configured "
                "(set UNISTATUS_ADMIN_TOKEN to enable them)",
            )
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
            raise HTTPException(
                401,
                "a valid bearer token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return "api"

    return require


def _control_routes(app: FastAPI, service: _Service) -> None:
    admin = Depends(_admin(service))

    def actor(name: str) -> str:
        return f"api:{name}"

    @app.put("/api/v1/control/mode", tags=["control"], dependencies=[admin])
    def set_mode(body: ModeChange) -> dict[str, Any]:
        """Switch the write mode for every adapter (waits for in-flight writes).

        Entering a unified-read mode while unified may be stale is refused (409) unless
        ``force``; prefer the gated ``/api/v1/control/phase/advance``.
        """
        from unistatus.control import set_mode as switch

        change = switch(
            service.engine,
            body.mode,
            reason=body.reason,
            actor=actor(body.actor),
            force=body.force,
            settings=service.settings,
        )
        return change.as_dict()

    @app.post("/api/v1/control/phase/advance", tags=["control"], dependencies=[admin])
    def phase_advance(body: PhaseAdvance) -> dict[str, Any]:
        """Enter the next phase when its gates pass (``force`` needs a reason); 409 if not."""
        from unistatus.phases import advance

        change = advance(
            service.engine,
            service.settings,
            actor=actor(body.actor),
            reason=body.reason,
            force=body.force,
        )
        return change.as_dict()

    @app.post("/api/v1/control/phase/rollback", tags=["control"], dependencies=[admin])
    def phase_rollback(body: ReasonedAction) -> dict[str, Any]:
        """Go back one phase by its rollback procedure."""
        from unistatus.phases import rollback_phase

        change = rollback_phase(
            service.engine, service.settings, actor=actor(body.actor), reason=body.reason
        )
        return change.as_dict()

    @app.post("/api/v1/control/rollback", tags=["control"], dependencies=[admin])
    def emergency(body: ReasonedAction) -> dict[str, Any]:
        """Emergency rollback: replay where legacy is stale, then legacy only."""
        from unistatus.rollback import emergency_rollback

        result = emergency_rollback(
            service.engine, service.settings, actor=actor(body.actor), reason=body.reason
        )
        return dict(result) if isinstance(result, dict) else result.as_dict()


# --- dashboard ----------------------------------------------------------------------


def _dashboard_routes(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")
