"""The application's own triggers on its legacy tables, as far as unistatus must know.

An application's ``BEFORE UPDATE`` row trigger may store another status than the one
unistatus wrote (it holds a large cashout for an admin: ``NEW.status :=
'ADMIN_PENDING'``). The adapter then brings unified to the status held
(:mod:`unistatus.adapter.held`), and that must happen in the change's own transaction:
its fast path, which commits the change in one autocommit statement, leaves such tables
to the locked path (docs/adapter.md, "The fast path").
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from unistatus.db.legacy import LegacyTable
from unistatus.db.legacy_tree import TREE
from unistatus.domain.statuses import LegacySystemType

__all__ = ["holding_systems", "may_hold_updates"]

# Enabled row triggers BEFORE UPDATE of the table or of any table under it (a partition,
# an inheriting table: an UPDATE through the parent fires theirs; pg_trigger.tgtype's
# bits: ROW 1, BEFORE 2, UPDATE 16) that fire when the adapter's UPDATE sets its columns
# (no column list, or one naming a column it sets) and whose function's source, or the
# trigger's own arguments, name the status column as a word (``\m``/``\M``: ``NEW.status
# := ...``, not ``NEW.status_changed_at``). unistatus puts none there (its capture fires
# AFTER, per statement), so each one found is the application's. A table whose triggers
# never name the status (the common ``updated_at`` one) keeps the fast path. A function
# that changes the status without naming it (through a helper, or built by name at run
# time), or one in C (no source to read, its symbol's name), is not found here: it is
# learned from its first held change (adapter.fast). A trigger enabled only for
# replication ('R') counts: a session may take that role.
_PG_HOLDING_TRIGGER = sa.text(
    TREE + "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t "
    "JOIN rel ON t.tgrelid = rel.oid "
    "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
    "JOIN pg_catalog.pg_language l ON l.oid = p.prolang "
    "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgtype & 19 = 19 "
    "AND (cardinality(CAST(t.tgattr AS int2[])) = 0 OR EXISTS ("
    " SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.tgrelid"
    " AND a.attnum = ANY (CAST(t.tgattr AS int2[])) AND a.attname = ANY (:written))) "
    "AND (l.lanname NOT IN ('c', 'internal') AND p.prosrc ~* :word"
    " OR encode(t.tgargs, 'escape') ~* :word))"
).bindparams(sa.bindparam("written", type_=ARRAY(sa.Text)))


def may_hold_updates(conn: sa.Connection, table: sa.Table, status: str, *also_set: str) -> bool:
    """Whether an UPDATE of ``table`` setting its ``status`` column (and the columns
    ``also_set``) may store another status than it sets: an enabled ``BEFORE UPDATE``
    row trigger that fires then and names that column (PostgreSQL). Elsewhere False: a
    SQLite trigger cannot change the row being written."""
    if conn.dialect.name != "postgresql":
        return False
    rel = conn.dialect.identifier_preparer.format_table(table)
    params = {"rel": rel, "word": rf"\m{re.escape(status)}\M", "written": [status, *also_set]}
    return bool(conn.execute(_PG_HOLDING_TRIGGER, params).scalar_one())


def holding_systems(
    engine: sa.Engine, legacy: Mapping[LegacySystemType, LegacyTable]
) -> frozenset[LegacySystemType]:
    """The systems whose legacy table :func:`may_hold_updates` (one with its status
    column retired holds nothing)."""
    with engine.connect() as conn:
        return frozenset(
            system
            for system, lt in legacy.items()
            if lt.status is not None
            and may_hold_updates(conn, lt.table, lt.status.name, lt.updated_at.name)
        )
