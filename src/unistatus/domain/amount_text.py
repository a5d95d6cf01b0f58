"""An amount kept as text, as the copyable rule reads it: a number only as a plain decimal.

SQLite keeps text in any column, and an application may declare its amount column
``TEXT`` or ``VARCHAR`` (PostgreSQL too). Such text is a number only in the plain form
of :func:`is_number_text` (``'12.50'``, ``' 7 '``); any other (``'NaN'``, ``'1e3'``,
``'1_000'``, ``'abc'``) is no amount on every path alike: set aside by the copyable rule
(:mod:`unistatus.domain.copyable`), agreeing with nothing in the consistency rule
(:func:`unistatus.domain.consistency.same_value`, and the check's SQL). One rule, in
Python (:func:`is_number_text`) and in SQL (:func:`text_no_number`).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

__all__ = ["is_number_text", "text_no_number"]

# A number as text, as :func:`text_no_number` judges one in SQL (SQLite's trim strips
# spaces only; no exponent: SQLite's CAST reads '1e3' as 1). One rule on every database:
# PostgreSQL's cast would read 'NaN', 'Infinity', '1e3' and fail on 'abc', Python's
# Decimal reads them too; text in an amount column is a number only in this plain form.
_NUMBER_TEXT = re.compile(r" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+) *", re.ASCII)
# The same, as a PostgreSQL regular expression (brackets: no backslash to escape).
_PG_NUMBER_TEXT = "^ *[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+) *$"


def is_number_text(value: str) -> bool:
    """Whether text kept in an amount column is a number by the rule (a plain decimal,
    spaces around): what :func:`text_no_number` tells in SQL."""
    return _NUMBER_TEXT.fullmatch(value) is not None


def text_no_number(value: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """SQL: whether ``value`` is kept as text that is no plain decimal (false for a value
    of a number type; not true for NULL)."""
    return _TextNoNumber(value)


class _TextNoNumber(ColumnElement[bool]):
    """True for a value kept as text that is no plain decimal (:func:`is_number_text`):
    SQLite keeps text in any column, PostgreSQL in a column of a text type; false
    elsewhere, where a column's type holds numbers only."""

    inherit_cache = True
    type = sa.Boolean()

    def __init__(self, value: sa.ColumnElement[Any]) -> None:
        self.value = value


@compiles(_TextNoNumber)
def _no_text(_element: _TextNoNumber, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "1 = 0"


@compiles(_TextNoNumber, "postgresql")
def _postgres_text_no_number(element: _TextNoNumber, compiler: SQLCompiler, **kw: Any) -> str:
    # By the stored type (pg_typeof), not the expression's: statements read the amount
    # as NUMERIC (type_coerce, no SQL of its own). Before the casts of the later tests
    # in the CASE, which fail on such text ('abc') or read it ('NaN', '1e3').
    value = compiler.process(element.value, **kw)
    return (
        f"(pg_typeof({value}) IN ('text'::regtype, 'character varying'::regtype, "
        f"'character'::regtype) AND NOT ({value})::text ~ '{_PG_NUMBER_TEXT}')"
    )


@compiles(_TextNoNumber, "sqlite")
def _sqlite_text_no_number(element: _TextNoNumber, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    text = f"trim({value})"
    # Not [ ]*[+-]?digits[.digits] (_NUMBER_TEXT): a character of no number, a second
    # point, a sign after the first character, or no digit at all.
    return (
        f"(typeof({value}) = 'text' AND ({text} GLOB '*[^0-9.+-]*' OR {text} GLOB '*.*.*' "
        f"OR {text} GLOB '?*[+-]*' OR NOT {text} GLOB '*[0-9]*'))"
    )
