"""`check --out` on a full disk: said as `archive export` says it ("cannot write
<path>: <reason>"), and the file left holding whole lines only.

The disk fills up for real in a child process: a file-size limit (``RLIMIT_FSIZE``,
with ``SIGXFSZ`` ignored, so a write past it fails with EFBIG as a full disk's fails
with ENOSPC). The database (PostgreSQL, its server's files) is not limited.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path
from typing import Any

from support.check_data import damage, populate
from support.cli_run import UNISTATUS

N = 120
LIMIT = 3000  # bytes: a few lines of the run's mismatches, not all


def _limited() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_check_out_on_a_full_disk_says_cannot_write_and_leaves_whole_lines(
    pg: Any, tmp_path: Path
) -> None:
    populate(pg.engine, pg.settings, N)
    damage(pg.engine, pg.settings, N)
    out = tmp_path / "mm.jsonl"
    done = subprocess.run(
        [UNISTATUS, "--database-url", pg.url, "check", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited,
    )
    text = out.read_text() if out.exists() else ""
    assert text == "" or text.endswith("\n"), (done.stderr, text[-200:])
    for line in text.splitlines():
        json.loads(line)  # every line whole
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr.strip()
    assert err.startswith(f"error: cannot write {out}: File too large"), err
    assert "unexpected" not in err and "--debug" not in err
