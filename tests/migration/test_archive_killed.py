"""An export killed (SIGKILL: the OOM killer, a CI job's timeout) leaves nothing that
blocks its retry: a new ``--out`` is written beside it and renamed into place whole; an
existing empty ``--out`` (a mount point, a directory whose parent is not writable) is
written inside, in a directory of the export's own, and kept as it is (owner, mode).

Before, the killed export left its table files in ``--out`` without a manifest, and the
retry was refused: "... is not empty: export into a new directory".
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

from test_archive import seed
from typer.testing import CliRunner

import unistatus
from conftest import Database
from unistatus.cli import app
from unistatus.errors import InputError
from unistatus.migration import archive
from unistatus.migration.archive import export_archive, verify_archive

SRC = str(Path(unistatus.__file__).parents[1])

# The export, killed with SIGKILL as it writes its second table.
KILLED = """
import os, signal, sys
from unistatus.config import load_settings
from unistatus.db.engine import create_engine
from unistatus.migration import archive
url, out = sys.argv[1:]
real, written = archive._export_table, []
def then_killed(*args, **kwargs):
    if written:
        os.kill(os.getpid(), signal.SIGKILL)
    written.append(real(*args, **kwargs))
    return written[-1]
archive._export_table = then_killed
settings = load_settings(database_url=url)
archive.export_archive(create_engine(url, schema=settings.schema), settings, out)
"""


def _killed_export(db: Database, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run(
        [sys.executable, "-c", KILLED, db.url, str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_an_export_killed_midway_leaves_out_as_it_was(sqlite_db: Database, tmp_path: Path) -> None:
    db = sqlite_db
    seed(db)
    out = tmp_path / "new"
    _killed_export(db, out)
    assert not out.exists()
    export_archive(db.engine, db.settings, out)  # the retry, as it was
    assert verify_archive(db.engine, out).ok


def test_an_export_into_an_existing_empty_out_writes_nothing_beside_it(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """An empty ``--out`` made beforehand (a mount point: a rename onto it fails, EBUSY or
    EXDEV, after the whole export was written on the parent's file system; a parent that
    is not writable; its owner, mode and ACLs, which a rename replaces) is written inside.
    Run as root, the parent's mode does not stop a write: what the export creates there
    is looked at as it writes."""
    db = sqlite_db
    seed(db)
    parent = tmp_path / "parent"
    out = parent / "out"
    out.mkdir(parents=True)
    out.chmod(0o750)
    seen: list[list[str]] = []
    real = archive._export_table

    def looked_at(*args: Any, **kwargs: Any) -> Any:
        seen.append(sorted(p.name for p in parent.iterdir()))
        return real(*args, **kwargs)

    parent.chmod(0o555)
    try:
        with patch.object(archive, "_export_table", looked_at):
            export_archive(db.engine, db.settings, out)
    finally:
        parent.chmod(0o755)
    assert seen and all(names == ["out"] for names in seen), seen
    assert sorted(p.name for p in parent.iterdir()) == ["out"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert verify_archive(db.engine, out).ok


def test_an_export_killed_in_an_existing_empty_out_can_be_retried(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """What the killed export left is inside ``--out`` only; the retry is refused naming
    it as an unfinished export, safe to delete; deleted, the retry writes the archive."""
    db = sqlite_db
    seed(db)
    out = tmp_path / "empty"
    out.mkdir()
    out.chmod(0o750)
    _killed_export(db, out)
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]
    left = list(out.iterdir())
    assert left and all(p.name.startswith(".unfinished-") for p in left), left
    r = CliRunner().invoke(app, ["--database-url", db.url, "archive", "export", "--out", str(out)])
    assert r.exit_code == 2
    assert "unfinished export" in r.output and "safe to delete" in r.output, r.output
    assert left[0].name in r.output, r.output
    for p in left:
        shutil.rmtree(p)
    export_archive(db.engine, db.settings, out)  # the retry
    assert verify_archive(db.engine, out).ok
    assert stat.S_IMODE(out.stat().st_mode) == 0o750


def test_a_directory_an_older_export_left_unfinished_says_so(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Table files without a manifest (what a killed export of an older version left):
    refused still (they are not this run's), saying what they are and that they can go."""
    db = sqlite_db
    seed(db)
    out = tmp_path / "x"
    out.mkdir()
    (out / "cashouts.jsonl.gz").write_bytes(b"")
    r = CliRunner().invoke(app, ["--database-url", db.url, "archive", "export", "--out", str(out)])
    assert r.exit_code == 2
    assert "unfinished export" in r.output and "safe to delete" in r.output, r.output
    try:
        export_archive(db.engine, db.settings, out)
    except InputError as exc:
        assert "no manifest.json" in str(exc)
    else:
        raise AssertionError("an unfinished export's directory was written into")
