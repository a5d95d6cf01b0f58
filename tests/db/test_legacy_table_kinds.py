"""A legacy table of a kind unistatus cannot work on is refused at `init` and at start,
naming the table and its kind, before anything is created (found by an exploratory
tester): a PostgreSQL view (the capture then failed with "Triggers on views cannot have
transition tables", the retirement with "ALTER action DROP COLUMN cannot be performed")
and a SQLite ``WITHOUT ROWID`` table (a create's id was never assigned, and the error
blamed "a rule of the application's")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from unistatus.cli import app
from unistatus.config import load_settings
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.errors import ConfigError


def _init(url: str) -> Any:
    return CliRunner().invoke(app, ["--database-url", url, "init"])


@pytest.mark.postgres
def test_a_view_as_a_legacy_table_is_refused(scratch_pg: Any) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE exchanges RENAME TO exchanges_data")
        conn.exec_driver_sql("CREATE VIEW exchanges AS SELECT * FROM exchanges_data")
    with pytest.raises(ConfigError, match=r"legacy table 'exchanges' .*is a view"):
        resolve_legacy_tables(db.engine, db.settings)
    result = _init(db.url)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "'exchanges'" in text and "view" in text, text


def test_a_sqlite_table_without_rowid_is_refused(tmp_path: Path) -> None:
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
    assert result.exit_code == 2, text
    assert "'escrows'" in text and "WITHOUT ROWID" in text, text
    with pytest.raises(ConfigError, match="WITHOUT ROWID"):
        resolve_legacy_tables(sa.create_engine(url), load_settings(database_url=url))
