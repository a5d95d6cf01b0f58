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


def _forge_status_only(db: Database, archive: Path, out: Path) -> Path:
    """``archive`` rewritten as a hand-edited one would be: each table's status column
    alone, its files and checksums made anew, so that it verifies (a probe's)."""
    import gzip
    import hashlib
    import json
    import shutil

    from unistatus.db.infinite_times import infinite_times_as_text
    from unistatus.db.legacy_reflect import reflect_legacy_table
    from unistatus.migration.archive import live_lines

    shutil.copytree(archive, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest_read = read_manifest(archive)
    with db.engine.connect() as conn, infinite_times_as_text(conn):
        for entry, data in zip(manifest_read.tables, manifest["tables"], strict=True):
            kept = [c for c in entry.columns if c.name == "status"]
            table = reflect_legacy_table(conn, entry.spec)
            assert table is not None
            lines = list(live_lines(conn, table, kept))
            path = out / entry.file
            with gzip.GzipFile(path, "wb", mtime=0) as gz:
                gz.writelines(lines)
            data["columns"] = [c for c in data["columns"] if c["name"] == "status"]
            data["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            data["content_sha256"] = hashlib.sha256(b"".join(lines)).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_an_archive_without_the_ids_stands_for_no_status(db: Database, tmp_path: Path) -> None:
    """An archive holding the statuses without the rows' ids verified (its own columns
    match the live tables), was recorded, and the retirement dropped the columns on it:
    no status in it could be told whose (a probe)."""
    from unistatus.errors import InputError
    from unistatus.migration.archive import status_gaps

    seed(db)
    real = freeze_and_archive(db, tmp_path)
    try:
        forged = _forge_status_only(db, real, tmp_path / "forged")
        report = verify_archive(db.engine, forged)
        assert report.ok, report.problems
        gaps = status_gaps(read_manifest(forged), db.settings)
        assert any("cashouts without its id column" in gap for gap in gaps), gaps
        with pytest.raises(InputError, match="without its id column"):
            record_verified(db.engine, report, actor="test", settings=db.settings)
        record_verified(db.engine, report, actor="test")  # as recorded before the fix
        with pytest.raises(GateError, match=r"cashouts\.id"):
            retire_legacy_columns(db.engine, db.settings, actor="test")
        assert not legacy_columns_dropped(db.engine, db.settings)
    finally:
        undo_cleanup(db.engine, db.settings)


def test_a_manifest_naming_a_file_outside_its_archive_is_refused(
    db: Database, tmp_path: Path
) -> None:
    """A manifest alone, pointing at another archive's files, verified and could be
    recorded; moving the directory then lost its data (a probe)."""
    import json

    from unistatus.errors import InputError

    seed(db)
    real = freeze_and_archive(db, tmp_path)
    try:
        lone = tmp_path / "lone"
        lone.mkdir()
        manifest = json.loads((real / "manifest.json").read_text())
        for table in manifest["tables"]:
            table["file"] = str(real / table["file"])
        (lone / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(InputError, match="not a file name of the archive's own"):
            verify_archive(db.engine, lone)
        for table in manifest["tables"]:
            table["file"] = f"../archive/{Path(table['file']).name}"
        (lone / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(InputError, match="not a file name of the archive's own"):
            read_manifest(lone)
    finally:
        undo_cleanup(db.engine, db.settings)


def test_an_id_unique_by_an_index_of_its_own_stands_for_its_rows(
    db: Database, tmp_path: Path
) -> None:
    """An id unique by an index, not the primary key, passes the gate into phase 1; its
    archive must be recordable too (the first version wanted the key: a review)."""
    import dataclasses

    from unistatus.migration.archive import status_gaps

    seed(db)
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    manifest = read_manifest(out)
    manifest.tables = [
        dataclasses.replace(
            t,
            columns=[dataclasses.replace(c, primary_key=False) for c in t.columns],
        )
        for t in manifest.tables
    ]
    assert status_gaps(manifest, db.settings) == []
