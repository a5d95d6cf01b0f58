"""A TCP proxy in front of the test server that can black-hole its links.

``black_hole()`` keeps every socket open (the client's connection stays ESTABLISHED,
each byte it sends is ACKed by this host's kernel) but forwards nothing either way: a
peer that stopped answering without closing anything, the case the server-side
timeouts (``statement_timeout``) cannot catch. A new connection is accepted and then
left unanswered too. ``forward()`` passes bytes on again; ``close()`` ends every link.

What a userland proxy cannot show: its kernel ACKs what the client sends and answers
TCP keepalive probes, so neither ``tcp_user_timeout`` nor keepalives fire against it
(they catch a peer whose host or route is gone); only ``connect_timeout`` and the
application-level deadlines do.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


class BlackHoleProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.forwarding = threading.Event()
        self.forwarding.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def black_hole(self) -> None:
        self.forwarding.clear()

    def forward(self) -> None:
        self.forwarding.set()

    def url(self, url: str) -> str:
        """``url`` (a PostgreSQL URL) pointed at this proxy."""
        parsed = sa.engine.make_url(url).set(host="127.0.0.1", port=self.port)
        return parsed.render_as_string(hide_password=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.forwarding.set()  # the held pipes see the end
            for s in [self._listener, *self._sockets]:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def _keep(self, s: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                s.close()
                return False
            self._sockets.append(s)
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._keep(client):
                threading.Thread(target=self._link, args=(client,), daemon=True).start()

    def _link(self, client: socket.socket) -> None:
        self.forwarding.wait()  # a connection made while black-holed: never answered
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        if not self._keep(server):
            return
        threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
        self._pipe(client, server)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.forwarding.wait()  # black-holed: held, the socket left open
                if self._closed:
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@contextmanager
def proxy_for(url: str) -> Iterator[BlackHoleProxy]:
    """A proxy in front of ``url``'s server, closed (every link ended) after the block."""
    parsed = sa.engine.make_url(url)
    proxy = BlackHoleProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    try:
        yield proxy
    finally:
        proxy.close()
