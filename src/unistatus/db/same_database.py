"""Whether a connection reaches the database an engine works on.

An application hands the adapter its own connections (``connection=``): one of another
database on the same server (a second installation, a tenant's copy) was written as if
it were the adapter's, under that database's mode, and said success. PostgreSQL names
the database each connection is on (``current_database()``, the name a pooler's alias
stands for); SQLite, the file its main database is (``PRAGMA database_list``: a copy of
the file, a restored backup, a test fixture, is another database). Asked once per driver
connection.
"""

from __future__ import annotations

import os

import sqlalchemy as sa

from unistatus.errors import InputError

__all__ = ["database_of", "require_same_database"]

# conn.info's key (it lives as long as the driver's connection).
_KEY = "unistatus.current_database"
# SQLite's main database kept in memory (or a temporary file): no file to name.
IN_MEMORY = ":memory:"


def database_of(conn: sa.Connection) -> str | None:
    """The name of the database ``conn`` is on: PostgreSQL's name, SQLite's file (its
    real path; :data:`IN_MEMORY` without one); None for another backend."""
    if conn.dialect.name not in ("postgresql", "sqlite"):
        return None
    name = conn.info.get(_KEY)
    if name is None:
        name = conn.info[_KEY] = _asked(conn)
    return str(name)


def _asked(conn: sa.Connection) -> str:
    if conn.dialect.name == "postgresql":
        return str(conn.exec_driver_sql("SELECT current_database()").scalar())
    files = {row[1]: row[2] for row in conn.exec_driver_sql("PRAGMA database_list")}
    main = files.get("main")
    return os.path.realpath(main) if main else IN_MEMORY


def require_same_database(conn: sa.Connection, expected: str | None) -> None:
    """InputError when ``conn`` is on another database than ``expected`` (the
    adapter's, :func:`database_of` one of its engine's connections). One in memory is
    compared with nothing: another engine's connection could not reach it anyway."""
    if expected is None or expected == IN_MEMORY:
        return
    found = database_of(conn)
    if found is not None and found != expected:
        raise InputError(
            f"connection= is a connection to another database ({found!r}) than this "
            f"adapter's ({expected!r}); nothing was written: pass a connection of the "
            "adapter's database (or an adapter made for that one)"
        )
