"""An engine whose every transaction waits a bounded time, for reads that must answer.

A probe (``/health``: Kubernetes gives it 1 s by default) read unistatus's tables on the
service's pool with no bound of its own: while another session held a table (a
migration's DDL, ``LOCK TABLE``) it waited as long, then said "healthy". The engine
:func:`bounded_reads` gives shares that pool, and each of its transactions sets
``statement_timeout`` and ``lock_timeout`` (PostgreSQL, ``SET LOCAL``: the connection
goes back to the pool as it was), so a read held up fails within ``timeout_ms`` (a slow statement within twice that) and the
caller says why (:func:`unistatus.db.retry.retry_reason`: "lock timeout"). SQLite
readers wait for no lock (WAL): nothing is set there.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event

from unistatus.db.dialect import ops_for

__all__ = ["bounded_reads"]


def bounded_reads(engine: sa.Engine, timeout_ms: int, *, statements: bool = True) -> sa.Engine:
    """``engine``'s pool, schema and listeners, each lock wait of its transactions
    bounded by ``timeout_ms`` and (``statements``) each statement by twice that
    (PostgreSQL; 0 leaves the session's own). Without ``statements`` a read that is
    slow but runs (a large statistics table, for ``/metrics``) keeps the session's
    statement timeout; only a wait for a lock is cut short."""
    bounded = engine.execution_options()  # events added here stay here
    ops = ops_for(engine)
    if timeout_ms and engine.dialect.name == "postgresql":

        @event.listens_for(bounded, "begin")
        def _bound(conn: sa.Connection) -> None:
            if statements:
                # A statement twice the lock wait: a wait for a lock is then named so.
                ops.bound_statements(conn, 2 * timeout_ms, timeout_ms)
            else:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(timeout_ms)}")

    return bounded
