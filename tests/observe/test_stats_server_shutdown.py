"""An application server's worker ended by SIGTERM flushes what its app's lifespan closes.

uvicorn (and gunicorn's UvicornWorker) shuts down gracefully on SIGTERM, runs the app's
lifespan shutdown, then raises the signal again with its default action: the process
ends without running ``atexit``, and the statistics recorded since the last interval's
flush were lost at every deploy. Closing the adapter in the lifespan's shutdown, as the
README shows, flushes them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import Database
from unistatus.observe.stats import window

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

APP = """
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from unistatus import DualWriteAdapter
from unistatus.config import load_settings

URL = {url!r}
adapter = DualWriteAdapter(
    URL, settings=load_settings(database_url=URL, stats_flush_seconds=60.0)
)


@asynccontextmanager
async def lifespan(_app):
    try:
        yield
    finally:
        {shutdown}


app = FastAPI(lifespan=lifespan)


@app.post("/cashouts")
def create() -> dict:
    return {{"ok": adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD").overall_success}}


uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, deadline: float) -> bytes:
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="POST")) as r:
                return bytes(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("shutdown", "flushed"),
    [("adapter.close()", 1), ("pass", None)],
    ids=["closed-in-the-lifespan", "left-to-atexit"],
)
def test_a_uvicorn_worker_ended_by_sigterm_flushes_the_adapter_its_lifespan_closes(
    sqlite_db: Database, tmp_path: Path, shutdown: str, flushed: int | None
) -> None:
    """Without the close (the second case) the worker ends by the signal, with no
    atexit: its last interval may be lost, what the docs say (not asserted as lost, so
    a better flush at shutdown would not fail this)."""
    port = _free_port()
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP).format(url=sqlite_db.url, shutdown=shutdown, port=port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISTATUS_")}
    server = subprocess.Popen(
        [sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        body = _post(f"http://127.0.0.1:{port}/cashouts", time.monotonic() + 20)
        assert b'"ok":true' in body
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == -signal.SIGTERM, stderr  # ended by the signal: no atexit
    assert "Traceback" not in stderr
    if flushed is not None:
        assert window(sqlite_db.engine, 600).count == flushed
