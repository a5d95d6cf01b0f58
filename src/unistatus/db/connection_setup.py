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

Whatever a role or database sets as its sessions' defaults (``ALTER ROLE/DATABASE ...
SET``), each connection reads and writes text in UTF8 and dates in ISO: psycopg encodes
text in the connection's ``client_encoding`` (LATIN1 cannot carry "€", which failed a
valid write as a database failure) and parses timestamps only in ISO ``DateStyle``
("can't parse timestamptz with DateStyle 'German, DMY'" on nearly every read). Set
only where the server announced another (no round trip otherwise); a pooler keeps both
per client (PgBouncer tracks them), so they are set behind one too.

A pooler is recognised at connect: the process id the server announces (BackendKeyData,
which a pooler makes up for its clients' cancel requests) is not the process that runs
the statements (``pg_backend_pid()``). One round trip per new connection, which also
sets the lock timeout on a direct one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from unistatus.db.infinite_times import read_infinite_times_as_missing
from unistatus.db.isolation import DEFAULT_LEVEL_KEY, name_read_committed

__all__ = ["SESSION_SETTINGS", "announced_pid", "set_up_connections", "unfit_settings"]

log = logging.getLogger("unistatus.db")

# The serving process's pid and the lock timeout it has (the server's, or its role's),
# the one asked for set first where the serving process is the announced one. Its
# values bound client-side: no statement is prepared, on any connection.
_PROBE = (
    "SELECT pg_backend_pid(), "
    "CASE WHEN pg_backend_pid() = {announced} AND {timeout} IS NOT NULL "
    "THEN set_config('lock_timeout', {timeout}, false) END, "
    "current_setting('lock_timeout'), current_setting('default_transaction_isolation')"
)


# What each connection must have, and whether a value the server announced is it.
SESSION_SETTINGS = {"client_encoding": "UTF8", "DateStyle": "ISO"}
_FITS: dict[str, Callable[[str], bool]] = {
    "client_encoding": lambda value: value.upper().replace("-", "") in ("UTF8", "UNICODE"),
    "DateStyle": lambda value: value.upper().startswith("ISO"),
}


@dataclass(frozen=True)
class _Found:
    pooled: bool
    lock_timeout: str  # as the session has it after the probe ("0": none)
    default_isolation: str  # the server's for this session (isolation.DEFAULT_LEVEL_KEY)


def set_up_connections(
    engine: sa.Engine,
    *,
    lock_timeout_ms: int | None,
    prepared_statements: bool | None,
    read_committed: bool = True,
) -> None:
    """Give each new connection of ``engine`` (psycopg 3 or psycopg2) its lock timeout
    and prepared statements as fits how it reaches the server (the module doc), and
    (psycopg 3, ``read_committed``) READ COMMITTED transactions whatever the server's
    default: sent with each BEGIN, no round trip; the package's write transactions need
    it (:meth:`unistatus.db.dialect.PostgresOps._prepare_write`). A level asked of
    SQLAlchemy for one transaction (the check's snapshots) is reset after it to the
    server's default as SQLAlchemy read it, which the write transactions then see and
    ask over where it is another.

    ``lock_timeout_ms``: 0 or None leaves the server's; ``prepared_statements``: None
    decides by what is found (off behind a pooler), True or False as said. With neither
    to decide, nothing is asked of the server."""
    said: list[bool] = []  # the pooler logged once per engine (a race: said twice)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        _fit_settings(dbapi_conn)
        read_infinite_times_as_missing(dbapi_conn)  # a missing time (infinite_times)
        if not lock_timeout_ms and prepared_statements is not None:
            found = None
        else:
            found = _probe(dbapi_conn, lock_timeout_ms)
        pooled = found is not None and found.pooled
        if found is not None:
            record.info[DEFAULT_LEVEL_KEY] = found.default_isolation
        prepare = (not pooled) if prepared_statements is None else prepared_statements
        if hasattr(dbapi_conn, "prepare_threshold"):  # psycopg 3
            if not prepare:
                dbapi_conn.prepare_threshold = None
            if read_committed:
                name_read_committed(dbapi_conn)
        if found is not None and pooled and not said:
            said.append(True)
            _say_pooled(prepare, lock_timeout_ms, found.lock_timeout)


def unfit_settings(dbapi_conn: Any) -> dict[str, str]:
    """The session settings of ``dbapi_conn`` (psycopg 3 or psycopg2) that psycopg cannot
    work with (:data:`SESSION_SETTINGS`), as the server announced them: {} where all fit."""
    if hasattr(dbapi_conn, "info") and hasattr(dbapi_conn.info, "parameter_status"):
        status = dbapi_conn.info.parameter_status  # psycopg 3
    elif hasattr(dbapi_conn, "get_parameter_status"):
        status = dbapi_conn.get_parameter_status  # psycopg2
    else:
        return {}
    unfit = {}
    for name, fits in _FITS.items():
        value = status(name)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if value is not None and not fits(value):
            unfit[name] = value
    return unfit


def _fit_settings(dbapi_conn: Any) -> None:
    """Set the session settings :func:`unfit_settings` finds unfit; outside any
    transaction (a SET rolled back with one is undone), none left open."""
    unfit = unfit_settings(dbapi_conn)
    if not unfit:
        return
    sets = "; ".join(f"SET {name} TO '{SESSION_SETTINGS[name]}'" for name in unfit)
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(sets)
    finally:
        cursor.close()
    dbapi_conn.autocommit = autocommit


def _say_pooled(prepare: bool, lock_timeout_ms: int | None, role_timeout: str) -> None:
    how = "prepared" if prepare else "not prepared"
    log.info("the server is reached through a connection pooler: statements are %s there", how)
    if lock_timeout_ms and role_timeout == "0":
        # The adapter's writes would wait for a row lock without end.
        log.warning(
            "lock_timeout_ms (%d) is not set on a pooled server connection (it would stay "
            "there for other clients) and the server sets no lock_timeout for this role: "
            "set it for the role (ALTER ROLE ... SET lock_timeout = '%dms')",
            lock_timeout_ms,
            lock_timeout_ms,
        )


def announced_pid(dbapi_conn: Any) -> int:
    """The backend pid the server announced at connect (BackendKeyData): through a
    pooler, one the pooler made up, not ``pg_backend_pid()`` of the statements."""
    return int(dbapi_conn.info.backend_pid)


def _probe(dbapi_conn: Any, lock_timeout_ms: int | None) -> _Found:
    """Whether ``dbapi_conn`` reaches the server through a pooler, the lock timeout set
    (for the session) where it does not. Outside any transaction, none left open."""
    announced = announced_pid(dbapi_conn)
    timeout = f"'{int(lock_timeout_ms)}ms'" if lock_timeout_ms else "NULL::text"
    autocommit = dbapi_conn.autocommit
    try:
        dbapi_conn.autocommit = True  # a SET inside a transaction rolled back is undone
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(_PROBE.format(announced=announced, timeout=timeout))
            serving, _, lock_timeout, default_isolation = cursor.fetchone()
        finally:
            cursor.close()
        dbapi_conn.autocommit = autocommit
    except Exception as exc:
        log.error(
            "a new connection failed while unistatus asked the server whether a connection "
            "pooler is in front (%s): %s",
            _PROBE.split(",")[0],
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        )
        raise
    return _Found(
        pooled=int(serving) != announced,
        lock_timeout=str(lock_timeout),
        default_isolation=str(default_isolation),
    )
