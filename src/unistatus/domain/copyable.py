"""Whether a legacy row's shared fields fit a unified row, and why not.

The unified row's columns take no NULL user, amount or currency, a user that is no
integer (SQLite keeps any value in any column), a currency of at most
:data:`MAX_CURRENCY_CHARS` characters and an amount in ``[0, 10**12)`` of at most 8
decimal places (NUMERIC(20, 8), ``ck_unified_amount``: a finer amount would be rounded,
the money changed, and the row reported by every check after). Real legacy data holds rows outside that (a NULL from an old
release, a refund kept as a negative amount): the backfill and the capture set them
aside in the quarantine with the reason, and the adapter refuses a change that would
have to create a unified row from one. The rule is written once, evaluated two ways:
in SQL (:func:`uncopyable_clauses`, set-based) and in Python (:func:`uncopyable`, on a
row in hand), the same tests in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

from unistatus.domain.amount_text import is_number_text, text_no_number
from unistatus.domain.consistency import SHARED_FIELDS
from unistatus.domain.inputs import MAX_AMOUNT_DECIMALS, MAX_AMOUNT_INTEGER_DIGITS

__all__ = [
    "AMOUNT_NAN",
    "AMOUNT_NOT_NUMBER",
    "AMOUNT_OUT_OF_RANGE",
    "AMOUNT_TOO_PRECISE",
    "CURRENCY_NOT_TEXT",
    "CURRENCY_TOO_LONG",
    "MAX_CURRENCY_CHARS",
    "NEGATIVE_AMOUNT",
    "USER_ID_NOT_INTEGER",
    "is_bytes",
    "is_number_text",
    "stored_as_bytes",
    "text_amount_number",
    "uncopyable",
    "uncopyable_clauses",
]

# The quarantine's reasons, besides null_<field> for each shared field.
CURRENCY_TOO_LONG = "currency_too_long"
AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
# PostgreSQL's NUMERIC takes 'NaN' (NUMERIC(20, 8) too), which no unified amount is and
# which Python's Decimal cannot order (``NaN >= bound`` raises, PostgreSQL's is true).
AMOUNT_NAN = "amount_nan"
AMOUNT_TOO_PRECISE = "amount_too_precise"
NEGATIVE_AMOUNT = "negative_amount"
# SQLite keeps any value in a BIGINT column ('x', 1.5); unified's user_id is an integer.
USER_ID_NOT_INTEGER = "user_id_not_integer"
# SQLite keeps a BLOB in any column (a writer that bound bytes): copied, the unified row
# held bytes its readers fail on ("must be real number, not bytes").
CURRENCY_NOT_TEXT = "currency_not_text"
AMOUNT_NOT_NUMBER = "amount_not_number"
MAX_CURRENCY_CHARS = 10  # unified_transactions.currency
AMOUNT_BOUND = 10**MAX_AMOUNT_INTEGER_DIGITS
BIGINT_BOUND = 2**63  # unified_transactions.user_id: [-2**63, 2**63)
_WHOLE_TEXT = re.compile(r"\s*[+-]?[0-9]+(?:\.0*)?\s*", re.ASCII)
_QUANTUM = Decimal(1).scaleb(-MAX_AMOUNT_DECIMALS)  # 0.00000001


def uncopyable_clauses(
    data: Mapping[str, sa.ColumnElement[Any]],
) -> list[tuple[sa.ColumnElement[bool], str]]:
    """Each way the shared fields ``data`` (SQL, by SHARED_FIELDS name) can fail a unified
    row, with its reason, in the order :func:`uncopyable` tests them."""
    out: list[tuple[sa.ColumnElement[bool], str]] = [
        (data[name].is_(None), f"null_{name}") for name in SHARED_FIELDS
    ]
    # Beyond BIGINT first (PostgreSQL's CAST of a larger NUMERIC fails; a CASE keeps the
    # order), then whole: CAST(x AS BIGINT) = x (SQLite compares a TEXT column's '42' as
    # the number it reads as).
    user = data["user_id"]
    number = sa.cast(user, sa.Numeric)
    # As literals: no driver binds 2**63 as an integer (SQLite reads it as a REAL).
    low, high = (sa.literal_column(str(b), sa.Numeric) for b in (-BIGINT_BOUND, BIGINT_BOUND))
    beyond = sa.or_(number < low, number >= high)
    not_whole = sa.case((beyond, sa.true()), else_=sa.cast(user, sa.BigInteger) != user)
    out.append((not_whole, USER_ID_NOT_INTEGER))
    # Before the length: SQLite's length() of a blob counts its bytes, as if text.
    out.append((stored_as_bytes(data["currency"]), CURRENCY_NOT_TEXT))
    out.append((sa.func.length(data["currency"]) > MAX_CURRENCY_CHARS, CURRENCY_TOO_LONG))
    # As a number whatever the legacy column's type (PostgreSQL's round takes NUMERIC;
    # SQLite compares a TEXT column's '3.00' with a number as text, past any bound).
    exact = sa.cast(data["amount"], sa.Numeric)
    bound = sa.literal(AMOUNT_BOUND, sa.Numeric(20, 8))
    # SQLite's CAST reads a blob as the text of its bytes (X'3130' as 10).
    out.append((stored_as_bytes(data["amount"]), AMOUNT_NOT_NUMBER))
    # SQLite's CAST reads text that is no number as its leading digits ('abc' as 0,
    # '12abc' as 12): such text is out of range before it is read as a number.
    out.append((text_no_number(data["amount"]), AMOUNT_OUT_OF_RANGE))
    # Before the bound: PostgreSQL orders NaN above every number. An infinity is judged
    # by the bound and the sign like any number ('Infinity' out of range, '-Infinity'
    # negative), in SQL and in Python alike.
    out.append((_NotANumber(exact), AMOUNT_NAN))
    out.append((exact >= bound, AMOUNT_OUT_OF_RANGE))
    out.append((exact < 0, NEGATIVE_AMOUNT))
    out.append((exact != sa.func.round(exact, MAX_AMOUNT_DECIMALS), AMOUNT_TOO_PRECISE))
    return out


def text_amount_number(value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """SQL: an amount kept as text (``value``) as the number the rule reads in it (a plain
    decimal: :mod:`unistatus.domain.amount_text`), NULL where it reads none ('abc', '',
    'NaN'): what a unified row is given and compared with, where the rule judges the text
    itself (a NULL there would be ``null_amount``)."""
    return sa.case((text_no_number(value), sa.null()), else_=sa.cast(value, sa.Numeric))


def uncopyable(data: Mapping[str, Any]) -> str | None:
    """Why a legacy row (its shared fields, by SHARED_FIELDS name) cannot make a unified
    row; None when it can."""
    for name in SHARED_FIELDS:
        if data.get(name) is None:
            return f"null_{name}"
    if not _integer(data["user_id"]):
        return USER_ID_NOT_INTEGER
    if is_bytes(data["currency"]):
        return CURRENCY_NOT_TEXT
    if len(str(data["currency"])) > MAX_CURRENCY_CHARS:
        return CURRENCY_TOO_LONG
    raw = data["amount"]
    if is_bytes(raw):
        return AMOUNT_NOT_NUMBER
    if isinstance(raw, str) and not is_number_text(raw):
        return AMOUNT_OUT_OF_RANGE
    try:
        amount = Decimal(str(raw))
    except InvalidOperation:
        return AMOUNT_OUT_OF_RANGE
    if amount.is_nan():
        return AMOUNT_NAN
    if amount >= AMOUNT_BOUND:
        return AMOUNT_OUT_OF_RANGE
    if amount < 0:
        return NEGATIVE_AMOUNT
    if amount != amount.quantize(_QUANTUM):
        return AMOUNT_TOO_PRECISE
    return None


def is_bytes(value: Any) -> bool:
    """Whether a value read from the database is a BLOB's (what :func:`stored_as_bytes`
    tells in SQL)."""
    return isinstance(value, bytes | bytearray | memoryview)


def _integer(value: Any) -> bool:
    """Whether ``value`` is a whole number within BIGINT, as :func:`uncopyable_clauses`
    judges it in SQL (text as SQLite reads it as a number: ' 42', '042', '7.0')."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return False
    if isinstance(value, str) and not _WHOLE_TEXT.fullmatch(value):
        return False  # SQLite's CAST reads digits only: not '1e3', '4_2', '٤٢'
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        return False
    return (
        number.is_finite()
        and number == number.to_integral_value()
        and -BIGINT_BOUND <= number < BIGINT_BOUND
    )


class _NotANumber(ColumnElement[bool]):
    """True for a NUMERIC 'NaN' (PostgreSQL's); false elsewhere: SQLite keeps a NaN
    as NULL, and its text 'NaN' is :func:`text_no_number`'s."""

    inherit_cache = True
    type = sa.Boolean()

    def __init__(self, value: sa.ColumnElement[Any]) -> None:
        self.value = value


@compiles(_NotANumber)
def _no_nan(_element: _NotANumber, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "1 = 0"


@compiles(_NotANumber, "postgresql")
def _postgres_nan(element: _NotANumber, compiler: SQLCompiler, **kw: Any) -> str:
    # PostgreSQL's NaN equals NaN (unlike IEEE's), so a plain comparison finds it.
    return f"({compiler.process(element.value, **kw)} = 'NaN'::numeric)"


class _StoredAsBytes(ColumnElement[bool]):
    """True for a value stored as a BLOB (SQLite, which keeps one in any column); false
    elsewhere, where a column's type decides what it holds."""

    inherit_cache = True
    type = sa.Boolean()

    def __init__(self, value: sa.ColumnElement[Any]) -> None:
        self.value = value


def stored_as_bytes(value: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """SQL: whether ``value`` is stored as a BLOB (SQLite; never elsewhere)."""
    return _StoredAsBytes(value)


@compiles(_StoredAsBytes)
def _no_bytes(_element: _StoredAsBytes, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "1 = 0"


@compiles(_StoredAsBytes, "sqlite")
def _sqlite_bytes(element: _StoredAsBytes, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(typeof({compiler.process(element.value, **kw)}) = 'blob')"
