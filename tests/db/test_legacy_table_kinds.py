"""A legacy table of a kind unistatus cannot fully work on, refused where it would fail
and only there (an exploratory tester, then a reviewer).

A PostgreSQL view or foreign table works for the adapter, a check, a backfill: what
fails on it is the capture ("Triggers on views cannot have transition tables") and the
retirement ("ALTER action DROP COLUMN cannot be performed"). Those two refuse it, naming
the table and its kind, before anything changes; `init` and the adapter's start only
warn. A materialized view cannot be written at all: refused at every start. A SQLite
``WITHOUT ROWID`` table never assigns a create's ``INTEGER PRIMARY KEY``: a warning at
`init` and at the adapter's start, not a refusal of every command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from unistatus.cli import app
from unistatus.config import load_settings
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ConfigError, GateError
from unistatus.migration import capture
from unistatus.migration.retire import retire_legacy_columns


def _init(url: str) -> Any:
    return CliRunner().invoke(app, ["--database-url", url, "init"])


@pytest.fixture
def a_view(scratch_pg: Any) -> Any:
    """``exchanges`` as a simple updatable view over its table."""
    with scratch_pg.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE exchanges RENAME TO exchanges_data")
        conn.exec_driver_sql("CREATE VIEW exchanges AS SELECT * FROM exchanges_data")
    return scratch_pg


@pytest.mark.postgres
def test_a_view_resolves_and_init_warns(a_view: Any) -> None:
    db = a_view
    tables = resolve_legacy_tables(db.engine, db.settings)
    assert tables[LegacySystemType.EXCHANGE].name == "exchanges"
    result = _init(db.url)
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "'exchanges'" in text and "a view" in text and "capture" in text, text


@pytest.mark.postgres
def test_the_adapter_starts_on_a_view_with_a_warning(
    a_view: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from unistatus import DualWriteAdapter

    with caplog.at_level(logging.WARNING):
        DualWriteAdapter(a_view.url, record_stats=False).close()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "'exchanges'" in said and "a view" in said and "retire" in said, caplog.text


@pytest.mark.postgres
def test_capture_enable_refuses_a_view_and_changes_nothing(a_view: Any) -> None:
    db = a_view
    triggers = "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
    before = db.scalar(triggers)
    with pytest.raises(ConfigError, match=r"legacy table 'exchanges' is a view.*capture"):
        capture.enable(db.engine, db.settings)
    assert db.scalar(triggers) == before


@pytest.mark.postgres
def test_retire_refuses_a_view(a_view: Any) -> None:
    db = a_view
    with pytest.raises(GateError, match=r"nothing changed.*legacy table 'exchanges' is a view"):
        retire_legacy_columns(db.engine, db.settings)


@pytest.mark.postgres
def test_a_materialized_view_is_refused_at_start(scratch_pg: Any) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE exchanges RENAME TO exchanges_data")
        conn.exec_driver_sql("CREATE MATERIALIZED VIEW exchanges AS SELECT * FROM exchanges_data")
    with pytest.raises(ConfigError, match=r"legacy table 'exchanges' is a materialized view"):
        resolve_legacy_tables(db.engine, db.settings)


def test_a_sqlite_table_without_rowid_is_warned_about_not_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in ("cashouts", "escrows", "exchanges"):
            conn.exec_driver_sql(
                f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, "
                "amount NUMERIC NOT NULL, currency TEXT NOT NULL, status TEXT, "
                "created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL) "
                + ("WITHOUT ROWID" if table == "escrows" else "")
            )
    engine.dispose()
    result = _init(url)
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "'escrows'" in text and "WITHOUT ROWID" in text and "id" in text, text
    tables = resolve_legacy_tables(sa.create_engine(url), load_settings(database_url=url))
    assert tables[LegacySystemType.ESCROW].name == "escrows"
