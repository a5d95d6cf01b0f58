"""An export killed (SIGKILL: the OOM killer, a CI job's timeout) leaves nothing that
blocks its retry: the archive is written beside ``--out`` and renamed into place whole.

Before, the killed export left its table files in ``--out`` without a manifest, and the
retry was refused: "... is not empty: export into a new directory".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from test_archive import seed
from typer.testing import CliRunner

import unistatus
from conftest import Database
from unistatus.cli import app
from unistatus.errors import InputError
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
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        _killed_export(db, out)
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
        export_archive(db.engine, db.settings, out)  # the retry, as it was
        assert verify_archive(db.engine, out).ok


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
