"""The service's listening socket, bound before anything else starts.

Left to uvicorn, a port in use is found after the application has started (its
lifespan, the background monitor), logged as a multi-line story and turned into exit
code 3. Bound here first, it is one :class:`~unistatus.errors.ConfigError` naming the
address, before anything ran; uvicorn then serves on the socket it is given.
"""

from __future__ import annotations

import errno
import socket

from unistatus.errors import ConfigError

__all__ = ["listen"]


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (SO_REUSEADDR, as uvicorn binds its own)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {where}: {exc.strerror} (check --host)") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {where}: address already in use (another process is "
                "listening there: stop it, or choose another --port)"
            ) from None
        raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock
