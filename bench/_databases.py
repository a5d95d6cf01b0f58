"""Throwaway databases for the benchmarks: created for one run, removed after it."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

LOCAL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def throwaway_postgres(server: str = LOCAL_SERVER, label: str = "bench") -> Iterator[str]:
    """A new database on ``server`` (URL of any database there), dropped afterwards."""
    name = f"unistatus_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def throwaway_sqlite(label: str = "bench") -> Iterator[str]:
    """A SQLite file in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"unistatus_{label}_") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


@contextmanager
def given_or_throwaway(url: str | None, label: str) -> Iterator[str]:
    """The given database as it is, or a throwaway one on the local server."""
    if url is not None:
        yield url
        return
    with throwaway_postgres(LOCAL_SERVER, label) as created:
        yield created
