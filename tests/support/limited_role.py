"""A login role of the test's own with a small CONNECTION LIMIT (roles belong to the
server, not to the test's database: named with this run's prefix, always dropped)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlalchemy as sa

from support.roles import ALL_ON_PUBLIC


@contextmanager
def a_role_limited_to(pg: Any, limit: int) -> Iterator[tuple[str, str]]:
    """(its name, a URL connecting as it) of a role with ``CONNECTION LIMIT limit`` and
    every grant on the test's tables."""
    role = f"unistatus_test_{os.getpid()}_limit_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {int(limit)}")
        conn.exec_driver_sql(ALL_ON_PUBLIC.format(role=role))
    try:
        url = sa.engine.make_url(pg.url).set(username=role)
        yield role, url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


def hold(url: str, n: int) -> list[psycopg.Connection[Any]]:
    """``n`` connections of the role, held (the slots its limit allows) until closed."""
    dsn = sa.engine.make_url(url).set(drivername="postgresql")
    return [
        psycopg.connect(dsn.render_as_string(hide_password=False), autocommit=True)
        for _ in range(n)
    ]
