"""`archive verify` once the legacy status columns are retired.

The archive is then the only copy of the legacy statuses, and the live tables have no
status column to compare it with: it is checked on its own terms (its files against its
manifest, the manifest against the one recorded before the retirement). Before, every
archive failed alike (`columns missing in the database: status`), so a forged one could
not be told from the genuine one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_retire import freeze_and_archive, seed
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app
from unistatus.errors import InputError
from unistatus.migration.archive import (
    export_archive,
    read_manifest,
    record_verified,
    recorded_archive,
    verify_archive,
)
from unistatus.migration.retire import retire_legacy_columns, undo_cleanup


def forge(genuine: Path, forged: Path) -> None:
    """A copy of ``genuine`` with one cashout's status changed and every hash of the
    manifest recomputed: consistent in itself, but not the archive that was verified."""
    shutil.copytree(genuine, forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    entry = next(t for t in manifest["tables"] if t["name"] == "cashouts")
    status = [c["name"] for c in entry["columns"]].index("status")
    path = forged / entry["file"]
    with gzip.open(path, "rb") as f:
        rows = [json.loads(line) for line in f]
    assert rows[0][status] != "REJECTED"
    rows[0][status] = "REJECTED"
    lines = b"".join(
        json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for r in rows
    )
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(lines)
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    entry["content_sha256"] = hashlib.sha256(lines).hexdigest()
    (forged / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def verify_json(db: Database, directory: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = CliRunner().invoke(
        app, ["--database-url", db.url, "archive", "verify", str(directory), "--json", *extra]
    )
    return done.exit_code, json.loads(done.stdout)


@pytest.fixture
def retired(db: Database, tmp_path: Path) -> Any:
    """Seeded, frozen, archived (verified and recorded), retired; the archive and a forged
    copy of it. The columns are restored after the test."""
    seed(db)
    genuine = freeze_and_archive(db, tmp_path)
    forged = tmp_path / "forged"
    forge(genuine, forged)
    assert not verify_archive(db.engine, forged).ok  # before: the live statuses differ
    retire_legacy_columns(db.engine, db.settings, actor="test")
    try:
        yield genuine, forged
    finally:
        undo_cleanup(db.engine, db.settings)


def test_after_retirement_the_genuine_archive_verifies_and_a_forged_one_does_not(
    db: Database, retired: tuple[Path, Path]
) -> None:
    genuine, forged = retired
    recorded = recorded_archive(db.engine)
    assert recorded is not None

    code, out = verify_json(db, genuine, "--no-record")
    assert code == 0, out
    assert out["ok"] and out["problems"] == []
    assert out["columns_retired"] is True
    assert out["matches_recorded"] is True
    assert out["recorded_manifest_sha256"] == recorded["manifest_sha256"]
    assert out["recorded"] is False
    assert {"directory", "manifest_sha256", "tables", "not_recorded_because"} <= set(out)
    assert all(t["live_rows"] is None for t in out["tables"])

    code, bad = verify_json(db, forged, "--no-record")
    assert code == 1, bad
    assert not bad["ok"] and bad["matches_recorded"] is False
    assert bad["manifest_sha256"] == read_manifest(forged).sha256
    assert any(
        "manifest" in p and recorded["manifest_sha256"] in p and bad["manifest_sha256"] in p
        for p in bad["problems"]
    ), bad["problems"]
    assert not any("columns missing" in p for p in bad["problems"]), bad["problems"]
    assert recorded_archive(db.engine) == recorded


def test_after_retirement_the_text_output_says_what_was_checked(
    db: Database, retired: tuple[Path, Path]
) -> None:
    genuine, forged = retired
    done = CliRunner().invoke(app, ["--database-url", db.url, "archive", "verify", str(genuine)])
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "matches the archive recorded before the retirement" in text, text
    assert "status columns are retired" in text, text
    assert "live None" not in text, text

    done = CliRunner().invoke(app, ["--database-url", db.url, "archive", "verify", str(forged)])
    assert done.exit_code == 1, done.output
    text = " ".join(done.output.split())
    assert "does not match the archive recorded before the retirement" in text, text


def test_after_retirement_no_other_archive_can_be_recorded(
    db: Database, retired: tuple[Path, Path], tmp_path: Path
) -> None:
    genuine, _ = retired
    recorded = recorded_archive(db.engine)
    # Exported now, it holds no status: it matches nothing recorded, and is not recorded.
    fresh = tmp_path / "after"
    export_archive(db.engine, db.settings, fresh)
    code, out = verify_json(db, fresh)
    assert code == 1, out
    assert out["recorded"] is False and out["matches_recorded"] is False
    assert any("retired" in r for r in out["not_recorded_because"]), out
    assert recorded_archive(db.engine) == recorded
    # Nor through the library, whatever the report says.
    report = verify_archive(db.engine, genuine)
    with pytest.raises(InputError, match="retired"):
        record_verified(db.engine, report, actor="test")
    assert recorded_archive(db.engine) == recorded
    # The genuine one, with --record (the default): verified, nothing new recorded.
    code, out = verify_json(db, genuine)
    assert code == 0 and out["recorded"] is False, out
    assert recorded_archive(db.engine) == recorded


def test_after_the_undo_verify_compares_the_live_tables_again(
    db: Database, retired: tuple[Path, Path]
) -> None:
    genuine, forged = retired
    undo_cleanup(db.engine, db.settings, actor="test")
    report = verify_archive(db.engine, genuine)
    assert report.ok and not report.columns_retired
    assert all(t["live_rows"] is not None for t in report.tables)
    bad = verify_archive(db.engine, forged)
    assert any("cashouts: row values differ" in p for p in bad.problems), bad.problems
