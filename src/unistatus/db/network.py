"""Client-side network bounds of unistatus's own PostgreSQL connections.

``statement_timeout`` and ``lock_timeout`` are the server's: they cannot fire while a
request never reaches it. Through a black-holed link (a firewall dropping a flow, a
peer's host gone without a reset) a connection without bounds of its own waited for
ever, holding an adapter's write slot, the mode lock, a probe's worker. libpq bounds
each case from the client (psycopg passes these as connection parameters):

- ``connect_timeout``: connecting, the startup handshake included;
- ``keepalives``: a silent connection probed, dropped after the probes go unanswered
  (a host or a route gone; idle connections in the pool and a wait for a reply alike);
- ``tcp_user_timeout`` (Linux): data sent but not acknowledged this long drops it.

None of them catches a peer that acknowledges and answers probes but passes nothing on
(a hung proxy or pooler): the deadlines of the application (``/health``'s) do.
Only unistatus's own engines get them: an application's engine, and the connections
it gives, are its own to configure (docs/adapter.md).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.config import NetworkSettings

__all__ = ["DEFAULT_APPLICATION_NAME", "client_bounds"]

# The application_name of a unistatus session nobody named more precisely.
DEFAULT_APPLICATION_NAME = "unistatus"


def client_bounds(url: sa.URL, network: NetworkSettings | None = None) -> dict[str, Any]:
    """The libpq parameters bounding a connection to ``url`` (``connect_args``), each
    one the URL's query string leaves unset; a setting of 0 leaves libpq's own."""
    network = network or NetworkSettings()
    wanted: dict[str, int | None] = {
        "connect_timeout": network.connect_timeout_seconds or None,
        "keepalives": 1,
        "keepalives_idle": network.keepalives_idle_seconds or None,
        "keepalives_interval": network.keepalives_interval_seconds or None,
        "keepalives_count": network.keepalives_count or None,
        "tcp_user_timeout": network.tcp_user_timeout_ms or None,
    }
    return {k: v for k, v in wanted.items() if v is not None and k not in url.query}
