"""Create or upgrade unistatus's tables with Alembic (idempotent).

With the ``schema`` setting (PostgreSQL) the tables, revision 0007's function and
Alembic's version table all go in that schema, created here if missing; the legacy
tables stay the application's (:mod:`unistatus.db.binding`). A new installation while
the database holds one elsewhere is refused unless asked for (``alongside``:
:mod:`unistatus.db.search_path`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from unistatus.config import Settings
from unistatus.db.binding import require_bound, schema_of
from unistatus.db.catalog import all_tables, qualified_name
from unistatus.db.ddl_wait import Changes, attempt_ms, run_politely
from unistatus.db.dialect import ops_for
from unistatus.db.legacy_reflect import legacy_schema, legacy_table_sql
from unistatus.db.migration_lock import INIT_COMMAND, migration_lock, take_migration_lock
from unistatus.db.mode_lock_keys import mode_lock_key
from unistatus.db.revisions import (
    RETIRE_REVISION,
    VERSION_TABLE,
    schema_problem,
    stored_revisions,
)
from unistatus.db.search_path import (
    require_one_place,
    require_sole_installation,
    without_compat_views,
)
from unistatus.errors import GateError, SchemaTooNewError, StorageError
from unistatus.version import SCHEMA_REVISION

MIGRATIONS = Path(__file__).parent / "migrations"
REFERENCE_NAMES = {"CASHOUT": "cashouts", "ESCROW": "escrows", "EXCHANGE": "exchanges"}
# Two Alembic branches; file names tell the order: 0001_ .. 0023_ (no 0006) on the main
# chain, r001_ on the retire branch. `init` (and every upgrade) installs the main chain, up to
# INSTALL_REVISION, its head; it never drops anything. The retire branch holds one
# revision, 0006, which depends on 0009 (frozen: it was written against 0009) and drops the
# legacy status columns (phase 4 cleanup): only `unistatus retire legacy-columns` applies
# it, after its gates, and `--undo` reverts it (downgrade to RETIRE_UNDO). Revision ids are
# never renumbered: 0006 was the last of one chain when databases were retired, and they
# keep reading the same. The main chain moves on past 0009 independently: a database
# retired at 0006 (which implies 0009) gets 0010.. from `init` and then stores two heads,
# the main chain's and 0006; `current_revision` still says 0006 while the columns are
# dropped, and the main chain's head once they are restored.
MAIN_BRANCH = "main"
RETIRE_BRANCH = "retire"
INSTALL_REVISION = SCHEMA_REVISION  # written once, in unistatus.version
RETIRE_UNDO = f"{RETIRE_BRANCH}@base"

# Work of the package's own done in a revision's transaction (upgrade's ``before``, ``after``).
InTransaction = Callable[[sa.Connection], object]


# Each schema change goes the polite way (unistatus.db.ddl_wait): how long it goes on
# trying by default, what it tells the operator to run again by default, and the tables
# a migration changes (read before an attempt).
LOCK_DEADLINE_SECONDS = 60.0
MIGRATE = "migrate the database"
ChangedTables = Callable[[sa.Connection], Changes]


def alembic_config(connection: sa.Connection, settings: Settings) -> Config:
    """The Alembic config the migrations run with; they get plain values, never settings."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    # Where our tables go (None: unqualified, as before the setting), and the mode lock
    # of the installation there (revision 0007's function and 0006 take it).
    schema = schema_of(connection)
    cfg.attributes["schema"] = schema
    cfg.attributes["mode_lock_key"] = mode_lock_key(schema)
    # Reference legacy tables are created only for systems still configured with the
    # reference table name (the demo and tests); a deployment's own tables are its own.
    cfg.attributes["reference_legacy_tables"] = [
        spec.table
        for system, spec in settings.legacy_tables.items()
        if spec.table == REFERENCE_NAMES[system]
    ]
    cfg.attributes["legacy_tables"] = {
        system: {
            "table": spec.table,
            "schema": legacy_schema(connection, spec),
            "id": spec.id,
            "status": spec.status,
        }
        for system, spec in settings.legacy_tables.items()
    }
    cfg.attributes["lock_timeout_ms"] = settings.lock_timeout_ms
    cfg.attributes["gate_error"] = GateError  # what a revision's refusal raises
    return cfg


def upgrade(
    engine: sa.Engine,
    settings: Settings,
    revision: str = INSTALL_REVISION,
    attributes: dict[str, Any] | None = None,
    *,
    before: InTransaction | None = None,
    after: InTransaction | None = None,
    alongside: bool = False,
    deadline_seconds: float | None = None,
    command: str = INIT_COMMAND,
    what: str = MIGRATE,
    changes: ChangedTables | None = None,
) -> str | None:
    """Bring the schema to ``revision``; returns the revision now current.

    ``attributes`` reach the migrations through the Alembic config (e.g. who asked).
    ``engine`` must be bound to the settings' schema (``create_engine(url, schema=...)``).
    ``before`` and ``after`` run in the revision's transaction, just before and after it
    (a revision is frozen: what the package must do with it atomically goes there; a
    revision that takes the installation's mode lock exclusive, as 0006 does, finds it
    held if ``before`` took it the polite way).
    ``alongside``: make a new installation even though the database holds another, in
    another schema (PostgreSQL; else a ConfigError, nothing created).
    ``deadline_seconds``: how long to go on trying for the locks it needs (None:
    :data:`LOCK_DEADLINE_SECONDS`); ``command``: what the operator runs again if it
    gives up, ``what``: what it does, for that message; ``changes``: the tables it changes, looked at before each attempt (None:
    every legacy table and ours, looked at once an attempt waited in vain). See
    :func:`_migrate`.
    """
    return _migrate(
        engine,
        settings,
        lambda cfg: alembic_command.upgrade(cfg, revision),
        attributes,
        before,
        after,
        create_schema=True,
        alongside=alongside,
        deadline_seconds=deadline_seconds,
        command=command,
        what=what,
        changes=changes,
    )


def _migrate(
    engine: sa.Engine,
    settings: Settings,
    move: Callable[[Config], None],
    attributes: dict[str, Any] | None,
    before: InTransaction | None,
    after: InTransaction | None,
    *,
    create_schema: bool = False,
    alongside: bool = False,
    deadline_seconds: float | None = None,
    command: str = INIT_COMMAND,
    what: str = MIGRATE,
    changes: ChangedTables | None = None,
) -> str | None:
    """Run ``move`` (an Alembic command) in one write transaction, ``before`` and
    ``after`` in it; a database failure is a StorageError, nothing changed.

    PostgreSQL: a revision takes tables exclusively one after the other and keeps them
    until the transaction commits, and every writer of a table queues behind the lock
    request waiting for it (the capture's trigger of each legacy UPDATE too). So the
    attempts go the polite way (:func:`unistatus.db.ddl_wait.run_politely`): each lock
    wait at most ``ddl_lock_timeout_ms`` (500 ms; ``lock_timeout_ms`` if smaller), then
    rolled back whole, a pause with jitter and another attempt; behind a transaction open
    for 2 s or more on a table it changes, no attempt until it ends. After
    ``deadline_seconds`` a TableLockBusyError names the holders and ``command``.
    """
    require_bound(engine, settings.schema)

    def attempt(lock_ms: int) -> None:
        # A write transaction: on SQLite it takes the write lock up front (BEGIN
        # IMMEDIATE), so a migration run while adapters write waits for them instead of
        # failing with "database is locked" when its first read turns into a write.
        with ops_for(engine).write_transaction() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(lock_ms)}")
                # One migration of an installation at a time (two hosts' `init`): the
                # second waits here (lock_timeout, retried as any lock) and then finds
                # the revision the first committed, instead of creating its tables
                # beside the first's. SQLite: the write transaction's lock does it.
                take_migration_lock(conn, command)
            _where_names_go(conn, alongside=alongside)
            # A newer release's revision: said as such (Alembic: "Can't locate revision").
            newer = schema_problem(stored_revisions(conn))
            if isinstance(newer, SchemaTooNewError):
                raise newer
            if before is not None:
                before(conn)
            if create_schema:
                _create_schema(conn)
            cfg = alembic_config(conn, settings)
            cfg.attributes.update(attributes or {})
            cfg.attributes["lock_timeout_ms"] = int(lock_ms)  # the revisions' own waits
            move(cfg)
            if after is not None:
                after(conn)

    try:
        run_politely(
            engine,
            attempt,
            changes or (lambda conn: _every_table(conn, settings)),
            lock_ms=attempt_ms(settings),
            what=what,
            command=command,
            wait_seconds=LOCK_DEADLINE_SECONDS if deadline_seconds is None else deadline_seconds,
            look_first=changes is not None,
        )
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot migrate the database (nothing changed): {exc.orig}") from None
    except sa.exc.DBAPIError as exc:
        # The database refused the revision (a view made since the retirement's gates
        # depends on a column it drops, say): its transaction rolled back whole. One
        # line, without PostgreSQL's HINT (its CASCADE would drop the application's
        # view): what refused, and what depends on it (the DETAIL).
        said = str(exc.orig).split("\nHINT:")[0].replace("\n", " ")
        raise StorageError(f"cannot migrate the database (nothing changed): {said}") from None
    return current_revision(engine)  # read after the commit: no "nothing changed" for it


def _every_table(conn: sa.Connection, settings: Settings) -> Changes:
    """What `init` may change: every legacy table and every one of ours (PostgreSQL)."""
    legacy = [legacy_table_sql(conn, spec) for spec in settings.legacy_tables.values()]
    ours = [qualified_name(table, conn) for table in all_tables()]
    return Changes(exclusive=legacy + ours, advisory=[migration_lock(conn)])


def _where_names_go(conn: sa.Connection, *, alongside: bool) -> None:
    """PostgreSQL: bare names on the search_path without the compatibility views; a
    ConfigError, nothing changed, unless the migration's new objects go beside the
    installation (default layout: where the search_path puts them), or, making a new
    installation, none is elsewhere or ``alongside`` (:mod:`unistatus.db.search_path`)."""
    if conn.dialect.name != "postgresql":
        return
    without_compat_views(conn)
    own = schema_of(conn)
    if own is None:
        require_one_place(conn, alongside=alongside)
    elif not alongside:
        require_sole_installation(conn, own)


def _create_schema(conn: sa.Connection) -> None:
    """Create the schema of our tables if it is missing (looked up first: CREATE SCHEMA
    IF NOT EXISTS needs the CREATE privilege on the database even when it exists)."""
    schema = schema_of(conn)
    if schema is not None and not sa.inspect(conn).has_schema(schema):
        conn.exec_driver_sql(f"CREATE SCHEMA {conn.dialect.identifier_preparer.quote(schema)}")


def downgrade(
    engine: sa.Engine,
    settings: Settings,
    revision: str,
    attributes: dict[str, Any] | None = None,
    *,
    before: InTransaction | None = None,
    after: InTransaction | None = None,
    deadline_seconds: float | None = None,
    command: str = INIT_COMMAND,
    what: str = MIGRATE,
    changes: ChangedTables | None = None,
) -> str | None:
    """Take the schema back to ``revision`` (the rest: as :func:`upgrade`)."""
    return _migrate(
        engine,
        settings,
        lambda cfg: alembic_command.downgrade(cfg, revision),
        attributes,
        before,
        after,
        deadline_seconds=deadline_seconds,
        command=command,
        what=what,
        changes=changes,
    )


def current_revision(engine: sa.Engine | sa.Connection) -> str | None:
    """The revision the database is at (None: not installed).

    0006 (:data:`RETIRE_REVISION`) while the legacy status columns are dropped, whatever
    the main chain's revision (then stored beside it: :func:`current_heads` lists both);
    else the main chain's revision.
    """
    heads = current_heads(engine)
    if RETIRE_REVISION in heads:
        return RETIRE_REVISION
    return heads[0] if heads else None


def main_revision(engine: sa.Engine | sa.Connection) -> str | None:
    """The main chain's revision (what `init` installs), whether or not the legacy
    status columns are retired beside it (None: not installed)."""
    main = [head for head in current_heads(engine) if head != RETIRE_REVISION]
    return main[0] if main else None


def current_heads(engine: sa.Engine | sa.Connection) -> tuple[str, ...]:
    """Every revision stored in the version table (one per branch applied); with a
    connection, as its transaction sees it."""
    if isinstance(engine, sa.Connection):
        opts = {"version_table": VERSION_TABLE, "version_table_schema": schema_of(engine)}
        return MigrationContext.configure(engine, opts=opts).get_current_heads()
    with engine.connect() as conn:
        return current_heads(conn)


def head_revisions() -> tuple[str, str]:
    """The head of each branch: the main chain's (what `init` installs), then retire's."""
    scripts = _scripts()
    return _branch_head(scripts, MAIN_BRANCH), _branch_head(scripts, RETIRE_BRANCH)


def head_revision() -> str | None:
    """The head of the retire branch: the fully retired schema."""
    return _branch_head(_scripts(), RETIRE_BRANCH)


def _branch_head(scripts: ScriptDirectory, branch: str) -> str:
    script = scripts.get_revision(f"{branch}@head")
    assert script is not None
    return script.revision


def _scripts() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)
