"""What an adapter's start says about the tables it works with but cannot fully serve.

Neither stops it: an application may mean its row-level security policies (each tenant
sees its own rows), and a view or a SQLite ``WITHOUT ROWID`` table works for the
adapter's writes; the commands that would give a wrong answer or fail on them refuse
there (:mod:`unistatus.db.row_security`, :mod:`unistatus.db.legacy_kinds`).
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.legacy import legacy_table_kinds
from unistatus.db.legacy_kinds import warn_kinds
from unistatus.db.row_security import warn_row_security

__all__ = ["warn_at_start"]


def warn_at_start(engine: sa.Engine, settings: Settings) -> None:
    """Log a warning for each legacy table whose rows a policy may hide from the role,
    and for each that is no plain table (a view, a foreign table, WITHOUT ROWID)."""
    warn_row_security(engine, settings)
    warn_kinds(legacy_table_kinds(engine, list(settings.legacy_tables.values())))
