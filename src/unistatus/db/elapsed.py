"""Whole microseconds from a moment to a timestamp column, computed by the database.

For grouping rows by time in SQL (the history's steps: :mod:`unistatus.observe.history`)
with integer arithmetic, so that a row on a step's edge falls on the same side on every
backend. PostgreSQL subtracts the timestamps (an exact interval); SQLite has no
timestamp type, and reads the text SQLAlchemy stores ("YYYY-MM-DD HH:MM:SS.ffffff",
naive UTC): whole seconds from ``strftime('%s')``, the microseconds from the fraction
(SQLite's own date functions keep milliseconds).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["microseconds_after"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE = timedelta(microseconds=1)


class _MicrosecondsAfter(FunctionElement[int]):
    """Arguments: the column, the moment (a timestamp), the moment in microseconds
    since the epoch (for a backend that counts instead of subtracting)."""

    name = "microseconds_after"
    type = sa.BigInteger()
    inherit_cache = True


def microseconds_after(moment: datetime, column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    """``column - moment`` in whole microseconds (negative: before it); ``moment`` aware."""
    return _MicrosecondsAfter(
        column,
        sa.literal(moment, sa.DateTime(timezone=True)),
        sa.literal((moment - _EPOCH) // _ONE, sa.BigInteger),
    )


@compiles(_MicrosecondsAfter)
def _unknown(element: _MicrosecondsAfter, compiler: SQLCompiler, **kw: Any) -> str:
    raise sa.exc.CompileError(f"microseconds_after is not implemented for {compiler.dialect.name}")


@compiles(_MicrosecondsAfter, "postgresql")
def _postgresql(element: _MicrosecondsAfter, compiler: SQLCompiler, **kw: Any) -> str:
    column, moment = (compiler.process(c, **kw) for c in list(element.clauses)[:2])
    return f"CAST(round(EXTRACT(EPOCH FROM {column} - {moment}) * 1000000) AS BIGINT)"


@compiles(_MicrosecondsAfter, "sqlite")
def _sqlite(element: _MicrosecondsAfter, compiler: SQLCompiler, **kw: Any) -> str:
    clauses = list(element.clauses)
    column, since_epoch = compiler.process(clauses[0], **kw), compiler.process(clauses[2], **kw)
    # The seconds without the fraction: SQLite rounds a time to milliseconds (.9999995
    # would be the next second). The fraction padded: one written shorter, or none,
    # reads as what it means.
    return (
        f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
        f" + CAST(substr({column} || '000000', 21, 6) AS INTEGER) - {since_epoch})"
    )
