"""The HTTP service: health, Prometheus metrics, status, transactions, control, dashboard.

``create_app(settings, engine)`` builds a FastAPI app; ``unistatus serve`` runs it with
uvicorn (and evaluates alerts in a background thread). Every figure is read from the
database at request time, so the service shows what every process is doing.

Errors: typed unistatus errors become 4xx with a clear ``detail`` (404 unknown
transaction, 409 refused transition / mode / gate, 422 invalid input); 503 only when
the database itself fails, and a 503 body names no host, port or SQL: it carries an
``error_id`` under which the service log keeps the detail.

Access (:mod:`unistatus.api.access`): reads (health, metrics, status, a transaction's
status, the dashboard) are open; transaction writes need ``Authorization: Bearer
<token>`` of a writer or admin token, ``force`` and the control endpoints an admin
token. What no token is configured for is disabled (403), never open. The history
names the token that made a change (``token:<name>``, with the caller's
``triggered_by`` as a label), never its value.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
)

from unistatus import errors
from unistatus.adapter import DualWriteAdapter
from unistatus.api.access import MAX_LABEL_CHARS, Principal, Role, actor_for, authenticate, enabled
from unistatus.config import Settings, load_settings
from unistatus.db.control import get_mode
from unistatus.db.control import set_mode as switch_mode
from unistatus.db.engine import create_engine
from unistatus.domain.ids import MAX_LEGACY_ID
from unistatus.domain.inputs import (
    MAX_BIGINT,
    MAX_REASON_CHARS,
    check_key,
    check_metadata,
    check_text,
)
from unistatus.domain.statuses import DualWriteMode, UnifiedTransactionType
from unistatus.migration.phases import advance, read_phase
from unistatus.migration.rollback import emergency_rollback, rollback_current_phase
from unistatus.observe.alert_state import load_states
from unistatus.observe.alerts import Monitor
from unistatus.observe.metrics import (
    DEFAULT_WINDOW_SECONDS,
    SnapshotCollector,
    collect_snapshot,
    database_reachable,
)
from unistatus.observe.stats import OperationStats
from unistatus.redact import redact, redact_values

__all__ = ["create_app"]

log = logging.getLogger("unistatus.api.service")

WEB = Path(__file__).parent.parent / "observe" / "web"


def _text(name: str, max_chars: int) -> Any:
    """The library's text rule (:func:`unistatus.domain.inputs.check_text`) as a field check."""

    def check(value: str) -> str:
        try:
            check_text(name, value, max_chars)
        except errors.InputError as exc:
            raise ValueError(str(exc)) from None
        return value

    return AfterValidator(check)


_STRIPPED = StringConstraints(strip_whitespace=True, min_length=1)

Reason = Annotated[StrictStr, _STRIPPED, _text("reason", MAX_REASON_CHARS)]
# The caller's own name for itself; the history stores it after the token's name.
Actor = Annotated[StrictStr, _STRIPPED, _text("actor", MAX_LABEL_CHARS)]
StatusText = Annotated[StrictStr, _STRIPPED, _text("status", 64)]
EntityId = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=64,
        description="A UTX id (UTX + 15 digits) or a legacy reference like cashout:123",
    ),
]


def _check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The library's metadata rule (:func:`unistatus.domain.inputs.check_metadata`), as a 422."""
    try:
        return check_metadata(value)
    except errors.InputError as exc:
        raise ValueError(str(exc)) from None


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransactionCreate(_Input):
    transaction_type: UnifiedTransactionType
    user_id: StrictInt = Field(gt=0, le=MAX_BIGINT)
    amount: StrictStr = Field(
        pattern=r"^[0-9]{1,12}(\.[0-9]{1,8})?$",
        description='A positive decimal as a string (exact money, no floats), e.g. "10.50"',
        examples=["10.50"],
    )
    currency: StrictStr = Field(pattern=r"^[A-Z][A-Z0-9]{2,9}$", examples=["USD"])
    legacy_entity_id: StrictInt | None = Field(default=None, gt=0, le=MAX_LEGACY_ID)
    status: StatusText | None = None
    metadata: dict[str, Any] | None = None
    triggered_by: Actor | None = Field(
        default=None, description="The caller's label, recorded after the token's name"
    )

    _meta = field_validator("metadata")(_check_metadata)


class StatusUpdate(_Input):
    status: StatusText = Field(description="A unified status, or a legacy status of its system")
    reason: Reason
    triggered_by: Actor | None = Field(
        default=None, description="The caller's label, recorded after the token's name"
    )
    metadata: dict[str, Any] | None = None
    force: StrictBool = Field(
        default=False, description="Admin override of the transition rules (admin token only)"
    )

    _meta = field_validator("metadata")(_check_metadata)


class ModeChange(_Input):
    mode: DualWriteMode
    reason: Reason
    # Enter a unified-read mode although unified may be stale (409 without it).
    force: StrictBool = False
    actor: Actor = "api"


class PhaseAdvance(_Input):
    reason: Reason  # required, like every control change (recorded with the actor)
    force: StrictBool = False
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


def _logged(what: str, detail: str) -> str:
    """Log ``detail`` under a new error id; what a client may see instead of it."""
    error_id = uuid.uuid4().hex[:12]
    log.error("%s [error id %s]: %s", what, error_id, redact(detail))
    return error_id


def unavailable(kind: str, detail: str, result: dict[str, Any] | None = None) -> JSONResponse:
    """A 503 that names no database host, port or SQL: the log has them, under an id."""
    error_id = _logged(kind, detail)
    message = (
        f"the database failed or is unreachable (error id {error_id}; "
        "the service log has the detail)"
    )
    body: dict[str, Any] = {"detail": message, "error": kind, "error_id": error_id}
    if result is not None:
        body["result"] = {**result, "error": message}
    return error_response(body, 503)


def error_response(body: Any, status_code: int) -> JSONResponse:
    """An error as JSON that any input can be echoed in: ASCII (a lone surrogate is
    escaped, not an encoding error) and no NaN (which JSON has no word for)."""
    text = json.dumps(_finite(body), ensure_ascii=True, allow_nan=False, default=str)
    return JSONResponse(json.loads(text), status_code=status_code)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def public_database_error(detail: str | None) -> str | None:
    """A database error as an unauthenticated client may see it (no host, port, SQL)."""
    if detail is None:
        return None
    return f"database unreachable (error id {_logged('database unreachable', detail)})"


class _Service:
    """What the endpoints share: settings, engine, a lazily built adapter, the monitor."""

    def __init__(self, settings: Settings, engine: sa.Engine, window_seconds: float) -> None:
        self.settings = settings
        self.engine = engine
        self.window_seconds = window_seconds
        self._adapter: DualWriteAdapter | None = None
        self._stats: OperationStats | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor_thread: threading.Thread | None = None

    def adapter(self) -> DualWriteAdapter:
        with self._lock:
            if self._adapter is None:
                adapter = DualWriteAdapter(self.engine, settings=self.settings)
                self._stats = OperationStats(
                    self.engine, flush_seconds=self.settings.stats_flush_seconds
                ).attach(adapter)
                self._adapter = adapter
            return self._adapter

    def alerts(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in load_states(self.engine)]

    def start_monitor(self, interval: float) -> None:
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
        code = status_code_for(exc)
        if code >= 500:
            return unavailable(type(exc).__name__, str(exc))
        return error_response({"detail": redact(str(exc)), "error": type(exc).__name__}, code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, which may hold NaN or a lone surrogate
        # that its JSON encoder cannot write (a 500 for a 422): say where and why only.
        detail = [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
            for e in exc.errors()
        ]
        return error_response({"detail": detail}, 422)

    @app.exception_handler(sa.exc.DBAPIError)
    async def _database(_request: Request, exc: sa.exc.DBAPIError) -> JSONResponse:
        # The statement but not its parameters (they hold callers' data) goes to the log.
        return unavailable(
            "StorageError",
            f"database error: {type(exc.orig).__name__}: {exc.orig} [SQL: {exc.statement}]",
        )

    _observability_routes(app, service)
    _transaction_routes(app, service)
    _control_routes(app, service)
    _dashboard_routes(app)
    return app


def _version() -> str:
    try:
        return version("unistatus")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "0"


# --- health, metrics, status --------------------------------------------------------


def health_report(service: _Service) -> dict[str, Any]:
    """``{"status": healthy|degraded|down, "checks": {...}}`` from cheap reads only."""
    engine = service.engine
    error = database_reachable(engine)
    checks: dict[str, Any] = {"database": {"status": "up" if error is None else "down"}}
    if error is not None:
        checks["database"]["error"] = public_database_error(error)
        return {"status": "down", "checks": checks}
    degraded: list[str] = []
    try:
        checks["mode"] = get_mode(engine).value
    except Exception as exc:
        checks["mode"] = f"unknown: {exc}"
        degraded.append("mode unknown")
    try:
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
        report = redact_values(health_report(service))
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
        body["database"]["error"] = public_database_error(snap.database_error)
        try:
            states = service.alerts() if snap.database_up else []
            body["alerts"] = {
                "firing": [a for a in states if a["state"] == "firing"],
                "all": states,
            }
        except Exception as exc:
            body["alerts"] = {"firing": [], "all": [], "error": redact(f"unknown: {exc}")}
        body["health"] = health_report(service)["status"]
        redacted: dict[str, Any] = redact_values(body)
        return redacted


# --- transactions -------------------------------------------------------------------


def _write_result(result: Any, created: bool = False) -> JSONResponse:
    data = result.as_dict()
    if not result.overall_success:
        # The database refused the write after retries: a server-side failure.
        return unavailable("StorageError", f"write failed: {result.error}", result=data)
    return JSONResponse(data, status_code=201 if created and result.changed else 200)


# The stored key is "<token name>:<key>" (names have at most 32 characters), so two
# clients with different tokens never see each other's transactions through a key.
HTTP_KEY_LENGTH = 200


def _scoped_key(who: Principal, key: str | None) -> str | None:
    if key is None:
        return None
    if len(key) > HTTP_KEY_LENGTH:
        raise errors.InputError(
            f"an Idempotency-Key has at most {HTTP_KEY_LENGTH} characters, got {len(key)}"
        )
    return f"{who.name}:{check_key(key)}"


def _transaction_routes(app: FastAPI, service: _Service) -> None:
    @app.post("/api/v1/transactions", tags=["transactions"], status_code=201)
    def create_transaction(
        body: TransactionCreate,
        who: Writer,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                description="Repeat the request with the same key to get its first result "
                "back instead of a second transaction (e.g. after a 503 whose result says "
                "outcome_unknown); the same key with another body is refused (422). Keys "
                f"are printable ASCII, at most {HTTP_KEY_LENGTH} characters, and belong to "
                "the token that sent them: another token's key is another key.",
            ),
        ] = None,
    ) -> JSONResponse:
        """Create a transaction on the sides the current mode writes (or link a legacy row).

        Needs a writer or admin token (``Authorization: Bearer <token>``).
        """
        result = service.adapter().create_transaction(
            body.transaction_type,
            body.user_id,
            body.amount,
            body.currency,
            legacy_entity_id=body.legacy_entity_id,
            status=body.status,
            metadata=body.metadata,
            idempotency_key=_scoped_key(who, idempotency_key),
            triggered_by=actor_for(who, body.triggered_by),
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
    def update_status(entity_id: EntityId, body: StatusUpdate, who: Writer) -> JSONResponse:
        """Change the status (unified or legacy value); refused transitions are 409.

        Needs a writer or admin token; ``force`` (the override) needs an admin token.
        """
        if body.force and not who.may("admin"):
            raise HTTPException(
                403,
                f"force (the admin override of the transition rules) needs an admin token; "
                f"the token {who.name!r} is a {who.role} token",
            )
        result = service.adapter().update_status(
            entity_id,
            body.status,
            body.reason,
            actor_for(who, body.triggered_by),
            metadata=body.metadata,
            force=body.force,
        )
        return _write_result(result)


# --- control ------------------------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    description="A writer token (UNISTATUS_WRITER_TOKEN, api_tokens) for transaction writes; "
    "the admin token (UNISTATUS_ADMIN_TOKEN) for force and control",
)

DISABLED = {
    "writer": "transaction writes are disabled: no API token is configured (set "
    "UNISTATUS_WRITER_TOKEN, or api_tokens in the config file, to enable them)",
    "admin": "control endpoints are disabled: no admin token is configured "
    "(set UNISTATUS_ADMIN_TOKEN to enable them)",
}


def _require(
    request: Request, credentials: HTTPAuthorizationCredentials | None, role: Role
) -> Principal:
    """The holder of a valid token allowed to act as ``role``; 403 / 401 otherwise."""
    settings = request.app.state.service.settings
    if not enabled(settings, role):
        raise HTTPException(403, DISABLED[role])
    who = authenticate(settings, credentials.credentials if credentials else None)
    if who is None:
        raise HTTPException(
            401,
            "a valid bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not who.may(role):
        raise HTTPException(403, f"the token {who.name!r} is a {who.role} token: this needs {role}")
    return who


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _writer(request: Request, credentials: Credentials) -> Principal:
    return _require(request, credentials, "writer")


def _admin(request: Request, credentials: Credentials) -> Principal:
    return _require(request, credentials, "admin")


Writer = Annotated[Principal, Depends(_writer)]
Admin = Annotated[Principal, Depends(_admin)]


def _control_routes(app: FastAPI, service: _Service) -> None:

    @app.put("/api/v1/control/mode", tags=["control"])
    def set_mode(body: ModeChange, who: Admin) -> dict[str, Any]:
        """Switch the write mode for every adapter (waits for in-flight writes).

        Entering a unified-read mode while unified may be stale is refused (409) unless
        ``force``; prefer the gated ``/api/v1/control/phase/advance``.
        """
        change = switch_mode(
            service.engine,
            body.mode,
            reason=body.reason,
            actor=actor_for(who, body.actor),
            force=body.force,
            settings=service.settings,
        )
        return change.as_dict()

    @app.post("/api/v1/control/phase/advance", tags=["control"])
    def phase_advance(body: PhaseAdvance, who: Admin) -> dict[str, Any]:
        """Enter the next phase when its gates pass (``force`` needs a reason); 409 if not."""
        change = advance(
            service.engine,
            service.settings,
            actor=actor_for(who, body.actor),
            reason=body.reason,
            force=body.force,
        )
        return change.as_dict()

    @app.post("/api/v1/control/phase/rollback", tags=["control"])
    def phase_rollback(body: ReasonedAction, who: Admin) -> dict[str, Any]:
        """Go back one phase by its rollback procedure."""
        change = rollback_current_phase(
            service.engine, service.settings, actor=actor_for(who, body.actor), reason=body.reason
        )
        return change.as_dict()

    @app.post("/api/v1/control/rollback", tags=["control"])
    def emergency(body: ReasonedAction, who: Admin) -> dict[str, Any]:
        """Emergency rollback: replay where legacy is stale, then legacy only."""
        return emergency_rollback(
            service.engine, service.settings, actor=actor_for(who, body.actor), reason=body.reason
        )


# --- dashboard ----------------------------------------------------------------------


def _dashboard_routes(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")
