"""How every route of the API takes a request: who the caller is, then the body.

FastAPI reads and parses a route's body before it resolves any dependency, the bearer
check (:mod:`unistatus.api.auth`) included: a caller with no valid token would get the
parser's 400 for a body that is not JSON, learning how bodies are read, and the server
would parse a body for a caller it then refuses. :class:`AuthFirstRoute` decides the
caller (401 / 403) from the headers alone before the route's handler reads the body.

A body in a content coding (``Content-Encoding: gzip``) is refused, 415: none is decoded.
Then a body not sent as JSON (another ``Content-Type``, or none) is refused as one that
does not parse is: 400 ``InputError`` saying so, not a 422 about a field when no field
can be named (FastAPI would hand the raw bytes to the schema). The media types read
as JSON are FastAPI's own: ``application/json`` and ``application/*+json``.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, params
from fastapi.routing import APIRoute

from unistatus.api.auth import authorize, required_role

__all__ = ["AuthFirstRoute"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class AuthFirstRoute(APIRoute):
    """A route whose bearer check runs before its body is read, and whose JSON body is
    refused (400) unless it is sent as JSON."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()
        role = required_role(self.dependant)
        json_body = self.body_field is not None and not isinstance(
            self.body_field.field_info, params.Form
        )
        if role is None and not json_body:
            return handle

        async def checked_first(request: Request) -> Response:
            if role is not None:
                # The dependency (Writer, Admin) checks again and hands the endpoint its
                # principal: a route added without this class is still guarded, if later.
                await authorize(request, role)
            if json_body:
                await _refuse_unless_json(request)
            return await handle(request)

        return checked_first


def _is_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of this ``Content-Type`` as JSON (its own rule)."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def _refuse_unless_json(request: Request) -> None:
    """400 for a body sent as anything but JSON; an empty body is no body (the schema's
    422 says it is required). 415 for a body in a content coding (gzip, br): none is
    decoded, and a plain body labelled one was taken as it came."""
    # Every header and every coding listed in one ('identity, gzip'), not the first.
    codings = [
        c.strip().lower()
        for value in request.headers.getlist("content-encoding")
        for c in value.split(",")
    ]
    refused = [c for c in codings if c not in ("", "identity")]
    if refused:
        raise HTTPException(
            415,
            f"the request body's Content-Encoding {', '.join(refused)[:40]!r} is not "
            "supported: send the body uncompressed (no Content-Encoding)",
        )
    content_type = request.headers.get("content-type")
    if content_type is not None and _is_json(content_type):
        return
    if not await request.body():  # kept by the request: the handler reads it from there
        return
    if content_type:
        sent = f"Content-Type {content_type.split(';')[0].strip()[:100]!r}"
    else:
        sent = "no Content-Type"
    raise HTTPException(
        400, f"the request body is not sent as JSON ({sent}): send JSON as application/json"
    )
