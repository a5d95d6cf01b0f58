"""Whether a connection reaches the database an engine works on.

An application hands the adapter its own connections (``connection=``): one of another
database on the same server (a second installation, a tenant's copy) was written as if
it were the adapter's, under that database's mode, and said success. PostgreSQL names
the database each connection is on (``current_database()``, asked once per driver
connection; the name a pooler's alias stands for); SQLite's file is the caller's
business (its connections are made from the URL the adapter was given).
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.errors import InputError

__all__ = ["database_of", "require_same_database"]

# conn.info's key (it lives as long as the driver's connection).
_KEY = "unistatus.current_database"


def database_of(conn: sa.Connection) -> str | None:
    """The name of the database ``conn`` is on (PostgreSQL), else None."""
    if conn.dialect.name != "postgresql":
        return None
    name = conn.info.get(_KEY)
    if name is None:
        name = conn.info[_KEY] = str(conn.exec_driver_sql("SELECT current_database()").scalar())
    return str(name)


def require_same_database(conn: sa.Connection, expected: str | None) -> None:
    """InputError when ``conn`` is on another database than ``expected`` (the
    adapter's, :func:`database_of` one of its engine's connections)."""
    if expected is None:
        return
    found = database_of(conn)
    if found is not None and found != expected:
        raise InputError(
            f"connection= is a connection to another database ({found!r}) than this "
            f"adapter's ({expected!r}); nothing was written: pass a connection of the "
            "adapter's database (or an adapter made for that one)"
        )
