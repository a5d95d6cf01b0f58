"""Alembic environment: always run through unistatus.db.schema with a live connection."""

from __future__ import annotations

from alembic import context

from unistatus.db.catalog import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="unistatus_alembic_version",
    # In the schema of our tables (the ``schema`` setting; None: unqualified, as ever).
    version_table_schema=context.config.attributes.get("schema"),
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
