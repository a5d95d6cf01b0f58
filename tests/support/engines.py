"""Engines as an application may make them and hand to the library."""

from __future__ import annotations

import sqlalchemy as sa

# A server, database or role whose transactions default to REPEATABLE READ.
REPEATABLE_READ_OPTIONS = "-c default_transaction_isolation=repeatable\\ read"


def at_repeatable_read(url: str) -> sa.Engine:
    """The application's own engine (SQLAlchemy's, not unistatus's: unistatus's name READ
    COMMITTED on every connection) on a server whose default is REPEATABLE READ."""
    return sa.create_engine(url, connect_args={"options": REPEATABLE_READ_OPTIONS})
