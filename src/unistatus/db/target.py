"""Which database a command works on, in words, and whether it can: reachable, and with
unistatus installed.

Without these checks a command's first real query says it: "no such table:
unistatus_control" from a SQLite file that the connection itself just created empty,
or the driver's connection error, neither naming the database that was tried. Here the
database is named by backend, host, port, database and user, never the password.
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from unistatus.db.binding import schema_of
from unistatus.db.engine import parse_url
from unistatus.db.revisions import require_current_schema
from unistatus.db.search_path import installed_elsewhere, mixed_installations, where_it_is
from unistatus.db.tables import migration_control
from unistatus.errors import ConfigError, StorageError
from unistatus.redact import redact

__all__ = [
    "check_current_schema",
    "check_installed",
    "check_reachable",
    "describe",
    "missing_sqlite_file",
]

DEFAULT_PORTS = {"postgresql": 5432}
# psycopg's "connection failed: connection to server at "h" (ip), port N failed: REASON"
# already said by describe(): keep the REASON.
_DRIVER_PREFIX = re.compile(
    r"^(?:connection failed: )?(?:connection to server (?:at|on) .*? failed: )?"
)


def _url(url: str | sa.URL) -> sa.URL:
    return url if isinstance(url, sa.URL) else parse_url(url)


def _sqlite_path(url: sa.URL) -> str | None:
    """The file of a SQLite URL as given (relative to the working directory), or None."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return str(url.database)


def describe(url: str | sa.URL) -> str:
    """The database in words: "the SQLite file ./unistatus.db", "the postgresql
    database 'payments' on db1:5432 as 'app'". Never the password."""
    u = _url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(u)
        if path is None:
            return "an in-memory SQLite database"
        shown = path if path.startswith((".", "/")) else f"./{path}"
        return f"the SQLite file {shown}"
    # libpq's own parameters, when the URL gives them as such (?host=...&port=...).
    host = u.host or _query_value(u, "host")
    port = u.port or _query_value(u, "port") or DEFAULT_PORTS.get(backend)
    where = None
    if host and not host.startswith("/"):
        # Several hosts, or one with its port (?host=h:5433): as given, and the ports.
        given = "," in host or re.search(r":\d+$", host) is not None
        where = f"{host}:{port}" if not given else host
        if given and (u.port or _query_value(u, "port")):
            where += f" (port {port})"
    if where is None:
        socket = f" in {host}" if host else ""
        where = f"the local socket{socket} (port {port})"
    who = f" as {u.username!r}" if u.username else ""
    return redact(f"the {backend} database {u.database!r} on {where}{who}")


def _query_value(url: sa.URL, name: str) -> str | None:
    """A query parameter's value (several hosts: their list, as libpq tries them)."""
    value = url.query.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else ",".join(value)


def missing_sqlite_file(url: str | sa.URL) -> Path | None:
    """The file of a SQLite URL when it does not exist (connecting would create it
    empty), else None."""
    path = _sqlite_path(_url(url))
    if path is None or path.startswith("file:"):
        return None
    file = Path(path)
    return None if file.exists() else file


def _reason(exc: sa.exc.DBAPIError, url: sa.URL) -> str:
    lines = str(exc.orig).strip().splitlines()
    text = " ".join(_DRIVER_PREFIX.sub("", lines[0] if lines else "").split())
    if url.password:
        text = text.replace(str(url.password), "***")
    return redact(text or type(exc.orig).__name__)


def check_reachable(engine: sa.Engine) -> None:
    """Connect once; StorageError naming the database (and the driver's reason) if not."""
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as exc:
        raise StorageError(
            f"cannot connect to {describe(engine.url)}: {_reason(exc, engine.url)}"
        ) from None


def check_installed(engine: sa.Engine) -> None:
    """ConfigError unless unistatus's tables are there (`unistatus init` creates them)."""
    elsewhere = None
    try:
        with engine.connect() as conn:
            own = schema_of(engine)
            installed = sa.inspect(conn).has_table(migration_control.name, schema=own)
            if engine.dialect.name == "postgresql" and own is None and installed:
                from unistatus.db.catalog import metadata  # every table's module: lazy

                elsewhere = mixed_installations(conn, sorted(metadata.tables))
            elif not installed and engine.dialect.name == "postgresql":
                elsewhere = installed_elsewhere(conn, own) if own else where_it_is(conn)
    except sa.exc.DBAPIError as exc:
        raise StorageError(
            f"cannot read {describe(engine.url)}: {_reason(exc, engine.url)}"
        ) from None
    if elsewhere is not None:
        raise ConfigError(f"{describe(engine.url)}: {elsewhere}")
    if not installed:
        raise ConfigError(
            f"{describe(engine.url)} has no unistatus tables{_in_schema(engine)}: run `unistatus init` first, "
            "or name the database that has them (--database-url, UNISTATUS_DATABASE_URL)"
        )


def check_current_schema(engine: sa.Engine) -> None:
    """ConfigError (:class:`~unistatus.errors.SchemaOutdatedError`,
    :class:`~unistatus.errors.SchemaTooNewError`) unless the schema is at the revision
    this release installs: an older release's database must go through `unistatus init`
    first (this release would misread its mode and phase, and miss tables), a newer
    release's is not this one's to touch. A database failure: StorageError, as above."""
    try:
        require_current_schema(engine)
    except sa.exc.DBAPIError as exc:
        raise StorageError(
            f"cannot read {describe(engine.url)}: {_reason(exc, engine.url)}"
        ) from None


def _in_schema(engine: sa.Engine) -> str:
    own = schema_of(engine)
    return f" in schema {own!r}" if own else ""
