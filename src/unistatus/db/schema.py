"""Create or upgrade unistatus's schema with Alembic (idempotent)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from unistatus.config import Settings
from unistatus.errors import StorageError

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "unistatus_alembic_version"
REFERENCE_NAMES = {"CASHOUT": "cashouts", "ESCROW": "escrows", "EXCHANGE": "exchanges"}


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


def upgrade(engine: sa.Engine, settings: Settings, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; returns the revision now current."""
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn, settings), revision)
        return current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot migrate the database: {exc.orig}") from None


def downgrade(engine: sa.Engine, settings: Settings, revision: str) -> str | None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn, settings), revision)
    return current_revision(engine)


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def head_revision() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
