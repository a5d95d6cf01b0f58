"""Outages of the throwaway test database: refused connections, ended backends.

Real faults, never a stopped server: new connections are refused with ``ALTER DATABASE
... ALLOW_CONNECTIONS false`` on the test's own database (restored however the block
ends) and its backends ended with ``pg_terminate_backend``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from conftest import Database

DEADLINE = 10.0


class Server:
    """Admin actions on the throwaway test database, from the server's ``postgres`` db."""

    def __init__(self, db: Database) -> None:
        url = sa.engine.make_url(db.url)
        self.name = url.database
        self.admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def allow_connections(self, allow: bool) -> None:
        with self.admin.connect() as conn:
            flag = "true" if allow else "false"
            conn.exec_driver_sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS {flag}')

    def terminate(self, where: str) -> int:
        """End the matching backends of the test database; waits until they are gone."""
        with self.admin.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
                    f"FROM pg_stat_activity WHERE datname = '{self.name}' AND ({where})"
                ).scalar_one()
            )

    def wait_for(self, where: str) -> None:
        """Until a backend of the test database matches ``where`` (with a deadline)."""
        end = time.monotonic() + DEADLINE
        with self.admin.connect() as conn:
            while time.monotonic() < end:
                found = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity "
                    f"WHERE datname = '{self.name}' AND ({where})"
                ).scalar_one()
                if found:
                    return
                time.sleep(0.01)
        raise AssertionError(f"no backend with {where} within {DEADLINE}s")

    @contextmanager
    def refusing(self) -> Iterator[None]:
        """Refuse new connections while inside (restored however the block ends)."""
        self.allow_connections(False)
        try:
            yield
        finally:
            self.allow_connections(True)

    def close(self) -> None:
        self.allow_connections(True)
        self.admin.dispose()
