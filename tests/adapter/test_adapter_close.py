"""close() releases what the adapter opened: the engine it built from a URL (the
application's own engine stays open, as documented). An adapter made from a URL and
closed left its pool's connections to the interpreter's exit, and `python -X dev` said
"ResourceWarning: <psycopg.Connection ...> was deleted while still open" (a probe)."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter

CLOSED_AT_ONCE = """
import gc, sys
from unistatus import DualWriteAdapter
with DualWriteAdapter(sys.argv[1]) as adapter:
    adapter.get_transaction_status("cashout:1")
gc.collect()
print("closed", flush=True)
"""


def test_an_adapter_built_from_a_url_closes_its_connections(pg: Database) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", CLOSED_AT_ONCE, pg.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "closed" in done.stdout, done.stderr
    assert "ResourceWarning" not in done.stderr, done.stderr


def test_an_engine_given_stays_open_after_close(pg: Database) -> None:
    adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
    adapter.get_transaction_status("cashout:1")
    adapter.close()
    with pg.engine.connect() as conn:  # the application's engine, still its own
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    adapter.get_transaction_status("cashout:1")  # after close: still works, unrecorded
