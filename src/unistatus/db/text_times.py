"""A legacy time kept as text, as one rule reads it: in Python and in SQL alike.

An application's ``created_at TEXT`` (or VARCHAR) holds ISO text: its own
(``'2025-01-02 03:04:05'``, ``'2025-01-02T03:04:05.123456+02:00'``), or what
PostgreSQL's assignment cast made of the times unistatus writes there
(``'2026-12-07 02:08:43.123456+00'``). The rule reads a time only in this plain form
(:data:`TIME_TEXT`): a date, then optionally a time to the microsecond and a UTC offset
(``Z``, ``+HH``, ``+HH:MM``); or a whole number of seconds since 1970 (a Unix time, as
:mod:`unistatus.db.sqlite_times` reads one); spaces around. Without an offset, a time is
UTC, whatever the session's TimeZone (a capture trigger runs in the application's
session). Anything else (``'not a date'``, ``'2025-02-30'``, ``'epoch'``, ``''``) is no
time: a *missing* time, as SQLite's value that is no time and PostgreSQL's infinity
(:mod:`unistatus.db.infinite_times`): the other time, or the copy's, stands in.

:func:`read_time_text` is the rule in Python (the SQLite adapter's reading of such a
column: :class:`unistatus.db.legacy_text.TextTime`); :func:`text_time` in SQL, where
the backfill, the capture and the check read the column (PostgreSQL's cast would take
``'epoch'`` and ``'Jan 2 2025'`` and fail the whole statement on ``'2025-02-30'``;
SQLite's date functions take ``'2025-02-30'`` and ``'24:00'``). The pattern checks the
calendar itself (the days of each month, leap years), so that no text it passes fails
a cast.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

__all__ = ["TIME_TEXT", "UNIX_TEXT", "read_time_text", "text_time"]

_YEAR = "[1-9][0-9]{3}"
_LEAP = "(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)"
_DATE = (
    f"(?:{_YEAR}-(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    f"|{_YEAR}-(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    f"|{_YEAR}-02-(?:0[1-9]|1[0-9]|2[0-8])"
    f"|{_LEAP}-02-29)"
)
# SQLite takes an offset of at most 14 hours (PostgreSQL 15:59): as the clocks have.
_OFFSET = "(?:Z|[+-](?:0[0-9]|1[0-4])(?::[0-5][0-9])?)"
_TIME = f"(?:[ T](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.][0-9]{{1,6}})?)?{_OFFSET}?)"
# A date and time as the rule reads one; no backslash, no quote: the same text is a
# Python and a PostgreSQL (ARE) regular expression.
TIME_TEXT = f"{_DATE}{_TIME}?"
# A Unix time: whole seconds, up to the year 5138.
UNIX_TEXT = "[0-9]{1,11}"
_TIME_RE = re.compile(TIME_TEXT, re.ASCII)
_UNIX_RE = re.compile(UNIX_TEXT, re.ASCII)


def read_time_text(text: str) -> datetime | None:
    """``text`` as the aware UTC time the rule reads in it (no offset: UTC); None where it
    reads none."""
    if _UNIX_RE.fullmatch(text):
        return datetime.fromtimestamp(int(text), UTC)
    if not _TIME_RE.fullmatch(text):
        return None
    read = datetime.fromisoformat(text)
    return read.replace(tzinfo=UTC) if read.tzinfo is None else read.astimezone(UTC)


class _TextTime(ColumnElement[Any]):
    """A time kept as text as the time the rule reads in it, NULL where it reads none."""

    inherit_cache = True

    def __init__(self, value: sa.ColumnElement[Any], type_: sa.types.TypeEngine[Any]) -> None:
        self.value = value
        self.type = type_


def text_time(
    value: sa.ColumnElement[Any], type_: sa.types.TypeEngine[Any] | None = None
) -> sa.ColumnElement[Any]:
    """SQL: a time kept as text (``value``) as the time :func:`read_time_text` reads in it,
    NULL (a missing time) where it reads none: a ``timestamptz`` on PostgreSQL; on
    SQLite the UTC text SQLAlchemy writes a DATETIME in (``'2025-01-02 01:04:05.000000'``),
    read as ``type_`` (default: a time)."""
    return _TextTime(value, type_ if type_ is not None else sa.DateTime(timezone=True))


@compiles(_TextTime)
def _as_is(element: _TextTime, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.value, **kw))


@compiles(_TextTime, "postgresql")
def _postgres_text_time(element: _TextTime, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    text = f"({value})::text"
    return (
        f"(CASE WHEN {text} ~ '^{UNIX_TEXT}$' THEN to_timestamp(({text})::bigint) "
        f"WHEN {text} !~ '^{TIME_TEXT}$' THEN NULL "
        # An offset after the time's minutes or seconds (a date's '-02' is none).
        f"WHEN {text} ~ ':[0-9]{{2}}([.][0-9]*)?{_OFFSET}$' THEN ({text})::timestamptz "
        f"ELSE ({text})::timestamp AT TIME ZONE 'UTC' END)"
    )


# SQLite has no regular expressions: GLOB patterns at fixed positions, one flat CASE
# branch per shape (its parser's stack is small, and a capture trigger nests the
# expression deep already), each knowing where its decimals and its offset are.
_SQLITE_DATE = "[1-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9]"
_SQLITE_CLOCK = "[ T][0-2][0-9]:[0-5][0-9]"  # after the date: the separator, HH:MM
# After HH:MM, before the offset: nothing, :SS, or :SS and 1 to 6 decimals (by count).
_SQLITE_SECONDS = {None: "", 0: ":[0-5][0-9]"} | {
    n: ":[0-5][0-9]." + "[0-9]" * n for n in range(1, 7)
}
# The offset (its hours at most 14: checked apart), by its length.
_SQLITE_OFFSETS = {0: "", 1: "Z", 3: "[+-][01][0-9]", 6: "[+-][01][0-9]:[0-5][0-9]"}


@compiles(_TextTime, "sqlite")
def _sqlite_text_time(element: _TextTime, compiler: SQLCompiler, **kw: Any) -> str:
    t = compiler.process(element.value, **kw)
    date = f"substr({t}, 1, 10)"
    # The calendar: SQLite's date() keeps '2025-02-30' as it is, julianday() reads it
    # as 2 March.
    date_ok = f"{date} GLOB '{_SQLITE_DATE}' AND date(julianday({date})) = {date}"
    clock_ok = f"substr({t}, 11, 6) GLOB '{_SQLITE_CLOCK}' AND substr({t}, 12, 2) <= '23'"
    branches = [
        f"WHEN {t} GLOB '[0-9]*' AND NOT {t} GLOB '*[^0-9]*' AND length({t}) <= 11 "
        f"THEN strftime('%Y-%m-%d %H:%M:%S.000000', {t}, 'unixepoch')",
        f"WHEN length({t}) = 10 AND {date_ok} THEN {date} || ' 00:00:00.000000'",
    ]
    for length, offset in _SQLITE_OFFSETS.items():
        tail = f"substr({t}, -{length}) GLOB '{offset}' AND " if length else ""
        if length > 1:  # at most 14 hours
            tail += f"substr({t}, -{length - 1}, 2) <= '14' AND "
        # SQLite's date functions take '+HH:MM' only: '+HH' as '+HH:00'.
        full = f"{t} || ':00'" if length == 3 else t
        body = f"substr({t}, 17, length({t}) - {16 + length})"
        for decimals, seconds in _SQLITE_SECONDS.items():
            fraction = (
                f"substr({t}, 21, {decimals}) || '{'0' * (6 - decimals)}'"
                if decimals
                else "'000000'"
            )
            branches.append(
                f"WHEN {tail}{body} GLOB '{seconds}' AND {clock_ok} AND {date_ok} "
                f"THEN strftime('%Y-%m-%d %H:%M:%S.', {full}) || {fraction}"
            )
    return f"(CASE {' '.join(branches)} END)"
