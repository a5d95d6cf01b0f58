"""Files holding payment data are readable by their owner only, whatever the umask:
under umask 022 an archive's tables and a check's mismatches were world-readable (a
probe)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Database
from unistatus.migration.archive import export_archive
from unistatus.migration.check import run_check


@pytest.fixture
def open_umask() -> Iterator[None]:
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_archive_is_its_owners_alone(db: Database, tmp_path: Path, open_umask: None) -> None:
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    assert _mode(out) == 0o700
    assert {p.name: _mode(p) for p in out.iterdir()} == {p.name: 0o600 for p in out.iterdir()}


def test_an_archive_made_in_an_empty_directory_has_its_files_its_owners(
    db: Database, tmp_path: Path, open_umask: None
) -> None:
    out = tmp_path / "given"
    out.mkdir(mode=0o755)
    export_archive(db.engine, db.settings, out)
    assert all(_mode(p) == 0o600 for p in out.iterdir())


def test_a_mismatch_file_is_its_owners_alone(
    db: Database, tmp_path: Path, open_umask: None
) -> None:
    out = tmp_path / "mismatches.jsonl"
    run_check(db.engine, db.settings, out=out, store=False)
    assert out.exists() and _mode(out) == 0o600


def test_a_mismatch_file_there_before_becomes_its_owners(
    db: Database, tmp_path: Path, open_umask: None
) -> None:
    """The mode applied to a file the run created; one there before kept 0644 (a review)."""
    out = tmp_path / "mismatches.jsonl"
    out.write_text("")
    out.chmod(0o644)
    run_check(db.engine, db.settings, out=out, store=False)
    assert _mode(out) == 0o600
