"""Every table unistatus owns, in one place.

The tables are defined across ``db/tables.py`` and the ``db/tables_*`` modules, all on
the one :data:`unistatus.db.tables.metadata`, which lists a table only once its module
has been imported. This module imports them all, so :data:`metadata` here (the same
object) lists every table whatever else was imported: Alembic's environment, the
diagnostic's table counts and the tests' snapshots read it.
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
from unistatus.db.tables import metadata

__all__ = ["all_tables", "metadata"]


def all_tables() -> list[sa.Table]:
    """Every table, parents before the tables that reference them."""
    return list(metadata.sorted_tables)
