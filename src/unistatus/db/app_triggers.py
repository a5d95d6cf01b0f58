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

from unistatus.db.legacy import LegacyTable
from unistatus.domain.statuses import LegacySystemType

__all__ = ["holding_systems", "may_hold_updates"]

# Enabled row triggers BEFORE UPDATE of the table (pg_trigger.tgtype's bits: ROW 1,
# BEFORE 2, UPDATE 16) whose function's source names the status column as a word
# (``\m``/``\M``: ``NEW.status := ...``, not ``NEW.status_changed_at``). unistatus puts
# none there (its capture fires AFTER, per statement), so each one found is the
# application's. A table whose triggers never name the status (the common ``updated_at``
# one) keeps the fast path. A function that changes the status without naming it (built
# by name at run time), or one in C (no source to read, its symbol's name), is not found
# here: it is learned from its first held change (adapter.fast). A trigger enabled only for replication ('R') counts: a session may
# take that role.
_PG_HOLDING_TRIGGER = sa.text(
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t "
    "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid "
    "JOIN pg_catalog.pg_language l ON l.oid = p.prolang "
    "WHERE t.tgrelid = to_regclass(:rel) AND NOT t.tgisinternal "
    "AND t.tgenabled <> 'D' AND t.tgtype & 19 = 19 "
    "AND l.lanname NOT IN ('c', 'internal') AND p.prosrc ~* :word)"
)


def may_hold_updates(conn: sa.Connection, table: sa.Table, status: str) -> bool:
    """Whether an UPDATE of ``table`` may store another value of its ``status`` column
    than it sets: an enabled ``BEFORE UPDATE`` row trigger whose function names that
    column (PostgreSQL). Elsewhere False: a SQLite trigger cannot change the row being
    written."""
    if conn.dialect.name != "postgresql":
        return False
    rel = conn.dialect.identifier_preparer.format_table(table)
    word = rf"\m{re.escape(status)}\M"
    return bool(conn.execute(_PG_HOLDING_TRIGGER, {"rel": rel, "word": word}).scalar_one())


def holding_systems(
    engine: sa.Engine, legacy: Mapping[LegacySystemType, LegacyTable]
) -> frozenset[LegacySystemType]:
    """The systems whose legacy table :func:`may_hold_updates` (one with its status
    column retired holds nothing)."""
    with engine.connect() as conn:
        return frozenset(
            system
            for system, lt in legacy.items()
            if lt.status is not None and may_hold_updates(conn, lt.table, lt.status.name)
        )
