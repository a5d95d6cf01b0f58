"""SQLite's operations (:class:`SQLiteOps`): one write lock for the whole database,
taken up front (``BEGIN IMMEDIATE``), so a write needs no mode lock of its own; the
writer mark kept in a table (:mod:`unistatus.db.writer_mark`); no timestamp type.

The operations and their generic behaviour: :mod:`unistatus.db.dialect_base`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from unistatus.db import writer_mark
from unistatus.db.dialect_base import DialectOps

__all__ = ["SQLiteOps"]


class SQLiteOps(DialectOps):
    name = "sqlite"
    # SQLite keeps NUMERIC as a 64-bit float: beyond 15 significant digits it rounds.
    exact_numeric_digits = 15
    # One writer at a time anyway: queue in order rather than race for the file lock.
    default_write_concurrency = 1

    def _prepare_write(self, conn: sa.Connection) -> sa.Connection:
        # The whole database is one lock: BEGIN IMMEDIATE serialises writers (mode
        # switches included), so no extra lock is needed for mode changes.
        return conn.execution_options(sqlite_begin="IMMEDIATE")

    def mark_writer(self, conn: sa.Connection) -> None:
        _unless_no_mark_table(conn, writer_mark.mark_row())

    def unmark_writer(self, conn: sa.Connection) -> None:
        _unless_no_mark_table(conn, writer_mark.unmark_row())

    def end_writer_mark(self, conn: sa.Connection) -> None:
        self.unmark_writer(conn)

    def insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects import sqlite  # here: PostgreSQL's processes need it not

        return sqlite.insert(table)

    def seconds_before(
        self, moment: datetime, seconds: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[Any]:
        # SQLite has no timestamp type: produce the text SQLAlchemy itself stores
        # ("YYYY-MM-DD HH:MM:SS.ffffff", naive UTC) so values sort and parse alike.
        base = moment.strftime("%Y-%m-%d %H:%M:%S")
        shift = sa.literal("-") + sa.cast(seconds, sa.String) + sa.literal(" seconds")
        return sa.func.strftime("%Y-%m-%d %H:%M:%S.000000", base, shift)


def _unless_no_mark_table(conn: sa.Connection, statement: Any) -> None:
    """Run a SQLite mark statement; a schema older than revision 0011 has no mark table
    (and no capture triggers to tell), which is no error."""
    try:
        conn.execute(statement)
    except sa.exc.OperationalError as exc:
        if "no such table" not in str(exc.orig):
            raise
