"""A login role of the test's own on the PostgreSQL server (roles belong to the server,
not to the test's database: a unique name, dropped after)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

# Every table and sequence of the test's schema: what unistatus's commands need.
ALL_ON_PUBLIC = (
    "GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; "
    "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"
)


@contextmanager
def a_role_without_read_all_stats(pg: Any, grants: str = "") -> Iterator[str]:
    """A login role of its own (roles belong to the server: a unique name, dropped
    after), with ``grants`` (SQL run as the test's superuser, ``{role}`` filled in)."""
    role = f"unistatus_test_watcher_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        if grants:
            conn.exec_driver_sql(grants.format(role=role))
    try:
        yield sa.engine.make_url(pg.url).set(username=role).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()
