"""The HTTP service: health, Prometheus metrics, status, transactions, control, dashboard.

``create_app(settings, engine)`` assembles the FastAPI app from its parts; ``unistatus
serve`` runs it with uvicorn (and evaluates alerts in a background thread). Every figure
is read from the database at request time, so the service shows what every process is
doing.

The parts: request models (:mod:`~unistatus.api.models`), error answers
(:mod:`~unistatus.api.error_responses`: typed errors as 4xx, a 503 naming no host, port
or SQL), token checks (:mod:`~unistatus.api.auth` over :mod:`~unistatus.api.access`,
run before a body is read: :mod:`~unistatus.api.routing`),
shared state (:mod:`~unistatus.api.state`) and the routes
(:mod:`~unistatus.api.observability_routes`, :mod:`~unistatus.api.transaction_routes`,
:mod:`~unistatus.api.control_routes`); the dashboard's files are mounted here. Reads
are open; transaction writes need a writer or admin token, ``force`` and control an
admin token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from unistatus.api.body_limit import BodyLimit
from unistatus.api.control_routes import add_control_routes
from unistatus.api.error_responses import add_error_handlers
from unistatus.api.head_requests import HeadAsGet
from unistatus.api.observability_routes import add_observability_routes
from unistatus.api.routing import AuthFirstRoute
from unistatus.api.state import ServiceState
from unistatus.api.transaction_routes import add_transaction_routes
from unistatus.config import Settings, load_settings
from unistatus.db.engine import create_engine, session_name
from unistatus.migration.verify import (
    DEFAULT_BUSY_MAX_WAIT,
    DEFAULT_ROWS_PER_ROUND,
    DEFAULT_SECONDS_PER_ROUND,
)
from unistatus.observe.metrics import DEFAULT_WINDOW_SECONDS
from unistatus.version import VERSION

__all__ = ["create_app"]

WEB = Path(__file__).parent.parent / "observe" / "web"


def create_app(
    settings: Settings | None = None,
    engine: sa.Engine | None = None,
    *,
    monitor_interval: float | None = None,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    verify_rows: int = DEFAULT_ROWS_PER_ROUND,
    verify_seconds: float | None = DEFAULT_SECONDS_PER_ROUND,
    verify_busy_wait: float = DEFAULT_BUSY_MAX_WAIT,
) -> FastAPI:
    """The unistatus HTTP app. ``monitor_interval`` (s) evaluates alerts in the background,
    each evaluation first verifying at most ``verify_rows`` changed rows per system in at
    most ``verify_seconds``, a new pass waiting beside live traffic ``verify_busy_wait``
    seconds at most (:class:`unistatus.observe.alerts.Monitor`)."""
    settings = settings or load_settings()
    engine = create_engine(
        engine or settings.database_url,
        lock_timeout_ms=settings.lock_timeout_ms,
        schema=settings.schema,
        prepared_statements=settings.prepared_statements,
        application_name=session_name("serve"),
        network=settings.network,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
    )
    service = ServiceState(settings, engine, window_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if monitor_interval:
            service.start_monitor(
                monitor_interval,
                verify_rows=verify_rows,
                verify_seconds=verify_seconds,
                verify_busy_wait=verify_busy_wait,
            )
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="unistatus",
        version=VERSION,
        description="Migration of legacy payment statuses to the unified model: health, "
        "metrics, status, transactions and control.",
        lifespan=lifespan,
        # '/x/' is a 404, not a redirect to '/x' at the host the client's Host named.
        redirect_slashes=False,
    )
    app.state.service = service
    app.router.route_class = AuthFirstRoute  # the token before the body, on every route
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(HeadAsGet)
    add_error_handlers(app)
    add_observability_routes(app, service)
    add_transaction_routes(app, service)
    add_control_routes(app, service)
    _dashboard_routes(app)
    return app


def _dashboard_routes(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")
