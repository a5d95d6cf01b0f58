"""How many rows a write statement wrote, INSERTs included.

SQLAlchemy 2 keeps an INSERT's row count only on request (``preserve_rowcount``):
without it, ``rowcount`` is -1 on psycopg for every INSERT, so "nothing inserted"
(``ON CONFLICT DO NOTHING`` met a row) cannot be told from "inserted".
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

__all__ = ["affected"]


def affected(conn: sa.Connection, stmt: Any, params: dict[str, Any] | None = None) -> int:
    """Rows ``stmt`` (an INSERT, UPDATE or DELETE) wrote on ``conn``."""
    return int(conn.execute(stmt.execution_options(preserve_rowcount=True), params).rowcount)
