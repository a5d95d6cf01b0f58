"""The largest request body the service reads: a larger one is refused with 413.

Without a bound a client (hostile or broken) could send a body of any size, which the
server would read whole into memory before any check of ours ran. A pure ASGI
middleware: a declared ``Content-Length`` over the bound is refused before anything is
read (the route's first read of it raises :class:`BodyTooLarge`: a 413 through the app's
error handlers); otherwise the body is counted as the route reads it, and the read that
goes over the bound raises the same. Nothing
is read ahead of the route: the bearer check (:class:`~unistatus.api.routing.
AuthFirstRoute`) runs on the headers first, so a caller without a valid token has no
byte of its body read or held.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["BodyLimit", "BodyTooLarge"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """The body read so far is over the bound (413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _detail(max_bytes))


def _detail(max_bytes: int) -> str:
    return f"the request body is over {max_bytes} bytes (max_request_bytes)"


class BodyLimit:
    """Refuse HTTP request bodies over ``max_bytes`` (413, nothing else runs)."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            # Refused at the route's first read of it, after its bearer check: a caller
            # without a valid token gets that 401 whatever it declared (no byte is read).
            async def refused() -> Message:
                raise BodyTooLarge(self.max_bytes)

            await self.app(scope, refused, send)
            return
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)
