"""Legacy tables that hand the id of a deleted row out again.

A transaction's UTX id is derived from its legacy row's id, so a new row given a deleted
row's id is taken for that row's transaction: a create through the adapter is refused
(its unified row is there), but a bypass INSERT under the capture brings that unified
row, another transaction's money record, in step with the new row. SQLite gives a new
row the largest rowid + 1 unless its key is ``INTEGER PRIMARY KEY AUTOINCREMENT``: the
id of a deleted newest row comes back. PostgreSQL's sequences never hand an id out again
(unless set back), so only SQLite tables are judged here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sqlalchemy as sa

from unistatus.db.legacy import LegacyTable

__all__ = ["ids_reused"]

_AUTOINCREMENT = re.compile(r"\bAUTOINCREMENT\b", re.IGNORECASE)
_DEFINITIONS = sa.text(
    "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name IN :names"
).bindparams(sa.bindparam("names", expanding=True))


def ids_reused(conn: sa.Connection, tables: Iterable[LegacyTable]) -> list[str]:
    """The names of ``tables`` that may hand a deleted row's id out again (SQLite
    tables whose key is a rowid without AUTOINCREMENT); none on other databases."""
    names = [lt.name for lt in tables]
    if conn.dialect.name != "sqlite" or not names:
        return []
    rows = conn.execute(_DEFINITIONS, {"names": names})
    return sorted(name for name, sql in rows if sql and not _AUTOINCREMENT.search(sql))
