"""Engines tuned per backend: WAL and busy timeout on SQLite, a pool on PostgreSQL;
bound to the schema of unistatus's tables (:mod:`unistatus.db.binding`)."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from unistatus.config import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    DEFAULT_SCHEMA,
    NetworkSettings,
)
from unistatus.db.binding import bind_schema
from unistatus.db.connection_setup import set_up_connections
from unistatus.db.network import DEFAULT_APPLICATION_NAME, client_bounds
from unistatus.db.sqlite_times import read_times_loosely
from unistatus.db.sync_only import refuse_async_engine, refuse_async_url
from unistatus.errors import ConfigError
from unistatus.redact import redact

SQLITE_BUSY_TIMEOUT_MS = 30_000
# The application_name of unistatus's own background work (the backfill, the checks):
# ``unistatus/<command>``. The backfill's live-traffic probe leaves such sessions out.
TOOL_APPLICATION_PREFIX = "unistatus/"
# Commands whose sessions are live traffic, not unistatus's background work (and the
# embedded adapter's: ``unistatus adapter``).
LIVE_COMMANDS = frozenset({"serve", "loadtest", "adapter"})


def session_name(command: str) -> str:
    """The ``application_name`` of a command's sessions: ``unistatus/<command>`` for
    background work, which the backfill's live-traffic probe leaves out; ``unistatus
    <command>`` for the commands that serve live writes (:data:`LIVE_COMMANDS`)."""
    if command in LIVE_COMMANDS:
        return f"unistatus {command}"
    return f"{TOOL_APPLICATION_PREFIX}{command}"


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and point them at psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def parse_url(url: str) -> sa.URL:
    """A URL string as SQLAlchemy's URL (psycopg 3 for PostgreSQL); ConfigError if it
    does not parse (the message redacted: it may hold a password)."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError as exc:
        raise ConfigError(redact(f"invalid database URL {url!r}: {exc}")) from None
    except ValueError:
        # A port that is no number: its text is the password's tail when an "@" or ":"
        # of it was not encoded, so the driver's words are not repeated.
        raise ConfigError(_unparsed(url, "its port is not a number")) from None
    if parsed.host is not None and "@" in parsed.host:
        raise ConfigError(_unparsed(url, "more than one '@' before the host")) from None
    return parsed


def _unparsed(url: str, why: str) -> str:
    return redact(
        f"invalid database URL {url!r}: {why} (percent-encode the user's and the "
        "password's at sign and colon, as %40 and %3A; several hosts go as "
        "?host=h1:5432&host=h2:5432)"
    )


def display_url(url: sa.URL | str) -> str:
    """A database URL as it may be shown, logged or stored: every password ``***``."""
    text = url.render_as_string(hide_password=True) if isinstance(url, sa.URL) else url
    return redact(text)


def create_engine(
    database: str | sa.Engine,
    *,
    lock_timeout_ms: int | None = None,
    schema: str | None = None,
    application_name: str | None = None,
    prepared_statements: bool | None = None,
    network: NetworkSettings | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    **kwargs: Any,
) -> sa.Engine:
    """An engine for a URL (or the engine itself), with unistatus's connection settings.

    ``lock_timeout_ms`` bounds every lock wait on PostgreSQL connections (set once per
    connection, so it costs nothing per transaction); 0 or None leaves the server's.
    Behind a connection pooler it is not set, and ``prepared_statements`` (None: as
    found) are off (:mod:`unistatus.db.connection_setup`).
    ``application_name`` names PostgreSQL sessions (``pg_stat_activity``; None:
    ``unistatus``), unless the URL names them itself; ``network`` bounds them from the
    client (None: the defaults; :mod:`unistatus.db.network`), each parameter the URL
    leaves unset. An engine given keeps its own connection parameters.
    ``schema`` is the ``schema`` setting (None: an engine given stays as it is, a URL
    gets the default); a ConfigError if the engine given is bound to another schema.
    ``pool_size`` and ``max_overflow`` size a PostgreSQL engine's pool (None: the
    settings' defaults, 20 and 40; the ``pool_size`` and ``max_overflow`` settings).
    """
    refuse_async_engine(database)
    if isinstance(database, sa.Engine):
        return database if schema is None else bind_schema(database, schema)
    if not isinstance(database, str):
        raise ConfigError(
            f"the database must be a URL or a SQLAlchemy Engine, got {type(database).__name__}"
        )
    if pool_size is not None:
        kwargs.setdefault("pool_size", pool_size)
    if max_overflow is not None:
        kwargs.setdefault("max_overflow", max_overflow)
    engine = _engine_for(
        database, lock_timeout_ms, application_name, prepared_statements, network, **kwargs
    )
    return bind_schema(engine, schema or DEFAULT_SCHEMA)


def _engine_for(
    database: str,
    lock_timeout_ms: int | None,
    application_name: str | None,
    prepared_statements: bool | None,
    network: NetworkSettings | None,
    **kwargs: Any,
) -> sa.Engine:
    url = parse_url(database)
    refuse_async_url(url)
    # A failed statement's error never quotes what it was given (callers' users,
    # amounts, metadata): not in a log line, a result's error, a stored note.
    kwargs.setdefault("hide_parameters", True)
    if url.get_backend_name() == "sqlite":
        # SQLite writes one at a time: its pool keeps SQLAlchemy's own sizes.
        kwargs.pop("pool_size", None)
        kwargs.pop("max_overflow", None)
        return _sqlite_engine(url, **kwargs)
    if url.get_backend_name() == "postgresql":
        connect_args = kwargs.setdefault("connect_args", {})
        # A name given (a command's, the adapter's) wins; the default does not override
        # the user's PGAPPNAME (libpq's, which a connection parameter would beat).
        name = application_name or (None if "PGAPPNAME" in os.environ else DEFAULT_APPLICATION_NAME)
        if "application_name" not in url.query and name is not None:
            connect_args.setdefault("application_name", name)
        for name, value in client_bounds(url, network).items():
            connect_args.setdefault(name, value)
        if kwargs.get("poolclass") is not None:  # a pool of another kind takes no sizes
            kwargs.pop("pool_size", None)
            kwargs.pop("max_overflow", None)
        else:
            kwargs.setdefault("pool_size", DEFAULT_POOL_SIZE)
            kwargs.setdefault("max_overflow", DEFAULT_MAX_OVERFLOW)
        # No pre-ping: it costs a round trip on every checkout (a fifth of a dual
        # write). A connection a restart killed is found on use instead; SQLAlchemy then
        # invalidates the pool and the adapter retries the write on a fresh connection.
        kwargs.setdefault("pool_pre_ping", False)
        engine = sa.create_engine(url, **kwargs)
        set_up_connections(
            engine,
            lock_timeout_ms=lock_timeout_ms,
            prepared_statements=prepared_statements,
            read_committed="isolation_level" not in kwargs,  # a level asked for stands
        )
        return engine
    raise ConfigError(
        f"unsupported database {url.get_backend_name()!r}: use sqlite:///FILE or postgresql://"
    )


def _sqlite_engine(url: sa.URL, **kwargs: Any) -> sa.Engine:
    memory = url.database in (None, "", ":memory:")
    if memory:
        kwargs.setdefault("poolclass", StaticPool)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
    read_times_loosely(engine)

    # pysqlite's own transaction handling defers BEGIN and cannot do BEGIN IMMEDIATE;
    # take it over (SQLAlchemy's documented recipe) so writes lock up front and never
    # fail half-way on an upgrade from a read lock.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())

    # A COMMIT SQLite refuses (a deferred foreign key) leaves its transaction open, but
    # SQLAlchemy takes it as ended and may skip the pool's reset: roll it back here, or
    # the connection fails its next user and holds the write lock in the pool.
    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None and dbapi_conn.in_transaction:
            dbapi_conn.rollback()

    return engine
