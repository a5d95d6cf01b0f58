"""HEAD wherever GET is served (RFC 9110, section 9.1): a load balancer's health check
by HEAD got 405 from every route, each declared for GET only.

A pure ASGI middleware: a HEAD request is served as the GET it stands for, and what the
route sends is passed on without its body (the headers, ``Content-Length`` included, as
GET's). A route that does not serve GET answers HEAD as it answers GET (405). Any
other method's 405 names HEAD beside GET in its ``Allow`` header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["HeadAsGet"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class HeadAsGet:
    """Serve HEAD as GET without the body."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "HEAD":
            await self.app(scope, receive, _head_allowed(send))
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the rest of GET's body: nothing of it is sent
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def _head_allowed(send: Send) -> Send:
    """``send`` with HEAD added to a 405's ``Allow`` where it names GET."""

    async def allowing_head(message: Message) -> None:
        if message["type"] == "http.response.start" and message.get("status") == 405:
            headers = [
                (name, _with_head(value) if name.lower() == b"allow" else value)
                for name, value in message.get("headers", [])
            ]
            message = {**message, "headers": headers}
        await send(message)

    return allowing_head


def _with_head(allow: bytes) -> bytes:
    methods = [m.strip() for m in allow.split(b",") if m.strip()]
    if b"GET" in methods and b"HEAD" not in methods:
        methods.append(b"HEAD")
    return b", ".join(methods)
