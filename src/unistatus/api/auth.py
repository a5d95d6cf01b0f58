"""The bearer-token checks of the HTTP API, as FastAPI dependencies.

``Writer`` (transaction writes) and ``Admin`` (``force`` and the control endpoints)
resolve to the :class:`~unistatus.api.access.Principal` holding a valid token for that
role: 401 without a valid token, 403 when the token's role is too low or when no token
is configured for the role (disabled, never open). The tokens: :mod:`unistatus.api.access`.

FastAPI reads and parses a request's body before it resolves any dependency, so
:class:`~unistatus.api.routing.AuthFirstRoute` runs the check of the role a route asks
for (:func:`required_role`, :func:`authorize`) before the body is touched; the
dependency then hands the endpoint its principal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from unistatus.api.access import Principal, Role, authenticate, enabled

__all__ = ["DISABLED", "Admin", "Writer", "authorize", "required_role"]

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


# What each dependency asks for, most powerful first (the one checked if a route asks
# for both).
_ROLES: list[tuple[Callable[..., Any], Role]] = [(_admin, "admin"), (_writer, "writer")]


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def required_role(dependant: Dependant) -> Role | None:
    """The role a route's endpoint asks for through ``Writer`` or ``Admin``; None: open."""
    calls = [sub.call for sub in _dependencies(dependant)]
    return next((role for call, role in _ROLES if any(c is call for c in calls)), None)


async def authorize(request: Request, role: Role) -> Principal:
    """The holder of a valid token allowed to act as ``role``, from the request's headers
    alone (its body unread); 403 / 401 otherwise."""
    return _require(request, await _bearer(request), role)
