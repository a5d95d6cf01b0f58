"""The retirement's archive gate: the archive must hold every legacy status column.

An archive exported while the columns were retired has no status column; verified, it
matched the live tables (it compares the manifest's columns). After an undo it must not
let the statuses be dropped again with no archived copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_retire import freeze_and_archive, seed
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app
from unistatus.errors import GateError
from unistatus.migration.archive import (
    export_archive,
    read_manifest,
    record_verified,
    recorded_archive,
    verify_archive,
)
from unistatus.migration.retire import (
    legacy_columns_dropped,
    retire_legacy_columns,
    undo_cleanup,
)


def statusless_archive(db: Database, tmp_path: Path) -> Path:
    """An archive exported while the status columns were retired (then restored)."""
    seed(db)
    freeze_and_archive(db, tmp_path)
    retire_legacy_columns(db.engine, db.settings, actor="test")
    out = tmp_path / "while-retired"
    export_archive(db.engine, db.settings, out)
    undo_cleanup(db.engine, db.settings, actor="test")
    assert all("status" not in {c.name for c in t.columns} for t in read_manifest(out).tables)
    return out


def test_the_gate_refuses_an_archive_without_the_status_columns(
    db: Database, tmp_path: Path
) -> None:
    try:
        out = statusless_archive(db, tmp_path)
        report = verify_archive(db.engine, out)
        assert report.ok  # its own columns match the live tables
        record_verified(db.engine, report, actor="test")  # as recorded before the fix
        with pytest.raises(GateError, match=r"cashouts\.status"):
            retire_legacy_columns(db.engine, db.settings, actor="test")
        assert not legacy_columns_dropped(db.engine, db.settings)
    finally:
        undo_cleanup(db.engine, db.settings)


def test_archive_verify_does_not_record_an_archive_without_the_status_columns(
    db: Database, tmp_path: Path
) -> None:
    try:
        out = statusless_archive(db, tmp_path)
        before = recorded_archive(db.engine)
        done = CliRunner().invoke(app, ["--database-url", db.url, "archive", "verify", str(out)])
        assert done.exit_code == 1, done.output
        assert "status" in done.output and "not recorded" in done.output, done.output
        assert recorded_archive(db.engine) == before
    finally:
        undo_cleanup(db.engine, db.settings)
