"""An application's own Alembic autogenerate, on a database unistatus is installed in.

An application that manages its schema with Alembic compares its models with the
database (``alembic revision --autogenerate``). unistatus's tables are not in the
application's models, so without a filter Alembic proposes to drop every one of them,
unistatus's version table included: a migration that, once applied, ends the migration
and loses its history. :func:`unistatus.alembic_include_name` is the filter to pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conftest import IN_EVERY_LAYOUT, Database

LEGACY = ("cashouts", "escrows", "exchanges")


def _application_models(conn: sa.Connection) -> sa.MetaData:
    """The application's models: its legacy tables as they are (and nothing of ours)."""
    models = sa.MetaData()
    models.reflect(conn, only=list(LEGACY))
    return models


@pytest.fixture
def application(db: Database) -> Iterator[sa.Engine]:
    """The application's own engine on the database (not one of unistatus's, which may
    be bound to unistatus's schema)."""
    engine = sa.create_engine(db.url)
    yield engine
    engine.dispose()


def _proposed(conn: sa.Connection, models: sa.MetaData, **options: object) -> list[tuple]:
    context = MigrationContext.configure(conn, opts={"include_schemas": True, **options})
    return [diff for diff in compare_metadata(context, models) if isinstance(diff, tuple)]


@IN_EVERY_LAYOUT
def test_autogenerate_without_the_filter_would_drop_unistatus(application: sa.Engine) -> None:
    """The reason for the filter, kept as a test: if Alembic ever ignored foreign tables
    on its own, the filter (and its documentation) could go."""
    with application.connect() as conn:
        dropped = {
            d[1].name for d in _proposed(conn, _application_models(conn)) if d[0] == "remove_table"
        }
    assert {"unified_transactions", "unistatus_control", "unistatus_alembic_version"} <= dropped


@IN_EVERY_LAYOUT
def test_autogenerate_with_the_filter_proposes_nothing_of_ours(application: sa.Engine) -> None:
    from unistatus import alembic_include_name

    with application.connect() as conn:
        proposed = _proposed(conn, _application_models(conn), include_name=alembic_include_name)
    assert proposed == []


@IN_EVERY_LAYOUT
def test_the_filter_keeps_the_applications_own_tables_and_changes(application: sa.Engine) -> None:
    """A table the application drops from its models, and one it adds, are still seen."""
    from unistatus import alembic_include_name

    with application.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE app_ledger (id integer PRIMARY KEY)")
    try:
        with application.connect() as conn:
            models = _application_models(conn)
            models.remove(next(t for t in models.tables.values() if t.name == "exchanges"))
            sa.Table("app_invoices", models, sa.Column("id", sa.Integer, primary_key=True))
            proposed = _proposed(conn, models, include_name=alembic_include_name)
        kinds = {(d[0], d[1].name) for d in proposed}
        assert kinds == {
            ("remove_table", "app_ledger"),
            ("remove_table", "exchanges"),
            ("add_table", "app_invoices"),
        }
    finally:
        with application.begin() as conn:
            conn.exec_driver_sql("DROP TABLE app_ledger")
