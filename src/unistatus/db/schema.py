"""Create or upgrade unistatus's schema with Alembic (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from unistatus.config import Settings
from unistatus.db.dialect import ops_for
from unistatus.errors import StorageError

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "unistatus_alembic_version"
REFERENCE_NAMES = {"CASHOUT": "cashouts", "ESCROW": "escrows", "EXCHANGE": "exchanges"}
# What `init` (and every upgrade) installs. The last revision, 0006, drops the legacy
# status columns (phase 4 cleanup): only `unistatus retire legacy-columns` applies it,
# after its gates, and `--undo` reverts it. So a fresh install never drops them, and
# `current` says honestly whether they are dropped (0006) or not (0009). Revision ids are
# never renumbered, so the chain reads 0001 .. 0005 -> 0007 -> 0008 -> 0009 -> 0006.
# Upgrading a database already at 0006 to 0009 is a no-op in Alembic (it never downgrades).
INSTALL_REVISION = "0009"
RETIRE_REVISION = "0006"


def alembic_config(connection: sa.Connection, settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    cfg.attributes["settings"] = settings
    # Reference legacy tables are created only for systems still configured with the
    # reference table name (the demo and tests); a deployment's own tables are its own.
    cfg.attributes["reference_legacy_tables"] = [
        spec.table
        for system, spec in settings.legacy_tables.items()
        if spec.table == REFERENCE_NAMES[system]
    ]
    return cfg


def upgrade(
    engine: sa.Engine,
    settings: Settings,
    revision: str = INSTALL_REVISION,
    attributes: dict[str, Any] | None = None,
) -> str | None:
    """Bring the schema to ``revision``; returns the revision now current.

    ``attributes`` reach the migrations through the Alembic config (e.g. who asked).
    """
    try:
        # A write transaction: on SQLite it takes the write lock up front (BEGIN
        # IMMEDIATE), so a migration run while adapters write waits for them instead of
        # failing with "database is locked" when its first read turns into a write.
        with ops_for(engine).write_transaction() as conn:
            cfg = alembic_config(conn, settings)
            cfg.attributes.update(attributes or {})
            command.upgrade(cfg, revision)
        return current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot migrate the database: {exc.orig}") from None


def downgrade(
    engine: sa.Engine,
    settings: Settings,
    revision: str,
    attributes: dict[str, Any] | None = None,
) -> str | None:
    with ops_for(engine).write_transaction() as conn:
        cfg = alembic_config(conn, settings)
        cfg.attributes.update(attributes or {})
        command.downgrade(cfg, revision)
    return current_revision(engine)


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def head_revision() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
