"""Statements built with SQLAlchemy Core, compiled once, executed many times.

:class:`Prepared` keeps a statement's compiled SQL and bind processors and runs it in the
caller's SQLAlchemy transaction (straight on the DBAPI cursor on psycopg, for the
adapter's hot path). Why, and what each method keeps: docs/adapter.md. The SQL names our
tables in the schema of the engine or connection it is prepared for (the translate map
is rendered into it: the driver runs it as it is, on any connection). A connection of
another driver (an application's psycopg2 connection given to an adapter on psycopg 3)
runs the statement through SQLAlchemy, compiled for that connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from unistatus.db.binding import schema_of, translate_map

__all__ = ["Prepared"]

# Drivers whose values come back as finished Python objects (no result processing).
_RAW_DRIVERS = frozenset({"psycopg"})


class Prepared:
    """One Core statement, compiled once for the dialect and schema of ``bind``."""

    def __init__(self, statement: Any, bind: sa.Engine | sa.Connection) -> None:
        dialect = bind.dialect
        self.driver = dialect.driver
        self.statement = statement
        names = translate_map(schema_of(bind))
        rendered = {"schema_translate_map": names, "render_schema_translate": True}
        self.compiled = statement.compile(dialect=dialect, **(rendered if names else {}))
        self.raw = dialect.driver in _RAW_DRIVERS and not self.compiled.positional
        self.processors: dict[str, Callable[[Any], Any]] = {}
        defaults: dict[str, Any] = {}
        for param, name in self.compiled.bind_names.items():
            processor = param.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor
            if not param.required:
                defaults[name] = param.effective_value
        # Values bound at build time (literals), processed once.
        self.defaults: dict[str, Any] = {}
        self.defaults = self.bind(defaults)

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The driver's parameters: the build-time values plus ``values``, processed."""
        params = {**self.defaults, **values}
        for name, processor in self.processors.items():
            if name in values:
                params[name] = processor(values[name])
        return params

    def execute(self, conn: sa.Connection, values: dict[str, Any]) -> sa.CursorResult[Any]:
        """Run with ``values`` (by bind name); the driver's result, rowcount kept."""
        if conn.dialect.driver != self.driver:
            return conn.execute(
                self.statement, dict(values), execution_options={"preserve_rowcount": True}
            )
        params = self.compiled.construct_params(values)
        for name, processor in self.processors.items():
            if name in params and params[name] is not None:
                params[name] = processor(params[name])
        args: Any = (
            tuple(params[name] for name in self.compiled.positiontup or ())
            if self.compiled.positional
            else params
        )
        return conn.exec_driver_sql(
            self.compiled.string, args, execution_options={"preserve_rowcount": True}
        )

    def rows(self, conn: sa.Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run with ``values`` (by bind name) in ``conn``'s transaction; every row.

        For statements that return rows (SELECT, or DML with RETURNING).
        """
        if not self.raw or conn.dialect.driver != self.driver:
            return [tuple(row) for row in conn.execute(self.statement, dict(values))]
        params = self.bind(values)
        sql = self.compiled.string
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            # Every hot-path statement returns rows (SELECT or RETURNING); asking the
            # cursor for its description first would build column objects for nothing.
            rows: list[Any] = list(cursor.fetchall())
        except Exception as exc:
            # SQLAlchemy's own handling: DBAPIError, and the pool invalidated on a
            # disconnect (the adapter retries a write whose connection was lost).
            conn._handle_dbapi_exception(exc, sql, params, cursor, None)
        except BaseException as exc:
            # Ctrl-C (a cancellation) inside the statement. psycopg may have left the
            # connection mid-command (the statement sent, its result not read): unusable,
            # so SQLAlchemy drops it, and the rollback on the way out neither fails on it
            # ("another command is already in progress") nor takes the interrupt's place.
            # A connection left idle stays as it is: a caller's transaction is the caller's.
            if _mid_command(conn):
                conn._handle_dbapi_exception(exc, sql, params, cursor, None)
            raise
        cursor.close()
        return rows


def _mid_command(conn: sa.Connection) -> bool:
    """Whether the driver's connection is in the middle of a command (psycopg's
    transaction status ACTIVE: a statement sent, its result not read)."""
    info = getattr(conn.connection.dbapi_connection, "info", None)
    status = getattr(info, "transaction_status", None)
    return getattr(status, "name", None) == "ACTIVE"
