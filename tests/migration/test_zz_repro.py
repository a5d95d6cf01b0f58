from __future__ import annotations

from pathlib import Path

from test_retire import freeze_and_archive, seed
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app
from unistatus.migration.retire import retire_legacy_columns, undo_cleanup


def test_repro(pg: Database, tmp_path: Path) -> None:
    db = pg
    seed(db)
    freeze_and_archive(db, tmp_path)
    retire_legacy_columns(db.engine, db.settings, actor="test")
    try:
        r = CliRunner().invoke(
            app,
            [
                "--database-url",
                db.url,
                "mode",
                "set",
                "DUAL_WRITE_UNIFIED_PRIMARY",
                "--reason",
                "x",
            ],
        )
        print(r.exit_code, r.output)
        r = CliRunner().invoke(
            app,
            [
                "--database-url",
                db.url,
                "mode",
                "set",
                "DUAL_WRITE_UNIFIED_PRIMARY",
                "--reason",
                "x",
                "--force",
            ],
        )
        print(r.exit_code, r.output)
        r = CliRunner().invoke(
            app, ["--database-url", db.url, "rollback", "--emergency", "--reason", "x"]
        )
        print(r.exit_code, r.output)
    finally:
        undo_cleanup(db.engine, db.settings)
