"""A private PgBouncer in transaction mode in front of the test server, for one test.

Started from Debian's ``pgbouncer`` package (``.ci/run`` installs it) on a free port of
its own, with its own files in a temporary directory, and stopped after the test: the
machine's services are never touched. Without the program the test skips loudly,
except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import IN_CI
from support.serving import free_port

# Debian installs it in /usr/sbin, which is not on every user's PATH.
_PLACES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def _program() -> str | None:
    return shutil.which("pgbouncer") or next((p for p in _PLACES if os.access(p, os.X_OK)), None)


def _missing(reason: str) -> None:
    message = f"PgBouncer unavailable: {reason}"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it (.ci/run installs it)", pytrace=False)
    pytest.skip(f"SKIPPING PGBOUNCER TESTS: {message}")


@contextmanager
def pgbouncer(database_url: str) -> Iterator[str]:
    """``database_url`` as reached through a new PgBouncer (pool_mode = transaction,
    a pool of 20 server connections, trust authentication as the test server has)."""
    program = _program()
    if program is None:
        _missing("no pgbouncer program (apt-get install pgbouncer)")
    assert program is not None
    url = sa.engine.make_url(database_url)
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="unistatus_pgbouncer_"))
    user = url.username or "postgres"
    (home / "users.txt").write_text(f'"{user}" ""\n')
    (home / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={url.host or '127.0.0.1'} port={url.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {home / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 20\nmax_client_conn = 200\n"
        f"logfile = {home / 'pgbouncer.log'}\npidfile = {home / 'pgbouncer.pid'}\n"
    )
    argv = [program, "-q", str(home / "pgbouncer.ini")]
    if os.geteuid() == 0:  # it will not run as root: as the server's own user
        for path in (home, *home.iterdir()):
            shutil.chown(path, "postgres")
        argv[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(port, proc, home)
        yield url.set(port=port).render_as_string(hide_password=False)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)


def _wait_for(port: int, proc: subprocess.Popen[bytes], home: Path) -> None:
    until = time.monotonic() + 15
    while time.monotonic() < until:
        if proc.poll() is not None:
            log = home / "pgbouncer.log"
            said = log.read_text() if log.exists() else ""
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"pgbouncer exited ({proc.returncode}): {err}{said}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen on port {port} within 15 s")
