"""Legacy tables of a kind unistatus can only partly work on: refused where they would
fail, warned about where they would not (yet).

A legacy table is best an ordinary (or partitioned) table with a rowid. Others:

- a view (PostgreSQL or SQLite) or a foreign table (PostgreSQL, ``postgres_fdw``): the
  adapter, a check, a backfill read and write it as they would a table (a simple
  updatable view, a foreign table), so a deployment that dual-writes through one keeps
  working. What fails is the capture ("Triggers on views cannot have transition
  tables") and the retirement ("ALTER action DROP COLUMN cannot be performed"): those
  two refuse it before anything changes (:func:`refuse_kinds`); `init` and the adapter's
  start warn (:func:`warn_kinds`).
- a materialized view: nothing can write it; refused at every start.
- a SQLite ``WITHOUT ROWID`` table: its ``INTEGER PRIMARY KEY`` is never assigned by the
  database, so a create (which leaves the id to it) fails on ``NOT NULL``, a refusal that
  reads as one of the application's rules. A warning at `init` and at the adapter's
  start names it, rather than refusing every command: updates, checks and backfills of
  its rows work, and an application that assigns its ids itself is unaffected.

One catalog query (:func:`table_kinds`) finds them; the tables come as
:func:`unistatus.db.legacy_reflect.legacy_table_kinds` names them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import sqlalchemy as sa

from unistatus.errors import ConfigError

__all__ = [
    "FOREIGN",
    "MATERIALIZED",
    "NOT_A_TABLE",
    "VIEW",
    "WITHOUT_ROWID",
    "kind_warnings",
    "not_a_table",
    "refuse_kinds",
    "refuse_unwritable",
    "table_kinds",
    "warn_kinds",
]

log = logging.getLogger("unistatus.db.legacy_kinds")

VIEW, MATERIALIZED, FOREIGN = "a view", "a materialized view", "a foreign table"
WITHOUT_ROWID = "a WITHOUT ROWID table"
# What the capture's triggers and the retirement's DROP COLUMN cannot work on.
NOT_A_TABLE = frozenset({VIEW, MATERIALIZED, FOREIGN})

_PG_KINDS = {"v": VIEW, "m": MATERIALIZED, "f": FOREIGN}
_PG_KIND = sa.text(
    "SELECT t.shown, c.relkind FROM unnest(CAST(:names AS text[]), CAST(:shown AS text[]))"
    " WITH ORDINALITY AS t(name, shown, n)"
    " JOIN pg_catalog.pg_class c ON c.oid = to_regclass(t.name)"
    " WHERE c.relkind NOT IN ('r', 'p') ORDER BY t.n"
)
_WITHOUT_ROWID = re.compile(r"\)\s*(?:STRICT\s*,\s*)?WITHOUT\s+ROWID\b", re.IGNORECASE)


def table_kinds(
    conn: sa.Connection, tables: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str]]:
    """Of ``tables`` (each: as messages name it, as SQL names it, its bare name), those
    that exist and are not an ordinary table with a rowid: (as messages name it, kind)."""
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
            kinds[str(name).lower()] = VIEW
        elif sql and _WITHOUT_ROWID.search(str(sql)):
            kinds[str(name).lower()] = WITHOUT_ROWID
    return [(shown, kinds[bare.lower()]) for shown, _, bare in tables if bare.lower() in kinds]


def _named(found: Sequence[tuple[str, str]]) -> str:
    return "; ".join(f"legacy table {name!r} is {kind}" for name, kind in found)


def not_a_table(found: Sequence[tuple[str, str]], what: str) -> str | None:
    """Why ``what`` (the capture, the retirement) cannot work on ``found``'s views,
    materialized views, foreign tables; None when there is none."""
    views = [(name, kind) for name, kind in found if kind in NOT_A_TABLE]
    if not views:
        return None
    return (
        f"{_named(views)}: {what} needs a table (PostgreSQL: an ordinary or partitioned "
        "one; the capture's triggers and a retirement's DROP COLUMN cannot work on a view "
        "or a foreign table). Point legacy_tables at the table itself"
    )


def refuse_kinds(found: Sequence[tuple[str, str]], what: str) -> None:
    """ConfigError, before ``what`` changes anything, naming each table of ``found`` that
    is not a table (:func:`not_a_table`)."""
    problem = not_a_table(found, what)
    if problem is not None:
        raise ConfigError(f"refusing {what} (nothing changed): {problem}")


def refuse_unwritable(found: Sequence[tuple[str, str]], *, warn: bool = False) -> None:
    """ConfigError naming a materialized view of ``found``: nothing can write it; with
    ``warn`` (the adapter's start), the other kinds' :func:`warn_kinds` from the same read."""
    frozen = [(name, kind) for name, kind in found if kind == MATERIALIZED]
    if frozen:
        raise ConfigError(
            f"{_named(frozen)}: unistatus writes its rows, which a materialized view "
            "cannot take. Point legacy_tables at the table itself"
        )
    if warn:
        warn_kinds(found)


def kind_warnings(found: Sequence[tuple[str, str]]) -> list[str]:
    """What will not work on ``found``'s tables, one line each (materialized views are
    refused, not warned about)."""
    said = []
    for name, kind in found:
        if kind in (VIEW, FOREIGN):
            said.append(
                f"legacy table {name!r} is {kind}: reads and writes work, but `capture "
                "enable` and `retire legacy-columns` will refuse it (triggers with "
                "transition tables, DROP COLUMN need a table)"
            )
        elif kind == WITHOUT_ROWID:
            said.append(
                f"legacy table {name!r} is {kind}: SQLite never assigns its INTEGER "
                "PRIMARY KEY, so a create, which leaves the id to the database, fails "
                "(NOT NULL constraint failed on its id); updates, checks and backfills work"
            )
    return said


def warn_kinds(found: Sequence[tuple[str, str]]) -> list[str]:
    """Log :func:`kind_warnings` (at `init`, at the adapter's start); returns them."""
    said = kind_warnings(found)
    for line in said:
        log.warning("%s", line)
    return said
