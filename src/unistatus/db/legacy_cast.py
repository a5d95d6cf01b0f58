"""``legacy_values`` of a type Python cannot judge, judged by the database before the
write (PostgreSQL).

The adapter checks a value of the application's own column in Python where its type
says enough (an integer's bounds, a NUMERIC's digits, an enum's labels, a text's
length). Some types it cannot judge: ``inet``, ``money``, a type of an extension (no
Python type known), or ``real``, whose range a Python float passes. Their values are
cast to the column's type first, in a savepoint of the write's transaction (the
caller's too: a failed cast rolls back to it, and the transaction goes on; a second
connection of the pool, as it was, waited out the pool's timeout where the caller held
its only one): a data exception there is the caller's value refused, an InputError
naming the column, with nothing written. Not counted as
a failure, unlike the same refusal met in the write, where a data exception names no
table and cannot be told from one of unistatus's own statements.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from unistatus.db.failures import describe
from unistatus.db.legacy import LegacyTable
from unistatus.errors import InputError

__all__ = ["refuse_what_the_database_would"]

# A cast the value's type cannot make: 42846 cannot coerce, 42804 datatype mismatch.
REFUSED_CASTS = frozenset({"42846", "42804"})


def refuse_what_the_database_would(
    conn: sa.Connection, lt: LegacyTable, values: Mapping[str, Any]
) -> None:
    """InputError for the first of ``values`` (checked ``legacy_values`` of ``lt``) of a
    column Python cannot judge that the column's type does not take (PostgreSQL; only
    when there is such a value), cast on ``conn`` in a transaction, in a savepoint."""
    if conn.dialect.name != "postgresql":
        return
    columns = lt.extra_columns
    judged = {
        name: value
        for name, value in values.items()
        if value is not None and columns[name].python_type in (None, float)
    }
    if not judged:
        return
    casts = [
        sa.cast(sa.bindparam(f"v{i}", value), lt.table.c[name].type).label(f"c{i}")
        for i, (name, value) in enumerate(judged.items())
    ]
    try:
        with conn.begin_nested():
            conn.execute(sa.select(*casts))
        return
    except sa.exc.DBAPIError as exc:
        if not _refused(exc):
            return  # the database failing, not a value: the write meets it and says so
    _which(conn, lt, judged)


def _refused(exc: sa.exc.DBAPIError) -> bool:
    """Whether the database refused a value (a data exception, a domain's CHECK, a type
    the value cannot be cast from), not failed."""
    state = str(getattr(exc.orig, "sqlstate", "") or "")
    return state.startswith(("22", "23")) or state in REFUSED_CASTS


def _which(conn: sa.Connection, lt: LegacyTable, judged: Mapping[str, Any]) -> None:
    """InputError naming the value that failed the cast of them all, one at a time."""
    for name, value in judged.items():
        kind = lt.table.c[name].type
        try:
            with conn.begin_nested():
                conn.execute(sa.select(sa.cast(sa.bindparam("v", value), kind)))
        except sa.exc.DBAPIError as exc:
            if not _refused(exc):
                return
            raise InputError(
                f"legacy_values[{name!r}] for {lt.name!r}: the column's type {kind} does not "
                f"take it: {describe(exc)}"
            ) from None
