"""Commands timed as the user runs them: a child process, its wall time and peak memory."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# The console script of the venv this bench runs in (``python -m unistatus`` otherwise).
_SCRIPT = Path(sys.executable).with_name("unistatus")
UNISTATUS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "unistatus"]


def with_bytecode(*sources: str | Path) -> None:
    """Compile the Python sources a timed command will import, as installing a package
    does (pip compiles its modules): an editable install run with
    ``PYTHONDONTWRITEBYTECODE`` set (as on the development machines) never writes them,
    and every command then compiled all of unistatus again, 0.08 s of a 0.7 s command.
    Unchanged sources are skipped; the files go to ``__pycache__`` (git-ignored)."""
    for source in sources:
        compileall.compile_dir(str(source), quiet=1)


def _package_sources() -> Path:
    import unistatus

    return Path(unistatus.__file__).parent


# The unistatus the benches' commands run (a ``--base-src`` tree is compiled where given).
with_bytecode(_package_sources())


@dataclass(frozen=True)
class Finished:
    seconds: float
    max_rss_mb: float  # the largest of the child and the processes it reaped (wait4)
    returncode: int
    stdout: str
    stderr: str


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> Finished:
    """Start ``argv``, wait for it, and read its own rusage (``os.wait4``).

    ``resource.getrusage(RUSAGE_CHILDREN)`` is the maximum over every child so far, so
    it cannot tell a small command run after a big one; ``wait4`` gives each its own.
    Output goes to (anonymous) files, not pipes: a pipe nobody reads would block a
    chatty child.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return Finished(elapsed, usage.ru_maxrss / 1024, proc.returncode, stdout, stderr)


def unistatus(url: str, *args: str) -> list[str]:
    """The command line of ``unistatus --database-url URL ARGS``."""
    return [*UNISTATUS, "--database-url", url, *args]
