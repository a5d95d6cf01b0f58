"""Whether a legacy status column can hold the value a write would store there.

A ``varchar(20)`` status column cannot hold a 22-character legacy status, nor an enum
column a value its type lacks: PostgreSQL refused the write, and the refusal counted as
the database failing. The adapter refuses it first (:meth:`LegacyTable.check_status`),
counted refused. The columns' types are those reflected when the adapter started: a
refusal reflects them again first, so that a column widened, or an enum given the value,
since then (what the refusal tells the operator to do) takes the write at once, without
a restart: on the operation's own connection, in a savepoint
(:mod:`unistatus.adapter.operation_connection`). SQLite stores any text in any column:
nothing to refuse there.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.adapter.operation_connection import held_connection
from unistatus.adapter.sql import HotStatements
from unistatus.config import Settings
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.transaction_state import autocommits
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import UnstorableLegacyStatusError

__all__ = ["StorableStatus"]


class StorableStatus:
    """:meth:`check` a legacy status against its column, reflected again on a refusal."""

    def __init__(self, engine: sa.Engine, settings: Settings, hot: HotStatements) -> None:
        self.engine = engine
        self.settings = settings
        self.hot = hot

    def check(self, system: LegacySystemType, value: str) -> None:
        """UnstorableLegacyStatusError unless ``system``'s status column holds ``value``."""
        if self.engine.dialect.name == "sqlite":
            return
        try:
            self.hot.legacy[system].check_status(value)
        except UnstorableLegacyStatusError:
            conn = held_connection()
            if conn is None or autocommits(conn):  # the fast path's: no transaction
                tables = resolve_legacy_tables(
                    conn or self.engine, self.settings, require_status=False
                )
            else:
                with conn.begin_nested():
                    tables = resolve_legacy_tables(conn, self.settings, require_status=False)
            self.hot.reload(tables)
            tables[system].check_status(value)
