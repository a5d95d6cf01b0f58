"""An output file is written whole or not at all: `export prometheus-rules --out` on a
full disk (here a file size limit) left a 4,096-byte rules file in place of the good
one before it, exit 2 (a probe)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest


def _with_a_4k_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def _export(what: str, out: Path, *, limited: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unistatus", "export", what, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_with_a_4k_file_limit if limited else None,
        cwd=out.parent,
    )


@pytest.mark.parametrize("what", ["prometheus-rules", "grafana-dashboard"])
def test_an_export_that_cannot_be_written_whole_leaves_the_file_before_it(
    tmp_path: Path, what: str
) -> None:
    out = tmp_path / "out.txt"
    out.write_text("the good file of before\n")
    done = _export(what, out, limited=True)
    assert done.returncode == 2, done.stderr
    assert "File too large" in done.stderr, done.stderr
    assert out.read_text() == "the good file of before\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    whole = _export(what, out, limited=False)
    assert whole.returncode == 0, whole.stderr
    assert len(out.read_text()) > 4096


def test_a_link_a_mode_and_a_long_name_are_kept(tmp_path: Path) -> None:
    """The first version replaced a symbolic link with a file (its target left stale),
    gave an existing 0600 file the umask's mode, and failed on a long name or a
    leftover temporary file of the same pid (a review)."""
    import os

    from unistatus.cli.whole_file import write_whole

    real = tmp_path / "real.yml"
    real.write_text("old")
    real.chmod(0o600)
    link = tmp_path / "link.yml"
    link.symlink_to(real)
    write_whole(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert (real.stat().st_mode & 0o777) == 0o600
    long = tmp_path / ("x" * 250)
    write_whole(long, "whole")
    assert long.read_text() == "whole"
    out = tmp_path / "out.yml"
    (tmp_path / f".out.yml.{os.getpid()}.partial").write_text("left over")
    write_whole(out, "whole")
    assert out.read_text() == "whole"
    fresh = tmp_path / "fresh.yml"
    before = os.umask(0o022)
    try:
        write_whole(fresh, "x")
    finally:
        os.umask(before)
    assert (fresh.stat().st_mode & 0o777) == 0o644


def test_a_stream_is_written_as_it_is(tmp_path: Path) -> None:
    """`--out /dev/stdout` into a pipe failed ("No such file or directory": its link
    resolved to pipe:[N]), and into a redirected file replaced it, losing what it held
    (a second review)."""
    log = tmp_path / "app.log"
    log.write_text("held before\n")
    code = (
        "from pathlib import Path\n"
        "from unistatus.cli.whole_file import write_whole\n"
        "write_whole(Path('/dev/stdout'), 'written\\n')\n"
    )
    with log.open("a") as out:
        done = subprocess.run([sys.executable, "-c", code], stdout=out, timeout=60)
    assert done.returncode == 0 and log.read_text() == "held before\nwritten\n"
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout == "written\n", piped.stderr
