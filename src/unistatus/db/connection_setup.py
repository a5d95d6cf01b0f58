"""What each new PostgreSQL connection of an engine unistatus makes is given, and what
it is not given when the server is reached through a connection pooler.

Production servers are often reached through a transaction pooler (PgBouncer, pgcat,
Odyssey, RDS Proxy): each transaction runs on whichever server connection is free.
Two things a direct connection may keep for its whole life are then wrong:

- **Prepared statements.** psycopg prepares a statement on the server once it has run
  it five times (``prepare_threshold``) and from then on sends only its name. Through a
  transaction pooler the name reaches a server connection that has no such statement
  ("prepared statement _pg3_3 does not exist"), one that has it already ("already
  exists"), or one where another client's statement has that name: a quarter of the
  adapter's writes failed so under 8 threads, some binding their values to a statement
  of another shape. They are off behind a pooler (PgBouncer 1.21 and newer keeps them
  with ``max_prepared_statements``: the ``prepared_statements`` setting turns them on).
- **Session settings.** ``lock_timeout_ms`` was a startup ``options`` parameter, which
  PgBouncer refuses ("unsupported startup parameter: options"), and a session ``SET``
  would stay on the server connection for whichever client gets it next. It is set on
  a direct connection only; behind a pooler set it for the role (``ALTER ROLE ... SET
  lock_timeout``), which the server applies to every session the pooler opens. (The
  package's own bounded work sets its bounds per transaction either way.)

A pooler is recognised at connect: the process id the server announces (BackendKeyData,
which a pooler makes up for its clients' cancel requests) is not the process that runs
the statements (``pg_backend_pid()``). One round trip per new connection, which also
sets the lock timeout on a direct one.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

__all__ = ["set_up_connections"]

log = logging.getLogger("unistatus.db")

# The serving process's pid; with the lock timeout, set only where it is the announced one.
_PID = "SELECT pg_backend_pid()"
_PID_AND_TIMEOUT = (
    "SELECT pg_backend_pid(), CASE WHEN pg_backend_pid() = %(announced)s "
    "THEN set_config('lock_timeout', %(lock_timeout)s, false) END"
)


def set_up_connections(
    engine: sa.Engine, *, lock_timeout_ms: int | None, prepared_statements: bool | None
) -> None:
    """Give each new connection of ``engine`` (psycopg 3 or psycopg2) its lock timeout
    and prepared statements as fits how it reaches the server (the module doc).

    ``lock_timeout_ms``: 0 or None leaves the server's; ``prepared_statements``: None
    decides by what is found (off behind a pooler), True or False as said."""
    said: list[bool] = []  # the pooler logged once per engine

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        pooled = _through_a_pooler(dbapi_conn, lock_timeout_ms)
        prepare = (not pooled) if prepared_statements is None else prepared_statements
        if not prepare and hasattr(dbapi_conn, "prepare_threshold"):  # psycopg 3
            dbapi_conn.prepare_threshold = None
        if pooled and not said:
            said.append(True)
            log.info(
                "the server is reached through a connection pooler: statements are %s on "
                "the server%s",
                "prepared" if prepare else "not prepared",
                "; lock_timeout_ms is not set per session (set lock_timeout for the role)"
                if lock_timeout_ms
                else "",
            )


def _through_a_pooler(dbapi_conn: Any, lock_timeout_ms: int | None) -> bool:
    """Whether ``dbapi_conn`` reaches the server through a pooler; the lock timeout set
    (for the session) where it does not. Outside any transaction, none left open."""
    announced = int(dbapi_conn.info.backend_pid)
    timeout = f"{int(lock_timeout_ms)}ms" if lock_timeout_ms else None
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True  # a SET inside a transaction rolled back would be undone
    try:
        cursor = dbapi_conn.cursor()
        try:
            if timeout is None:
                cursor.execute(_PID)
            else:
                cursor.execute(_PID_AND_TIMEOUT, {"announced": announced, "lock_timeout": timeout})
            serving = int(cursor.fetchone()[0])
        finally:
            cursor.close()
    finally:
        dbapi_conn.autocommit = autocommit
    return serving != announced
