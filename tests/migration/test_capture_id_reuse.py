"""A SQLite legacy table whose id is a plain INTEGER PRIMARY KEY hands the id of its
deleted newest row out again; a bypass INSERT of that id under the capture is taken for
the deleted row's transaction and overwrites its unified row, a money record
(exploratory review). `capture status` and `capture enable` name such tables."""

from __future__ import annotations

import json

import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app
from unistatus.config import load_settings
from unistatus.migration import capture


def test_capture_names_a_sqlite_legacy_table_that_hands_deleted_ids_out_again(
    sqlite_db: Database,
) -> None:
    db = sqlite_db
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE plain_cashouts (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, "
            "amount NUMERIC(20, 8) NOT NULL, currency VARCHAR(10) NOT NULL, status "
            "VARCHAR(64), created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)"
        )
    settings = load_settings(
        database_url=db.url, legacy_tables={"CASHOUT": {"table": "plain_cashouts"}}
    )
    assert capture.status(db.engine, settings).as_dict()["ids_reused"] == ["plain_cashouts"]
    assert capture.status(db.engine, db.settings).as_dict()["ids_reused"] == []  # AUTOINCREMENT
    env = {"UNISTATUS_LEGACY_TABLES": json.dumps({"CASHOUT": {"table": "plain_cashouts"}})}
    done = CliRunner().invoke(app, ["--database-url", db.url, "capture", "enable"], env=env)
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "plain_cashouts" in said and "AUTOINCREMENT" in said, said
    capture.disable(db.engine, settings, actor="t", reason="t")
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE plain_cashouts"))
