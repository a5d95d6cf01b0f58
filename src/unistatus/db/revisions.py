"""Which revisions a database has, read without Alembic (a command's start-up does not
load it: only a migration does, :mod:`unistatus.db.schema`), and whether this release
can work on it: every command but `init` checks (:func:`require_current_schema`)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sqlalchemy as sa

from unistatus.db.binding import schema_of
from unistatus.db.failures import storage_errors
from unistatus.errors import SchemaOutdatedError, SchemaTooNewError
from unistatus.version import SCHEMA_REVISION

__all__ = [
    "RETIRE_REVISION",
    "VERSION_TABLE",
    "columns_retired",
    "known_revisions",
    "require_current_schema",
    "schema_problem",
    "stored_revisions",
]

VERSION_TABLE = "unistatus_alembic_version"
# The retire branch's one revision: the legacy status columns dropped.
RETIRE_REVISION = "0006"
_VERSIONS = Path(__file__).parent / "migrations" / "versions"


def columns_retired(conn: sa.Connection) -> bool:
    """True while the retirement's revision is applied: the legacy status columns are
    gone (`unistatus retire legacy-columns`), as the transaction of ``conn`` sees it."""
    version = sa.table(VERSION_TABLE, sa.column("version_num"), schema=schema_of(conn))
    found = sa.select(version.c.version_num).where(version.c.version_num == RETIRE_REVISION)
    return conn.execute(found.limit(1)).first() is not None


@cache
def known_revisions() -> frozenset[str]:
    """Every revision this release has: the main chain's files are named by their
    revision (``0015_...py``; a test holds it so), the retire branch's one is
    :data:`RETIRE_REVISION`. From the file names: no Alembic loaded."""
    main = {path.name.split("_", 1)[0] for path in _VERSIONS.glob("[0-9]*_*.py")}
    return frozenset(main | {RETIRE_REVISION})


def stored_revisions(conn: sa.Connection) -> tuple[str, ...]:
    """The revisions the database's version table holds (one per branch applied; none
    without the table), sorted."""
    own = schema_of(conn)
    # Looked up first: a failed SELECT would abort a PostgreSQL transaction.
    if not sa.inspect(conn).has_table(VERSION_TABLE, schema=own):
        return ()
    version = sa.table(VERSION_TABLE, sa.column("version_num"), schema=own)
    return tuple(sorted(str(v) for v in conn.execute(sa.select(version.c.version_num)).scalars()))


def schema_problem(
    stored: tuple[str, ...], what: str = "this release of unistatus"
) -> SchemaOutdatedError | SchemaTooNewError | None:
    """Why this release cannot work on a database holding ``stored`` revisions (None:
    it can; nothing stored is no installation, :func:`unistatus.db.target.check_installed`
    says that). A revision it does not know first: a newer release's database is not
    "older" whatever else it holds."""
    if not stored:
        return None
    unknown = sorted(set(stored) - known_revisions())
    if unknown:
        return SchemaTooNewError(", ".join(unknown), SCHEMA_REVISION)
    if SCHEMA_REVISION not in stored:
        return SchemaOutdatedError(what, ", ".join(stored), SCHEMA_REVISION)
    return None


def require_current_schema(
    database: sa.Engine | sa.Connection, what: str = "this release of unistatus"
) -> None:
    """Refuse (:class:`SchemaOutdatedError`, :class:`SchemaTooNewError`) a database whose
    schema this release cannot work on: older (before `unistatus init` upgraded it, its
    mode and phase are under an older release's keys and tables are missing) or newer.
    ``what`` needs it (said in the message). With a connection, in its transaction."""
    # A database that fails here fails as any of unistatus's reads does (StorageError).
    with storage_errors(f"{what}: cannot read the schema's revision"):
        if isinstance(database, sa.Connection):
            stored = stored_revisions(database)
        else:
            with database.connect() as conn:
                stored = stored_revisions(conn)
    problem = schema_problem(stored, what)
    if problem is not None:
        raise problem
