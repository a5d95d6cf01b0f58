"""An output file named after the database's own file: `check --out u.db` truncated the
SQLite database to 0 bytes, `diagnose --out u.db` replaced it with its JSON (a probe).
Every --out is refused when it is the database file (or its -wal, -shm, -journal),
before anything is written; and `check --out /dev/stdout` (a stream under another
name, its mismatch lines overwritten by the report) is refused as `--out -` is."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app


def database_file(db: Database) -> Path:
    return Path(str(sa.engine.make_url(db.url).database))


def invoke(db: Database, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--database-url", db.url, *args])
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize(
    "command",
    [["check", "--out"], ["diagnose", "--out"], ["export", "prometheus-rules", "--out"]],
    ids=["check", "diagnose", "export"],
)
@pytest.mark.parametrize("suffix", ["", "-wal"])
def test_an_out_naming_the_database_file_is_refused(
    sqlite_db: Database, command: list[str], suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = database_file(sqlite_db)
    monkeypatch.setenv("UNISTATUS_DATABASE_URL", sqlite_db.url)  # export reads the settings
    target = Path(f"{path}{suffix}")
    before = path.read_bytes()
    code, said = invoke(sqlite_db, *command, str(target))
    assert code == 2, said
    assert "the database's own file" in said, said
    sqlite_db.engine.dispose()
    assert path.read_bytes() == before
    assert sqlite_db.count("cashouts") == 0  # still a database


def test_out_to_a_stream_is_refused_as_out_dash(sqlite_db: Database) -> None:
    code, said = invoke(sqlite_db, "check", "--out", "/dev/stdout")
    assert code == 2 and "stdout or stderr" in said, said


def test_an_out_another_check_is_writing_is_refused(sqlite_db: Database, tmp_path: Path) -> None:
    """Two checks given one --out: the second truncated the first's lines, and the file
    ended with lines of both, one spliced into another, each run saying complete (a
    probe). The file a check writes is locked while it writes: the second is refused,
    the first's lines left as they are."""
    import fcntl  # noqa: PLC0415

    out = tmp_path / "mismatches.jsonl"
    out.write_text('{"system": "CASHOUT", "legacy_id": 1}\n')
    with out.open("ab") as writing:  # another check at work on it
        fcntl.flock(writing.fileno(), fcntl.LOCK_EX)
        code, said = invoke(sqlite_db, "check", "--out", str(out))
        assert code == 2 and "another check" in said, said
        assert out.read_text() == '{"system": "CASHOUT", "legacy_id": 1}\n'
    code, said = invoke(sqlite_db, "check", "--out", str(out))  # free again
    assert code == 0 and out.read_text() == "", said


def test_a_file_written_over_counts_its_bytes_from_nothing(tmp_path: Path) -> None:
    """A check over an existing --out counted the bytes its ranges wrote from the old
    file's end (opened for appending, then cut), and a resume was refused as "shorter
    than what the run wrote" (a review)."""
    from unistatus.migration.check_out import MismatchWriter  # noqa: PLC0415

    out = tmp_path / "m.jsonl"
    out.write_bytes(b"x" * 5000)
    writer = MismatchWriter(out)
    assert writer.sync() == 0 and out.stat().st_size == 0
    writer.close()
    resumed = MismatchWriter(out, keep_bytes=0)
    resumed.close()


def test_out_to_stdout_redirected_to_a_file_is_refused(sqlite_db: Database, tmp_path: Path) -> None:
    """`check --json --out /dev/stdout > report.json`: the mismatch lines and the report
    went to one file through two descriptions, the report overwriting the lines (a
    probe); a file under /dev that is no stream (/dev/shm) is a file like any other."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    report = tmp_path / "report.json"
    with report.open("wb") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "unistatus", "--database-url", sqlite_db.url, "check",
             "--json", "--out", "/dev/stdout"],
            stdout=stdout, stderr=subprocess.PIPE, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert b"stdout or stderr" in done.stderr
