"""The largest request body the service reads: a larger one is refused with 413.

Without a bound a client (hostile or broken) could send a body of any size, which the
server would read whole into memory before any check of ours ran. A pure ASGI
middleware: a declared ``Content-Length`` over the bound is refused before anything is
read; a body without one (chunked) is counted as it arrives and refused once over it.
Within the bound the body is handed on as it came (one message).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from unistatus.api.error_responses import error_response
from unistatus.errors import InputError

__all__ = ["BodyLimit"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


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
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                first = message
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if not handed:
                handed = True
                return first
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        detail = f"the request body is over {self.max_bytes} bytes (max_request_bytes)"
        response = error_response({"detail": detail, "error": InputError.__name__}, 413)
        await response(scope, receive, send)
