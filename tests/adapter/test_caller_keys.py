"""A client's retry racing its first request, both keyed creates in the application's
own transactions: the retry's key is taken when the first commits. PostgreSQL has
aborted the retry's transaction, so it cannot be replayed in it: the caller rolls back
and repeats the call, which then returns the first call's result. That is the client's
duplicate, not the database failing: it was counted in the error rate (a 50% error rate
from one retried request), which the gates and the rollback alert read.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import Database
from unistatus import CallerKeyTakenError
from unistatus.adapter.core import DualWriteAdapter
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.observe.stats import window


def test_a_key_taken_by_a_concurrent_caller_is_refused_not_failed(pg: Database) -> None:
    set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
    args = ("EXCHANGE", 1, "1", "USD")
    first_written = threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        with pg.engine.connect() as conn, conn.begin():
            made = adapter.create_transaction(*args, idempotency_key="retry-1", connection=conn)
            results["first"] = made.entity_id
            first_written.set()
            time.sleep(1.0)  # the retry arrives meanwhile and waits on the key

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_written.wait(30)
        with pg.engine.connect() as conn, conn.begin():
            with pytest.raises(CallerKeyTakenError, match="roll the transaction back and repeat"):
                adapter.create_transaction(*args, idempotency_key="retry-1", connection=conn)
            conn.rollback()
        with pg.engine.connect() as conn, conn.begin():
            again = adapter.create_transaction(*args, idempotency_key="retry-1", connection=conn)
    finally:
        thread.join()
    assert again.replayed and again.entity_id == results["first"]
    adapter.close()  # flushes the statistics
    seen = window(pg.engine, 600)
    # count: the first and the replay; the refusal is not counted there (nor an error)
    assert (seen.count, seen.errors, seen.refused) == (2, 0, 1), seen
