"""How every route of the API takes a request: who the caller is, before its body.

FastAPI reads and parses a route's body before it resolves any dependency, the bearer
check (:mod:`unistatus.api.auth`) included: a caller with no valid token would get the
parser's 400 for a body that is not JSON, learning how bodies are read, and the server
would parse a body for a caller it then refuses. :class:`AuthFirstRoute` decides the
caller (401 / 403) from the headers alone before the route's handler reads the body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from unistatus.api.auth import authorize, required_role

__all__ = ["AuthFirstRoute"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class AuthFirstRoute(APIRoute):
    """A route whose bearer check runs before its body is read or validated."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()
        role = required_role(self.dependant)
        if role is None:  # an open route: nothing to decide first
            return handle
        needed = role

        async def authorized_first(request: Request) -> Response:
            # The dependency (Writer, Admin) checks again and hands the endpoint its
            # principal: a route added without this class is still guarded, if later.
            await authorize(request, needed)
            return await handle(request)

        return authorized_first
