"""How the HTTP API answers errors: typed errors to status codes, and safe error bodies.

Typed unistatus errors become 4xx with a clear ``detail`` (404 unknown transaction, 409
refused transition / mode / gate, 422 invalid input, its first :data:`MAX_LISTED_ERRORS`
errors listed; 400 a body that is not JSON at all, or not sent as JSON:
:mod:`~unistatus.api.routing`); 503 only when the database itself fails, and a 503 body
names no host, port or SQL: it carries an ``error_id`` under which the service log keeps
the detail (so does a figure the open endpoints could not read: ``unknown (error id …)``,
:func:`public_unknown`; so does a write that stood with its secondary side queued for
repair, :func:`queued_for_repair`). Every error body has
``error``: the typed error's name, or for a refusal of the HTTP layer itself (401, 403,
an unknown route) a name from :data:`HTTP_ERROR_NAMES`. :func:`add_error_handlers`
installs this on an app.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import uuid
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from unistatus import errors
from unistatus.api.models import ErrorBody
from unistatus.db.connection_limit import refused_for_a_limit
from unistatus.db.failures import describe
from unistatus.redact import redact

__all__ = [
    "HTTP_ERROR_NAMES",
    "MAX_LISTED_ERRORS",
    "STATUS_CODES",
    "add_error_handlers",
    "error_answers",
    "error_response",
    "failure_detail",
    "public_database_error",
    "public_unknown",
    "queued_for_repair",
    "status_code_for",
    "unavailable",
]

# The service's log (the name it has always had): where an error id's detail goes.
log = logging.getLogger("unistatus.api.service")

STATUS_CODES: list[tuple[type[errors.UnistatusError], int]] = [
    (errors.EntityNotFoundError, 404),
    (errors.InvalidTransitionError, 409),
    (errors.WriteRefusedError, 409),  # the application's rule: the same request, refused again
    (errors.ModeError, 409),
    (errors.GateError, 409),
    (errors.InputError, 422),
    # Refused until an operator acts (a legacy id beyond what a UTX id holds, a legacy
    # table gone): the same request fails again, so no 503 a client would retry.
    (errors.ConfigError, 409),
    (errors.StorageError, 503),
]


# What a refusal by the HTTP layer itself (the bearer check, the router, the body
# parser) is called in a body's ``error``, beside unistatus's own error names.
HTTP_ERROR_NAMES = {
    400: errors.InputError.__name__,
    401: "AuthenticationError",
    403: "PermissionError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    413: errors.InputError.__name__,  # the body over max_request_bytes (api/body_limit.py)
    415: errors.InputError.__name__,  # a compressed body (api/routing.py)
}

# How long a client told 503 waits before it retries (``Retry-After``, seconds): a lock
# held or a database restarting is seconds, and a client without it retries at once.
RETRY_AFTER_SECONDS = 2


# How many of a request's schema errors a 422 lists (``detail``), the rest only counted
# (``errors_not_listed``): a body within the size limit can be wrong in as many places as
# it has fields, and one entry each made an answer 7 times larger than the request.
MAX_LISTED_ERRORS = 20


# What each error answer means, for the routes' OpenAPI entries (:func:`error_answers`).
_MEANINGS = {
    400: "The body is not JSON, or not sent as JSON (application/json).",
    401: "No bearer token, or one the service does not know (Authorization: Bearer <token>).",
    403: "The token's role may not do this (force and the control endpoints need an admin "
    "token), or no token of that role is configured.",
    404: "No such transaction.",
    409: "Refused, and refused again if repeated: a transition the rules do not allow, the "
    "application's own rule in the database, the write mode, a phase gate, or something "
    "an operator must fix first.",
    413: "The body is over the service's max_request_bytes.",
    415: "The body is compressed (Content-Encoding): send it uncompressed.",
    422: "Invalid input: detail lists the schema's errors, or says in words what was refused.",
    503: "The database failed, is unreachable or refused a connection for a limit (too "
    "many connections): error_id names the service log's entry. "
    "Safe to retry (a write with the same Idempotency-Key).",
}


def error_answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route gives, as its ``responses`` in the OpenAPI schema: each
    with an :class:`~unistatus.api.models.ErrorBody` and what it means."""
    answers: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": _MEANINGS[code]} for code in codes
    }
    if 503 in answers:
        answers[503]["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before a retry; not sent when the result "
                "says outcome_unknown (the write may have committed: retry with the same "
                "Idempotency-Key, or read it first).",
                "schema": {"type": "integer"},
            }
        }
    return answers


def status_code_for(exc: errors.UnistatusError) -> int:
    for kind, code in STATUS_CODES:
        if isinstance(exc, kind):
            return code
    return 400


def _logged(what: str, detail: str, level: int = logging.ERROR) -> str:
    """Log ``detail`` under a new error id; what a client may see instead of it."""
    error_id = uuid.uuid4().hex[:12]
    log.log(level, "%s [error id %s]: %s", what, error_id, redact(detail))
    return error_id


def unavailable(kind: str, detail: str, result: dict[str, Any] | None = None) -> JSONResponse:
    """A 503 that names no database host, port or SQL: the log has them, under an id."""
    error_id = _logged(kind, detail)
    message = (
        f"the database failed or is unreachable (error id {error_id}; "
        "the service log has the detail)"
    )
    # Up, but full (the role's name stays in the log); not said of a write that may have
    # committed before its retry was refused: that would read as "nothing written".
    if refused_for_a_limit(detail) and not (result or {}).get("outcome_unknown"):
        message = (
            "the server refused a connection: too many connections (a CONNECTION LIMIT or "
            f"max_connections; error id {error_id}; the service log has the detail)"
        )
    body: dict[str, Any] = {"detail": message, "error": kind, "error_id": error_id}
    if result is not None:
        body["result"] = {**result, "error": message}
    return error_response(body, 503)


def queued_for_repair(result: dict[str, Any], detail: str) -> dict[str, Any]:
    """A write's result whose secondary side the database refused (``primary_wins``: the
    write stood, the entity is queued for repair), as a client may see it. The database's
    words go to the log, under the id the result names: they quote the refused row
    (another caller's user, amount, metadata) and name tables and constraints."""
    error_id = _logged("secondary write queued for repair", detail, logging.WARNING)
    message = (
        f"the secondary write failed and was queued for repair (error id {error_id}; "
        "the service log has the detail)"
    )
    return {**result, "error": message, "error_id": error_id}


def error_response(body: Any, status_code: int) -> JSONResponse:
    """An error as JSON that any input can be echoed in: ASCII (a lone surrogate is
    escaped, not an encoding error) and no NaN (which JSON has no word for)."""
    text = json.dumps(_finite(body), ensure_ascii=True, allow_nan=False, default=str)
    # Not after a write that may have committed: a paced blind retry is a second payout.
    unknown = isinstance(body, dict) and (body.get("result") or {}).get("outcome_unknown")
    headers = (
        {"Retry-After": str(RETRY_AFTER_SECONDS)} if status_code == 503 and not unknown else None
    )
    return JSONResponse(json.loads(text), status_code=status_code, headers=headers)


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
    if refused_for_a_limit(detail):  # up, but full: the role's name stays in the log
        error_id = _logged("database refused a connection", detail)
        return (
            "the server refused a connection: too many connections (a CONNECTION LIMIT "
            f"or max_connections; error id {error_id})"
        )
    return f"database unreachable (error id {_logged('database unreachable', detail)})"


def public_unknown(what: str, detail: str) -> str:
    """A figure a read failed to give, as an unauthenticated client may see it: the why
    (a table's name, SQL, parameters) goes to the log, under the id it names."""
    return f"unknown (error id {_logged(f'{what} unknown', detail)})"


def failure_detail(exc: BaseException) -> str:
    """What the log keeps of a failure: a database error's statement but not its
    parameters (they hold callers' data)."""
    if isinstance(exc, sa.exc.StatementError):
        return f"database error: {describe(exc)} [SQL: {exc.statement}]"
    return describe(exc)


def _unreadable_body(cause: BaseException | None) -> str | None:
    """Why FastAPI's parser could not read a body (its own 400 says only that it could
    not), when the cause is one a client can fix."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the request body is not UTF-8 (at byte {cause.start})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        limit = sys.get_int_max_str_digits()
        return f"the request body is not JSON Python reads: an integer has more than {limit} digits"
    if isinstance(cause, RecursionError):  # deeper than the parser goes (about 950 levels)
        return "the request body is not JSON Python reads: it is nested too deeply"
    return None


def add_error_handlers(app: FastAPI) -> None:
    """Typed errors, invalid requests and database failures as the answers above."""

    @app.exception_handler(errors.UnistatusError)
    async def _typed(_request: Request, exc: errors.UnistatusError) -> JSONResponse:
        code = status_code_for(exc)
        if code >= 500:
            return unavailable(type(exc).__name__, str(exc))
        return error_response({"detail": redact(str(exc)), "error": type(exc).__name__}, code)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        kind = HTTP_ERROR_NAMES.get(exc.status_code, "HTTPError")
        detail = _unreadable_body(exc.__cause__) if exc.status_code == 400 else None
        response = error_response({"detail": detail or exc.detail, "error": kind}, exc.status_code)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # A body that is not JSON at all is the parser's refusal, as one that is not
        # even text is (400), not a field's: no field can be named.
        found = exc.errors()
        not_json = next((e for e in found if e.get("type") == "json_invalid"), None)
        if not_json is not None:
            loc = list(not_json.get("loc", ()))
            at = f" (at character {loc[-1]})" if loc[1:] else ""
            message = f"the request body is not JSON{at}"
            return error_response({"detail": message, "error": errors.InputError.__name__}, 400)
        # FastAPI's own handler echoes the input, which may hold NaN or a lone surrogate
        # that its JSON encoder cannot write (a 500 for a 422): say where and why only.
        detail = [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
            for e in found[:MAX_LISTED_ERRORS]
        ]
        # The schema's refusals carry the key unistatus's own do (InputError: 422).
        body: dict[str, Any] = {"detail": detail, "error": errors.InputError.__name__}
        if len(found) > MAX_LISTED_ERRORS:
            body["errors_not_listed"] = len(found) - MAX_LISTED_ERRORS
        return error_response(body, 422)

    @app.exception_handler(sa.exc.DBAPIError)
    async def _database(_request: Request, exc: sa.exc.DBAPIError) -> JSONResponse:
        return unavailable("StorageError", failure_detail(exc))
