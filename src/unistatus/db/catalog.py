"""Every table unistatus owns, in one place.

The tables are defined across ``db/tables.py`` and the ``db/tables_*`` modules, all on
the one :data:`unistatus.db.tables.metadata`, which lists a table only once its module
has been imported. This module imports them all, so :data:`metadata` here (the same
object) lists every table whatever else was imported: Alembic's environment, the
diagnostic's table counts and the tests' snapshots read it.

The tables are declared without a schema; the engine says which schema they are in
(the ``schema`` setting, :mod:`unistatus.db.binding`). SQL that unistatus writes by hand
(a PostgreSQL function or trigger body, a psql hint) names one of them with
:func:`qualified_name`, never with its bare ``table.name``::

    from unistatus.db.catalog import qualified_name
    from unistatus.db.tables import unified_transactions

    with engine.connect() as conn:  # an engine from unistatus.db.engine.create_engine
        target = qualified_name(unified_transactions, conn)
    # 'unistatus.unified_transactions' with schema = "unistatus" (quoted only where a
    # name needs it, as SQLAlchemy renders it: the setting only admits plain names);
    # 'unified_transactions' with the default (public): unqualified, as always, so the
    # name resolves through the search_path exactly as SQLAlchemy's statements do
    # (a trigger body runs with the writer's search_path: pin it if that matters).

Code that has the schema (``schema_of(bind)``) rather than a bind uses :func:`qualify`.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db import (  # noqa: F401  (imported for their tables)
    tables_alerts,
    tables_backfill,
    tables_capture,
    tables_check,
    tables_idempotency,
    tables_ops,
    tables_replay,
)
from unistatus.db.binding import qualify, schema_of
from unistatus.db.tables import metadata

__all__ = ["all_tables", "metadata", "qualified_name", "qualify"]


def all_tables() -> list[sa.Table]:
    """Every table, parents before the tables that reference them."""
    return list(metadata.sorted_tables)


def qualified_name(table: sa.Table | str, bind: sa.Engine | sa.Connection) -> str:
    """One of our tables (or functions) as SQL text names it on ``bind``: quoted where
    needed and qualified with the schema the bind keeps our tables in (none by default)."""
    name = table if isinstance(table, str) else table.name
    return qualify(name, schema_of(bind), bind.dialect)
