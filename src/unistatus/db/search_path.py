"""Where a bare table name goes on PostgreSQL: the connection's ``search_path``.

The default layout (``schema = "public"``) names unistatus's tables bare, and the
``schema`` setting says they are in ``public``. A role whose ``search_path`` finds another
schema first (``"$user", public`` with a schema named after the role, the most common)
made ``unistatus init`` install a second set of tables in that schema, and every command
of that role used them: an operator's mode switch or rollback in one installation, the
adapters of another role reading the other. So, in the default layout:

- what creates our tables (``init``, a migration) refuses unless the first schema of the
  search_path is ``public`` (:func:`require_public_first`);
- a database whose tables the search_path does not reach says where they are
  (:func:`where_they_are`), not "run `unistatus init`".

Legacy tables named without a schema are the application's and are found as it finds
them, through the same search_path (README, "Your own legacy tables").
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.config import DEFAULT_SCHEMA
from unistatus.errors import ConfigError

__all__ = ["require_public_first", "search_path", "where_they_are"]

_WHERE = sa.text("SELECT current_schema(), current_setting('search_path')")
_HOLDING = sa.text(
    "SELECT schemaname FROM pg_catalog.pg_tables WHERE tablename = :name ORDER BY schemaname"
)


def search_path(conn: sa.Connection) -> tuple[str | None, str]:
    """The schema a bare ``CREATE TABLE`` goes to (None: none of the search_path exists)
    and the search_path itself."""
    current, path = conn.execute(_WHERE).one()
    return current, str(path)


def require_public_first(conn: sa.Connection) -> None:
    """ConfigError unless bare names are created in ``public`` on ``conn``."""
    current, path = search_path(conn)
    if current == DEFAULT_SCHEMA:
        return
    if current is None:
        where = f"this connection's search_path ({path}) names no schema that exists"
        fix = "put public in the role's search_path"
    else:
        where = (
            f"unistatus would create its tables in schema {current}, the first of this "
            f"connection's search_path ({path}) that exists"
        )
        fix = (
            f'set schema = "{current}" (UNISTATUS_SCHEMA) to install them there, or put '
            "public first in the role's search_path"
        )
    raise ConfigError(
        f"{where}, but the schema setting says public: {fix} "
        "(ALTER ROLE ... SET search_path = public, ...); nothing was created"
    )


def where_they_are(conn: sa.Connection, table: str) -> str | None:
    """Why the bare name ``table`` is not found on ``conn`` when the search_path is the
    cause: the schemas that hold it, or a search_path that names no schema; None when
    neither (it is nowhere: not installed)."""
    current, path = search_path(conn)
    holding = list(conn.execute(_HOLDING, {"name": table}).scalars())
    if holding:
        fix = (
            "put public in the role's search_path"
            if DEFAULT_SCHEMA in holding
            else f'set schema = "{holding[0]}" (UNISTATUS_SCHEMA) to use them there'
        )
        return (
            f"unistatus's tables are in schema {', '.join(holding)}, which this connection's "
            f"search_path ({path}) does not reach: {fix}"
        )
    if current is None:
        return f"this connection's search_path ({path}) names no schema that exists"
    return None
