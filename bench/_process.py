"""Commands timed as the user runs them: a child process, its wall time and peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The console script of the venv this bench runs in (``python -m unistatus`` otherwise).
_SCRIPT = Path(sys.executable).with_name("unistatus")
UNISTATUS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "unistatus"]


@dataclass(frozen=True)
class Finished:
    seconds: float
    max_rss_mb: float  # the child's own peak (wait4's rusage), not the children's maximum
    returncode: int
    stdout: str
    stderr: str


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> Finished:
    """Start ``argv``, wait for it, and read its own rusage (``os.wait4``).

    ``resource.getrusage(RUSAGE_CHILDREN)`` is the maximum over every child so far, so
    it cannot tell a small command run after a big one; ``wait4`` gives each its own.
    Output goes to files, not pipes: a pipe nobody reads would block a chatty child.
    """
    out_path = Path(f"/tmp/_bench_cmd_{os.getpid()}.out")
    err_path = Path(f"/tmp/_bench_cmd_{os.getpid()}.err")
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = out_path.read_text(), err_path.read_text()
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return Finished(elapsed, usage.ru_maxrss / 1024, proc.returncode, stdout, stderr)


def unistatus(url: str, *args: str) -> list[str]:
    """The command line of ``unistatus --database-url URL ARGS``."""
    return [*UNISTATUS, "--database-url", url, *args]
