"""Which revisions a database has, read without Alembic (a command's start-up does not
load it: only a migration does, :mod:`unistatus.db.schema`)."""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.binding import schema_of

__all__ = ["RETIRE_REVISION", "VERSION_TABLE", "columns_retired"]

VERSION_TABLE = "unistatus_alembic_version"
# The retire branch's one revision: the legacy status columns dropped.
RETIRE_REVISION = "0006"


def columns_retired(conn: sa.Connection) -> bool:
    """True while the retirement's revision is applied: the legacy status columns are
    gone (`unistatus retire legacy-columns`), as the transaction of ``conn`` sees it."""
    version = sa.table(VERSION_TABLE, sa.column("version_num"), schema=schema_of(conn))
    found = sa.select(version.c.version_num).where(version.c.version_num == RETIRE_REVISION)
    return conn.execute(found.limit(1)).first() is not None
