"""Revision 0006 (the retire branch's r001) run directly, without `unistatus retire
legacy-columns`: its frozen gates refuse what the command's gates refuse, before
anything changes (docs/retire.md, "When the drop may run").

`alembic upgrade retire@head` (``schema.upgrade`` to the retire revision) runs only the
revision's own checks. A legacy table that is a view, or a PL/pgSQL trigger whose
function reads the status column, were refused by the command alone: run directly, the
revision dropped the column under the trigger (every later write it fires on failing
with 'record "new" has no field "status"') and met the view with a database error
rather than a refusal naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_retire import _assert_unchanged, freeze_and_archive, seed
from test_retire_dependents import AUDIT, NO_AUDIT

from conftest import Database
from unistatus.db import schema
from unistatus.db.revisions import RETIRE_REVISION
from unistatus.errors import GateError
from unistatus.migration.retire import status_checksum, undo_cleanup


@pytest.mark.postgres
def test_a_direct_upgrade_refuses_a_plpgsql_trigger_reading_the_status_column(
    pg: Database, tmp_path: Path
) -> None:
    seed(pg)
    with pg.app_engine.begin() as conn:
        for sql in AUDIT:
            conn.exec_driver_sql(sql)
    try:
        freeze_and_archive(pg, tmp_path)
        before = status_checksum(pg.engine, pg.settings)
        with pytest.raises(GateError) as refused:
            schema.upgrade(pg.engine, pg.settings, RETIRE_REVISION)
        message = str(refused.value)
        assert "revision 0006 refused" in message, message
        assert "trigger audit" in message and "audit_status" in message, message
        assert "trigger stamp" in message and "stamp_escrow" in message, message
        assert "touch" not in message, message  # its function does not read the column
        _assert_unchanged(pg, before)
    finally:
        undo_cleanup(pg.engine, pg.settings)
        with pg.app_engine.begin() as conn:
            for sql in NO_AUDIT:
                conn.exec_driver_sql(sql)


@pytest.mark.postgres
def test_a_direct_upgrade_refuses_a_legacy_table_that_is_a_view(scratch_pg: Any) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE exchanges RENAME TO exchanges_data")
        conn.exec_driver_sql("CREATE VIEW exchanges AS SELECT * FROM exchanges_data")
    with pytest.raises(GateError, match=r"legacy table 'exchanges' is a view"):
        schema.upgrade(db.engine, db.settings, RETIRE_REVISION)
    assert schema.current_revision(db.engine) == schema.INSTALL_REVISION


def test_a_direct_upgrade_refuses_a_sqlite_legacy_table_that_is_a_view(
    sqlite_db: Database,
) -> None:
    db = sqlite_db
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE exchanges RENAME TO exchanges_data")
        conn.exec_driver_sql("CREATE VIEW exchanges AS SELECT * FROM exchanges_data")
    with pytest.raises(GateError, match=r"legacy table 'exchanges' is a view"):
        schema.upgrade(db.engine, db.settings, RETIRE_REVISION)
    assert schema.current_revision(db.engine) == schema.INSTALL_REVISION
