"""Clients too slow to finish a request, and too many at once (`unistatus serve`).

uvicorn times out an idle keep-alive connection, but not one whose request never
finishes: a client that sends half a request head and waits kept its connection open
for ever (uvicorn's issue #157). Some hundreds of those held the service's sockets;
some thousands its file descriptors, after which it answered nobody and asyncio logged
"Too many open files" in a loop, tens of MB a minute (found by a probe). nginx bounds
both (``client_header_timeout``, ``client_body_timeout``, ``worker_connections``):

- a request (its head and its body) must arrive within ``request_seconds`` of the
  connection, or of the answer before it on a kept-alive one; else the connection is
  closed with a 408;
- beyond ``max_connections`` open at once, a new connection is closed as it is accepted
  (a socket freed at once, where uvicorn's own ``limit_concurrency`` keeps it open to
  answer 503 and counts the slow ones).

A request whose body has arrived is never cut short, however long the answer takes.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["bounded_protocol"]

log = logging.getLogger("unistatus.api")

# The JSON error body every other refusal has (api/error_responses.py).
_WHY = b'{"detail":"the request did not arrive in time","error":"RequestTimeoutError"}'
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_WHY), _WHY)
)


def bounded_protocol(request_seconds: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with the module's two bounds (``request_seconds``
    0: no deadline)."""
    refused_said = False

    class Bounded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                nonlocal refused_said
                if not refused_said:  # a flood is not logged per connection
                    refused_said = True
                    log.warning(
                        "more than %d connections open: new ones are closed as they come "
                        "(`unistatus serve --max-connections`); logged once",
                        max_connections,
                    )
                transport.abort()
                return
            self._follow()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()  # the next request of a kept-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _follow(self) -> None:
            """The deadline runs from the first byte awaited of a request until the
            request has all arrived (the client's side of h11 done with it)."""
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                if self._deadline is None and request_seconds > 0:
                    self._deadline = self.loop.call_later(request_seconds, self._timed_out)
            else:
                self._disarm()

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            # The cycle is this request's once its head arrived (the client's side of
            # h11 past IDLE); before, it is the previous request's, or none.
            cycle = self.cycle if self.conn.their_state is not h11.IDLE else None
            begun = cycle is not None or bool(self.conn.trailing_data[0])
            # A connection that sent nothing of a request is closed without a word (a
            # 408 there is read by a client reusing it as the answer to its next one).
            if begun and (cycle is None or not cycle.response_started):
                self.transport.write(_TIMED_OUT)  # nothing of an answer to it sent yet
            self.transport.close()

    return Bounded
