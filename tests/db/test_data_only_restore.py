"""A data-only restore (``pg_dump --data-only``, then ``pg_restore --data-only`` or
``psql``) into a database `unistatus init` has just installed: the usual way to copy a
database whose schema the new one already has. pg_dump's output runs with
``search_path = ''``, and revision 0021's guard on the control table named that table
without its schema: every COPY of ``unistatus_control`` failed ("relation
"unistatus_control" does not exist ... PL/pgSQL function unistatus_control_summary_guard()"),
every other table loaded, and the copy said LEGACY_ONLY, phase 0 while its history ended
in dual write (exploratory restore test). Every function the revisions install names
our tables with their schema, whatever the search_path of the session calling it."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import PG_IN_EVERY_LAYOUT
from support.phases import to_phase
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.control import get_mode
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.domain.statuses import LegacySystemType as S
from unistatus.migration.phases import read_phase

pytestmark = pytest.mark.skipif(
    shutil.which("pg_dump") is None or shutil.which("psql") is None,
    reason="pg_dump and psql are not on PATH",
)


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq's tools take it."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)


def test_a_data_only_restore_keeps_the_mode_and_the_phase(
    scratch_pg: Any, empty_pg: str, tmp_path: Any
) -> None:
    to_phase(scratch_pg.engine, 1)  # dual write, legacy primary
    dump = tmp_path / "data.sql"
    subprocess.run(
        ["pg_dump", "--data-only", "--file", str(dump), _libpq(scratch_pg.url)], check=True
    )
    engine = create_engine(empty_pg)
    try:
        schema.upgrade(engine, load_settings(database_url=empty_pg))  # `unistatus init`
        restored = subprocess.run(
            ["psql", "--quiet", "--file", str(dump), _libpq(empty_pg)],
            capture_output=True,
            text=True,
        )
        assert "unistatus_control" not in restored.stderr, restored.stderr
        assert {get_mode(engine, s) for s in S} == {M.DUAL_WRITE_LEGACY_PRIMARY}
        with engine.connect() as conn:
            assert {read_phase(conn, s) for s in S} == {1}
    finally:
        engine.dispose()


@PG_IN_EVERY_LAYOUT
def test_the_functions_read_our_tables_whatever_the_search_path(pg: Any) -> None:
    to_phase(pg.engine, 1)
    where = pg.settings.schema or "public"
    dual = M.DUAL_WRITE_LEGACY_PRIMARY.value
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL search_path = ''")
        assert conn.exec_driver_sql(f"SELECT {where}.unistatus_locked_mode()").scalar_one() == dual
        mode = conn.exec_driver_sql(f"SELECT {where}.unistatus_locked_mode('ESCROW')")
        assert mode.scalar_one() == dual
        conn.exec_driver_sql(  # the guard reads the systems' keys
            f"UPDATE {where}.unistatus_control SET updated_by = 'restore' WHERE key = 'mode'"
        )
        with pytest.raises(sa.exc.DBAPIError, match="newer unistatus"):
            conn.exec_driver_sql(
                f"UPDATE {where}.unistatus_control SET value = 'LEGACY_ONLY' WHERE key = 'mode'"
            )
