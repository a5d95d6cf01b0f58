"""The rules every value a caller passes must meet, written once.

The library (:class:`unistatus.DualWriteAdapter`) and the HTTP API
(:mod:`unistatus.api.models`) both call these, so a value is refused the same way wherever
it comes from: an :class:`~unistatus.errors.InputError` (422 at the API) raised before
any database work. A value the database could not store as it is (a number JSON has no
word for, a lone surrogate, a NUL, an integer past BIGINT, a text past its column) would
otherwise fail *in* the database and be counted as a write failure, which is what the
error-rate alerts, ``/health`` and the phase gates watch: bad input must never look like
an outage.

Numbers written as text take ASCII digits only: ``Decimal`` and ``int`` also read
Arabic-Indic and full-width digits, underscores and surrounding whitespace, none of
which an amount or an id should ever contain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from unistatus.domain.marks import MARKS_KEY, imitated_mark
from unistatus.errors import InputError

__all__ = [
    "LegacyColumn",
    "MAX_ACTOR_CHARS",
    "MAX_AMOUNT_DECIMALS",
    "MAX_AMOUNT_INTEGER_DIGITS",
    "MAX_BIGINT",
    "MAX_KEY_CHARS",
    "MAX_METADATA_CHARS",
    "MAX_METADATA_DEPTH",
    "MAX_REASON_CHARS",
    "check_actor",
    "check_amount",
    "check_currency",
    "check_flag",
    "check_key",
    "check_legacy_values",
    "check_metadata",
    "check_reason",
    "check_stored_value",
    "require_legacy_values",
    "check_text",
    "check_user_id",
    "is_header_text",
    "printable_problem",
    "shown",
]

MAX_BIGINT = 2**63 - 1
# status_history.triggered_by and unistatus_control_log.actor are VARCHAR(128).
MAX_ACTOR_CHARS = 128
# A reason is a sentence or a ticket reference, not a document (the column is TEXT).
MAX_REASON_CHARS = 1000
MAX_METADATA_CHARS = 16_384
# Levels of objects and arrays in metadata, the outer object being the first: far above
# any real use, far below where a JSON parser runs out of stack (see check_metadata).
MAX_METADATA_DEPTH = 512
# unistatus_idempotency_keys.key is VARCHAR(255).
MAX_KEY_CHARS = 255
# unified_transactions.amount and the legacy amounts are NUMERIC(20, 8).
MAX_AMOUNT_INTEGER_DIGITS = 12
MAX_AMOUNT_DECIMALS = 8

AMOUNT_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
CURRENCY = re.compile(r"[A-Z][A-Z0-9]{2,9}")
# Control characters other than tab, newline and carriage return, and surrogates
# (which UTF-8 cannot encode: the driver or the database would fail on them).
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# Also refused in what unistatus records of a change (a reason, who made it): C1
# controls (U+009B is a terminal's CSI) and the bidirectional embeddings and overrides
# (U+202E shows the text after it reversed). Not in the application's own values
# (legacy_values, metadata), which are kept as given; the isolates (U+2066-2069) of
# mixed-direction text are fine.
_SPOOFING = re.compile("[\x80-\x9f\u202a-\u202e]")
# What ends a line: a one-line label (who made a change) holds none, so it cannot show
# as two entries of the history.
_LINE_BREAK = re.compile("[\n\r\x85\u2028\u2029]")
# An escaped NUL in serialised JSON: \u0000 after an even number of backslashes.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_SHOWN_CHARS = 40
_TOO_DEEP = f"metadata is nested too deeply (at most {MAX_METADATA_DEPTH} levels)"
# Printable ASCII with no blank at either end: what goes in an HTTP header unchanged
# (idempotency keys, API tokens). Stricter than stored text (:func:`printable_problem`).
_HEADER_TEXT = re.compile(r"[!-~](?:[ -~]*[!-~])?")


def shown(value: object) -> str:
    """``repr(value)`` cut to a length an error message can carry."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def printable_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as it is, or None."""
    bad = _UNPRINTABLE.search(text)
    if bad is None:
        return None
    char = bad.group()
    if "\ud800" <= char <= "\udfff":
        return f"contains a lone surrogate (U+{ord(char):04X}), which is not valid Unicode text"
    return f"contains the control character U+{ord(char):04X}"


def is_header_text(value: object, *, spaces: bool = True) -> bool:
    """Whether ``value`` goes in an HTTP header unchanged: printable ASCII, not empty,
    no blank at either end (and none at all without ``spaces``, as a token)."""
    return (
        isinstance(value, str)
        and _HEADER_TEXT.fullmatch(value) is not None
        and (spaces or " " not in value)
    )


def check_key(key: object, max_chars: int = MAX_KEY_CHARS) -> str:
    """An idempotency key: header text of at most ``max_chars`` characters."""
    if not is_header_text(key):
        raise InputError(
            "an idempotency key must be printable ASCII without surrounding blanks, "
            f"1 to {max_chars} characters (a UUID is a good one), got {key!r}"[:400]
        )
    assert isinstance(key, str)
    if len(key) > max_chars:
        raise InputError(f"an idempotency key has at most {max_chars} characters, got {len(key)}")
    return key


def check_text(
    name: str, value: object, max_chars: int, *, required: bool = True, one_line: bool = False
) -> str | None:
    """A bounded, printable text (tabs and line breaks allowed, the latter not in a
    ``one_line`` text: a label); None when not required."""
    if value is None or value == "":
        if required:
            raise InputError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise InputError(f"{name} is required (it is blank)")
    if len(value) > max_chars:
        raise InputError(f"{name} is too long: {len(value):,} characters (at most {max_chars:,})")
    problem = printable_problem(value)
    if problem:
        raise InputError(f"{name} {problem}")
    spoof = _SPOOFING.search(value)
    if spoof:
        kind = "C1 control" if spoof.group() < "\xa0" else "bidirectional control"
        raise InputError(f"{name} contains the {kind} U+{ord(spoof.group()):04X}")
    if one_line and _LINE_BREAK.search(value):
        raise InputError(f"{name} is one line: it holds a line break")
    return value


def check_flag(name: str, value: object) -> bool:
    """A yes or no that is a ``bool``: ``"false"`` or ``1`` would be taken as true."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {shown(value)}")
    return value


def check_reason(value: object) -> str:
    """Why a change is made (recorded with it): required, stripped, at most
    ``MAX_REASON_CHARS`` printable characters."""
    text = check_text(
        "reason", value.strip() if isinstance(value, str) else value, MAX_REASON_CHARS
    )
    assert text is not None
    return text


def check_actor(value: object) -> str:
    """Who makes a change (recorded with it): required, stripped, at most
    ``MAX_ACTOR_CHARS`` printable characters (the columns are VARCHAR(128))."""
    text = check_text(
        "actor", value.strip() if isinstance(value, str) else value, MAX_ACTOR_CHARS, one_line=True
    )
    assert text is not None
    return text


def check_user_id(user_id: object) -> int:
    if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 < user_id <= MAX_BIGINT:
        raise InputError(
            f"user_id must be a positive integer below 2**63 (a BIGINT), got {shown(user_id)}"
        )
    return user_id


def check_amount(amount: object, exact_digits: int | None = None) -> Decimal:
    """A positive decimal that NUMERIC(20, 8) stores exactly: Decimal, int or ASCII text."""
    if isinstance(amount, float | bool):
        raise InputError(
            f"amount must be exact: pass a Decimal or a decimal string, not {type(amount).__name__}"
        )
    if isinstance(amount, str):
        if not AMOUNT_TEXT.fullmatch(amount) or len(amount) > 64:
            raise InputError(
                f"amount {shown(amount)} is not a decimal number: write ASCII digits with an "
                'optional decimal point, e.g. "10.50"'
            )
        value = Decimal(amount)
    elif isinstance(amount, int | Decimal):
        value = Decimal(amount)
    else:
        raise InputError(
            f"amount must be a Decimal, an int or a decimal string, not {type(amount).__name__}"
        )
    if not value.is_finite():
        raise InputError(f"amount {shown(amount)} is not a finite decimal number")
    if value <= 0:
        raise InputError(f"amount must be positive, got {shown(amount)}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_AMOUNT_DECIMALS:
        raise InputError(
            f"amount {shown(amount)} has more than {MAX_AMOUNT_DECIMALS} decimal places"
        )
    if value >= Decimal(10) ** MAX_AMOUNT_INTEGER_DIGITS:
        raise InputError(
            f"amount {shown(amount)} is too large "
            f"(at most {MAX_AMOUNT_INTEGER_DIGITS} integer digits)"
        )
    if exact_digits is not None and len(value.normalize().as_tuple().digits) > exact_digits:
        raise InputError(
            f"amount {value} has more than {exact_digits} significant digits, which this "
            "database cannot store exactly (SQLite keeps NUMERIC as a float; use PostgreSQL)"
        )
    return value


def check_currency(currency: object) -> str:
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise InputError(
            f"currency must be an upper-case code like USD or USDT, got {shown(currency)}"
        )
    return currency


def check_metadata(metadata: object) -> dict[str, Any] | None:
    """A JSON object the database stores as it is, or None.

    One rule for the library and the HTTP API (whose request models call this), the
    stricter of the two where they differed:

    - strict JSON only: no NaN or Infinity (``1e400`` parses to Infinity), no lone
      surrogates (not encodable as UTF-8), no NUL (PostgreSQL's jsonb refuses it), at
      most ``MAX_METADATA_CHARS`` characters once serialised;
    - every key, at every level, is text. The API's model refused other keys; the
      library wrote them as text, so ``1`` came back as ``"1"`` and ``{1: .., "1": ..}``
      stored one key twice;
    - at most ``MAX_METADATA_DEPTH`` levels of nesting. The API's JSON parser refused
      deeper bodies wherever the server's stack ran out (near 960 levels); the library
      took about as deep as its caller's stack allowed. One fixed bound holds for both;
    - no top-level key ``MARKS_KEY`` (``"unistatus"``): unistatus keeps its own marks of
      a history row there (:mod:`unistatus.domain.marks`); one the caller passed would
      read as unistatus's. Nested deeper, under a key of the caller's, it is the caller's.
      Nor the shapes unistatus's marks had at the top level (:func:`imitated_mark`: a
      ``capture`` of ``bypass`` or ``catch_up``; the old ``flag``, ``legacy_error``,
      ``repair_queued: true`` triple): `tx show` would read them as unistatus's.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InputError(f"metadata must be a JSON object (a dict), not {type(metadata).__name__}")
    if MARKS_KEY in metadata:
        raise InputError(
            f"metadata: the key {MARKS_KEY!r} is reserved (unistatus keeps its own marks "
            "of a history row there); use another key"
        )
    if (imitation := imitated_mark(metadata)) is not None:
        raise InputError(
            f"metadata: {imitation} reads as unistatus's own mark of a history row; "
            "use other keys or values"
        )
    try:
        text = json.dumps(metadata, allow_nan=False, ensure_ascii=False)
    except ValueError as exc:
        if "JSON compliant" in str(exc):
            raise InputError(
                "metadata must be strict JSON: NaN, Infinity and numbers too large for a "
                "double (like 1e400) have no JSON form"
            ) from None
        raise InputError(f"metadata must be JSON-serialisable: {exc}") from None
    except RecursionError:
        raise InputError(_TOO_DEEP) from None
    except TypeError as exc:
        raise InputError(f"metadata must be JSON-serialisable: {exc}") from None
    if len(text) > MAX_METADATA_CHARS:
        raise InputError(
            f"metadata is too large: {len(text):,} characters of JSON "
            f"(at most {MAX_METADATA_CHARS:,})"
        )
    problem = _shape_problem(metadata)
    if problem:
        raise InputError(problem)
    if _JSON_NUL.search(text):
        raise InputError("metadata must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"metadata contains a lone surrogate (U+{ord(text[exc.start]):04X}), "
            "which is not valid Unicode text"
        ) from None
    return metadata


def _shape_problem(metadata: dict[Any, Any]) -> str | None:
    """A key that is not text, or nesting past the bound; level by level, no recursion.

    Called once ``json.dumps`` took the value: no cycles, at most ``MAX_METADATA_CHARS``
    containers.
    """
    level: list[Any] = [metadata]
    depth = 1
    while level:
        if depth > MAX_METADATA_DEPTH:
            return _TOO_DEEP
        inner: list[Any] = []
        for value in level:
            if isinstance(value, dict):
                for key in value:
                    if not isinstance(key, str):
                        return (
                            f"metadata keys must be text (a JSON object's keys are), got the "
                            f"key {shown(key)}"
                        )
                items = value.values()
            else:
                items = value
            inner.extend(v for v in items if isinstance(v, dict | list | tuple))
        level = inner
        depth += 1
    return None


@dataclass(frozen=True)
class LegacyColumn:
    """What a value for one of the application's own legacy columns must be.

    ``python_type`` is the reflected column's (None: not known, any value is passed on);
    ``required``: NOT NULL without a default, so a new legacy row needs a value for it;
    ``generated``: how the database fills it (GENERATED ALWAYS), so no value may be given.
    """

    python_type: type[Any] | None
    nullable: bool
    required: bool
    max_chars: int | None = None
    # The declared integer type's bounds: (name, lowest, highest); None: unchecked.
    int_range: tuple[str, int, int] | None = None
    # NUMERIC(precision, scale) when both are declared.
    digits: tuple[int, int] | None = None
    # E.g. "GENERATED ALWAYS AS IDENTITY": the database refuses any value for it.
    generated: str | None = None
    # An enum type's labels (PostgreSQL): the only values it takes.
    labels: tuple[str, ...] | None = None
    # Refuse what NUMERIC(precision, scale) would round (not only what overflows it).
    exact: bool = False
    # A JSON column: its value is written as strict JSON, which it must have.
    is_json: bool = False
    # A time without a time zone (TIMESTAMP): a time with an offset is stored as its UTC
    # time (PostgreSQL converted it to the session's zone, SQLite dropped the offset).
    local_time: bool = False


def check_legacy_values(
    values: object, columns: Mapping[str, LegacyColumn], owned: Collection[str], table: str
) -> dict[str, Any]:
    """``legacy_values`` of a create: columns of ``table`` that unistatus does not own,
    each value of the column's type. InputError naming the column otherwise."""
    if not isinstance(values, dict):
        raise InputError(f"legacy_values must be a dict of column: value, got {shown(values)}")
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in owned:
            raise InputError(
                f"legacy_values cannot set {name!r}: unistatus writes that column of {table!r}"
            )
        column = columns.get(name) if isinstance(name, str) else None
        if column is None:
            settable = sorted(n for n, c in columns.items() if c.generated is None)
            raise InputError(
                f"legacy table {table!r} has no column {shown(name)} (legacy_values may set: "
                f"{', '.join(settable) or 'none'})"
            )
        if column.generated is not None:
            raise InputError(
                f"legacy_values cannot set {name!r}: that column of {table!r} is "
                f"{column.generated}, the database fills it"
            )
        problem = _legacy_value_problem(value, column)
        if problem:
            raise InputError(f"legacy_values[{name!r}] for {table!r}: {problem}")
        if column.local_time and isinstance(value, datetime) and value.utcoffset() is not None:
            try:
                value = value.astimezone(UTC).replace(tzinfo=None)
            except OverflowError:
                raise InputError(
                    f"legacy_values[{name!r}] for {table!r}: {value.isoformat()} is past "
                    "the calendar in UTC, which a column without a time zone stores"
                ) from None
        out[name] = value
    return out


def require_legacy_values(
    values: Mapping[str, Any], columns: Mapping[str, LegacyColumn], table: str
) -> None:
    """InputError unless every NOT NULL column without a default has a value: a new
    legacy row of ``table`` would otherwise be refused by the database."""
    missing = sorted(name for name, c in columns.items() if c.required and name not in values)
    if missing:
        raise InputError(
            f"legacy table {table!r} requires {', '.join(map(repr, missing))} (NOT NULL, no "
            "default; unistatus does not fill it): pass it in legacy_values"
        )


def check_stored_value(field: str, value: Any, column: str, rule: LegacyColumn, table: str) -> None:
    """InputError unless ``value`` of ``field`` (a field both sides carry, already of its
    type and within the unified limits) fits ``table``'s own ``column``: a deployment's
    legacy table may be narrower than the unified row (an ``integer`` owner, a
    ``varchar(3)`` currency, an amount of two decimals). The database would refuse it
    as a failure counted against the error rate, or round it silently."""
    problem = _limit_problem(value, rule)
    if problem:
        raise InputError(
            f"{field} does not fit legacy table {table!r} (column {column!r}): {problem}"
        )


def _legacy_value_problem(value: object, column: LegacyColumn) -> str | None:
    if value is None:
        return None if column.nullable else "the column is NOT NULL, got None"
    kind = column.python_type
    if kind is None:
        return None
    if not _of_kind(value, kind):
        return f"expected {kind.__name__}, got {type(value).__name__} {shown(value)}"
    if column.is_json:
        return _json_problem(value)
    return _limit_problem(value, column)


def _json_problem(value: object) -> str | None:
    """Why a JSON column's value has no strict JSON form (the database's ``json`` takes
    no NaN; a Decimal, a set or a UUID inside it has no JSON form at all)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"{shown(value)} is not strict JSON ({exc})"
    return None


def _of_kind(value: object, kind: type[Any]) -> bool:
    """Whether ``value`` is one the column's Python type takes as it is."""
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    if kind is Decimal:
        return isinstance(value, Decimal | int)
    if kind is float:
        return isinstance(value, float | int | Decimal)
    if kind is date:
        return isinstance(value, date) and not isinstance(value, datetime)
    return isinstance(value, kind)


def _limit_problem(value: object, column: LegacyColumn) -> str | None:
    """What the column's declared limits refuse in ``value``, a value of its type."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and column.python_type is int:
        if not -MAX_BIGINT - 1 <= value <= MAX_BIGINT:
            return f"{shown(value)} is past a BIGINT"
        if column.int_range is not None:
            name, lowest, highest = column.int_range
            if not lowest <= value <= highest:
                return f"{shown(value)} is out of range for {name} ({lowest:,} to {highest:,})"
    if isinstance(value, Decimal) and column.python_type is Decimal and not value.is_finite():
        return f"{shown(value)} is not a finite number"
    if isinstance(value, Decimal | int) and column.digits is not None:
        return _digits_problem(value, column.digits, exact=column.exact)
    if isinstance(value, str):
        if column.labels is not None and value not in column.labels:
            labels = ", ".join(map(repr, column.labels))
            return f"{shown(value)} is not one of the enum type's labels ({labels})"
        if column.max_chars is not None and len(value) > column.max_chars:
            return f"too long: {len(value):,} characters (at most {column.max_chars:,})"
        problem = printable_problem(value)
        if problem:
            return f"the text {problem}"
    return None


def _digits_problem(value: Decimal | int, digits: tuple[int, int], *, exact: bool) -> str | None:
    """Why NUMERIC(precision, scale) does not hold ``value``; ``exact``: as it is, not
    rounded to the scale (an amount both sides carry must be equal on both)."""
    precision, scale = digits
    if not _fits(value, precision, scale):
        return f"{shown(value)} does not fit NUMERIC({precision}, {scale})"
    exponent = Decimal(value).normalize().as_tuple().exponent
    if exact and isinstance(exponent, int) and -exponent > scale:
        return (
            f"{shown(value)} has more than {scale} decimal places: NUMERIC({precision}, "
            f"{scale}) would round it"
        )
    return None


def _fits(value: Decimal | int, precision: int, scale: int) -> bool:
    """Whether ``value``, rounded to ``scale`` places as the database does, has at most
    ``precision - scale`` digits before the point."""
    try:
        rounded = Decimal(value).quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than the context holds: far too big
        return False
    return abs(rounded) < Decimal(10) ** (precision - scale)
