"""The filter an application's own Alembic needs on a database unistatus is installed in.

An application that manages its schema with Alembic compares its models with the
database (``alembic revision --autogenerate``). unistatus's tables, and its own version
table, are in the database and not in the application's models, so Alembic proposes to
drop every one of them: applied, that revision would end the migration and lose its
history. Passed as ``include_name`` in the application's ``env.py``, the filter hides
them from the comparison (tables are filtered by name before they are reflected: their
columns, indexes and constraints go with them); everything of the application's, the
legacy tables included, is compared as before::

    from unistatus import alembic_include_name

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=alembic_include_name,
    )

An application with a filter of its own calls this one from it. The names are the
tables of :mod:`unistatus.db.catalog` and :data:`~unistatus.db.revisions.VERSION_TABLE`,
in whichever schema they are (the ``schema`` setting); they all begin with
``unistatus_`` or ``unified_``.
"""

from __future__ import annotations

from collections.abc import Mapping

from unistatus.db.catalog import metadata
from unistatus.db.revisions import VERSION_TABLE

__all__ = ["alembic_include_name"]

OWN_TABLES = frozenset(table.name for table in metadata.tables.values()) | {VERSION_TABLE}


def alembic_include_name(
    name: str | None, type_: str, parent_names: Mapping[str, str | None]
) -> bool:
    """Alembic's ``include_name`` hook: False for a table of unistatus's, True otherwise."""
    return not (type_ == "table" and name in OWN_TABLES)
