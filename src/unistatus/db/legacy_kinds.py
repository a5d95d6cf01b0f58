"""Legacy tables of a kind unistatus cannot work on, refused at `init` and at start.

A legacy table must be a table whose rows unistatus can read, update, capture and whose
status column it can drop: on PostgreSQL an ordinary or a partitioned table. A view (or
a materialized view, a foreign table) was taken at `init`, and then the capture failed
("Triggers on views cannot have transition tables"), the retirement too ("ALTER action
DROP COLUMN cannot be performed"). On SQLite a ``WITHOUT ROWID`` table has no rowid to
assign an ``INTEGER PRIMARY KEY``: a create's id is never given, and the error that
follows blamed "a rule of the application's". Both are refused, naming the table and its
kind, by one catalog query (:func:`check_legacy_kinds`; the tables as
:func:`unistatus.db.legacy.refuse_unsupported_kinds` names them), before anything is
created.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa

from unistatus.errors import ConfigError

__all__ = ["check_legacy_kinds", "unsupported_kinds"]

_PG_KINDS = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}
_PG_KIND = sa.text(
    "SELECT t.shown, c.relkind FROM unnest(CAST(:names AS text[]), CAST(:shown AS text[]))"
    " WITH ORDINALITY AS t(name, shown, n)"
    " JOIN pg_catalog.pg_class c ON c.oid = to_regclass(t.name)"
    " WHERE c.relkind NOT IN ('r', 'p') ORDER BY t.n"
)
_WITHOUT_ROWID = re.compile(r"\)\s*(?:STRICT\s*,\s*)?WITHOUT\s+ROWID\b", re.IGNORECASE)


def unsupported_kinds(
    conn: sa.Connection, tables: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str]]:
    """Of ``tables`` (each: as messages name it, as SQL names it, its bare name), those
    that exist and are of a kind unistatus cannot work on: (as messages name it, kind)."""
    if conn.dialect.name == "postgresql":
        params = {"names": [t[1] for t in tables], "shown": [t[0] for t in tables]}
        rows = conn.execute(_PG_KIND, params)
        return [(str(name), _PG_KINDS.get(str(kind), f"of kind {kind!r}")) for name, kind in rows]
    if conn.dialect.name != "sqlite":
        return []
    found = conn.exec_driver_sql(
        "SELECT name, type, sql FROM sqlite_master WHERE type IN ('table', 'view')"
    ).all()
    kinds = {}
    for name, kind, sql in found:
        if kind == "view":
            kinds[str(name).lower()] = "a view"
        elif sql and _WITHOUT_ROWID.search(str(sql)):
            kinds[str(name).lower()] = "a WITHOUT ROWID table"
    return [(shown, kinds[bare.lower()]) for shown, _, bare in tables if bare.lower() in kinds]


def check_legacy_kinds(conn: sa.Connection, tables: Sequence[tuple[str, str, str]]) -> None:
    """ConfigError naming each of ``tables`` (:func:`unsupported_kinds`) of a kind
    unistatus cannot work on."""
    found = unsupported_kinds(conn, tables)
    if not found:
        return
    what = "; ".join(f"legacy table {name!r} is {kind}" for name, kind in found)
    raise ConfigError(
        f"{what}: unistatus needs a table (PostgreSQL: an ordinary or partitioned table, "
        "whose rows the capture's triggers see and whose status column a retirement can "
        "drop; SQLite: one with a rowid, which assigns a new row's INTEGER PRIMARY KEY). "
        "Point legacy_tables at the table itself"
    )
