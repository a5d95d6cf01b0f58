"""The archive's reading of live rows: a legacy table's rows in key order, each column
as the archive keeps it (:func:`live_lines`), for the export, the verification and the
plan's measure of the export's rate."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from unistatus.db.sqlite_times import strictly
from unistatus.migration.archive_format import (
    JSON_TEXT,
    ColumnInfo,
    json_as_text,
    row_encoder,
    textual,
)

__all__ = ["BATCH_ROWS", "AsStoredOnError", "live_lines"]

# Rows fetched at a time from the server-side cursor.
BATCH_ROWS = 2_000


def _ordered_select(table: sa.Table, columns: Sequence[ColumnInfo], dialect: str) -> sa.Select[Any]:
    cols = [table.c[c.name] for c in columns]
    order = [table.c[c.name] for c in columns if c.primary_key] or cols
    read = [_read(table.c[c.name], c.kind, dialect).label(c.name) for c in columns]
    return sa.select(*read).order_by(*order)


def _read(column: sa.Column[Any], kind: str, dialect: str) -> sa.ColumnElement[Any]:
    """A column as the archive reads it: by its own type (:class:`AsStoredOnError`); a
    JSON column as its text (:data:`JSON_TEXT`), where SQL NULL and JSON null differ;
    on PostgreSQL, a column of a type the archive has no kind of (an array, an interval,
    money, inet, ...) as the database's own text of it, which its input reads back
    exactly (Python's str() of the driver's value lost an interval's months and wrote an
    array no restore could read)."""
    if kind == JSON_TEXT:
        return json_as_text(column)
    if kind == "string" and dialect == "postgresql" and not textual(column.type):
        return sa.cast(column, sa.Text)
    return sa.type_coerce(column, AsStoredOnError(column.type))


class AsStoredOnError(sa.types.TypeDecorator[Any]):
    """A column read by its own type, but a value that type cannot read (SQLite keeps
    'abc' in a NUMERIC column) as the database gave it, never a failed export."""

    impl = sa.types.NullType
    cache_ok = True

    def __init__(self, inner: sa.types.TypeEngine[Any]) -> None:
        super().__init__()
        self.inner = inner

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        return self.inner

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> Any:
        own = strictly(self.inner.dialect_impl(dialect))  # the value stored, not a reading
        process = own.result_processor(dialect, coltype)
        if process is None:
            return None

        def tolerant(value: Any) -> Any:
            try:
                return process(value)
            except (TypeError, ValueError, ArithmeticError):
                return value

        return tolerant


def live_lines(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[ColumnInfo],
    *,
    limit: int | None = None,
) -> Iterator[bytes]:
    """The archive lines of ``table``'s rows in key order (the first ``limit`` only); read
    within :func:`~unistatus.db.infinite_times.infinite_times_as_text` (the caller's: a
    generator's own block would outlive an error of its consumer)."""
    line = row_encoder([(c.kind, c.timezone) for c in columns])
    select = _ordered_select(table, columns, conn.dialect.name)
    if limit is not None:
        select = select.limit(limit)
    # Streamed by this statement's options (the connection's own would stay set, and a
    # transaction it begins would send its first statements through a server-side
    # cursor too: bounded_reads's SET LOCAL).
    for row in conn.execute(select, execution_options={"yield_per": BATCH_ROWS}):
        yield line(row)
