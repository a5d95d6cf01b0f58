"""Statistics by default: a plain DualWriteAdapter records its operations, counted once.

No wiring: the library, the HTTP service and the load test each count one operation as
one, in the stats table, the gates' window and ``/metrics``. ``record_stats=False`` and
``UNISTATUS_RECORD_STATS=false`` record nothing. The recorder is shared per engine and
process, stops and flushes on close, when its adapters are collected, and at exit.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.adapter.stats import close_all
from unistatus.api.service import create_app
from unistatus.config import load_settings
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import EntityNotFoundError, InvalidTransitionError
from unistatus.migration import phases
from unistatus.observe.stats import window
from unistatus.sim.loadtest import run_load_test

M = DualWriteMode
TOKEN = "s3cret-token"


def _stats_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("unistatus-stats-")]


def _counts(db: Database) -> dict[str, int]:
    return {
        op: window(db.engine, 600, operation=op).count
        for op in ("create_transaction", "update_status", "get_transaction_status")
    }


def test_a_plain_adapter_records_each_operation_once(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        assert adapter.stats is not None and adapter.stats.record in adapter.observers
        created = adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert adapter.update_status(created.entity_id, "PROCESSING", "r", "t").overall_success
        adapter.get_transaction_status(created.entity_id)
    # Closed: flushed, and no longer recording.
    assert adapter.stats is None
    assert _counts(db) == {
        "create_transaction": 1,
        "update_status": 1,
        "get_transaction_status": 1,
    }
    w = window(db.engine, 600)
    assert (w.count, w.errors, w.processes) == (3, 0, 1)
    assert w.p95_ms is not None
    assert db.count("unistatus_operation_stats") == 3  # one row per (operation, mode)


def test_adapters_of_one_engine_share_one_recorder_and_count_once(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    adapters = [DualWriteAdapter(db.engine, settings=db.settings) for _ in range(5)]
    shared = adapters[0].stats
    assert shared is not None and all(a.stats is shared for a in adapters)
    assert not _stats_threads()  # started by the first operation
    for i, a in enumerate(adapters):
        assert a.create_transaction("ESCROW", i + 1, "3", "EUR").overall_success
    assert len(_stats_threads()) == 1
    for a in adapters[:-1]:
        a.close()
    assert shared.running  # the last adapter still uses it
    # Closing flushed the shared aggregate: every operation so far, each once.
    assert window(db.engine, 600).count == 5
    adapters[-1].create_transaction("ESCROW", 9, "3", "EUR")
    adapters[-1].close()
    adapters[-1].close()  # idempotent
    assert not shared.running and not _stats_threads()
    w = window(db.engine, 600, operation="create_transaction")
    assert (w.count, w.processes) == (6, 1)


def test_the_error_rate_and_latency_gates_see_a_plain_adapter(db: Database) -> None:
    phases.advance(db.engine, db.settings, actor="t")  # phase 1: dual writes
    before = {g.name: g for g in phases.phase_status(db.engine, db.settings).gates}
    assert before["error_rate"].value == "unavailable"
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        for i in range(4):
            created = adapter.create_transaction("WALLET_CASHOUT", i + 1, "5", "USD")
            result = adapter.update_status(created.entity_id, "OTP_PENDING", "otp", "t")
            assert result.overall_success
    gates = {g.name: g for g in phases.phase_status(db.engine, db.settings).gates}
    assert gates["error_rate"].passed
    assert gates["error_rate"].detail == "0 errors in 8 operations over the last hour"
    w = window(db.engine, phases.GATE_WINDOW_SECONDS)
    assert w.count == 8 and w.p95_ms is not None


def test_a_write_the_caller_rolls_back_is_counted_as_rolled_back_not_as_an_error(
    db: Database,
) -> None:
    """An application's ordinary rollback (insufficient funds) is not an adapter error:
    it must not raise the error rate the phase gate and the rollback alert read."""
    phases.advance(db.engine, db.settings, actor="t")  # phase 1: dual writes
    with DualWriteAdapter(db.engine, settings=db.settings, record_stats=False) as setup:
        created = setup.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert created.entity_id is not None
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        with db.engine.connect() as conn:
            tx = conn.begin()
            changed = adapter.update_status(
                created.entity_id, "OTP_PENDING", "otp", "t", connection=conn
            )
            assert changed.overall_success
            tx.rollback()  # the caller's business rule said no
    w = window(db.engine, 600)
    assert w.errors == 0 and w.error_rate == 0.0
    assert (w.count, w.rolled_back) == (0, 1)  # not a success either
    assert w.as_dict()["rolled_back"] == 1
    gates = {g.name: g for g in phases.phase_status(db.engine, db.settings).gates}
    assert gates["error_rate"].value == "unavailable"  # nothing completed: nothing to judge

    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        with db.engine.begin() as conn:
            changed = adapter.update_status(
                created.entity_id, "OTP_PENDING", "otp", "t", connection=conn
            )
            assert changed.overall_success
    w = window(db.engine, 600)
    assert (w.count, w.errors, w.rolled_back, w.error_rate) == (1, 0, 1, 0.0)
    gates = {g.name: g for g in phases.phase_status(db.engine, db.settings).gates}
    assert gates["error_rate"].passed and gates["error_rate"].value == "0%"
    assert gates["error_rate"].detail == (
        "0 errors in 1 operations over the last hour (1 rolled back by the caller, not counted)"
    )
    with TestClient(create_app(db.settings, db.engine)) as client:
        text = client.get("/metrics").text
    labels = '{mode="DUAL_WRITE_LEGACY_PRIMARY",operation="update_status",system="CASHOUT"}'
    assert f"unistatus_operations_rolled_back_total{labels} 1.0" in text
    assert f"unistatus_operations_total{labels} 1.0" in text
    assert f"unistatus_operation_errors_total{labels} 0.0" in text


def test_a_refused_write_is_counted_as_refused_not_as_an_operation(db: Database) -> None:
    """A write refused for the caller's input (an unknown transaction, an invalid
    transition found under the lock) wrote nothing: it must not dilute the error rate,
    pull the p95 down or count towards ``p95_gate_min_operations`` (a client retrying a
    404 could otherwise satisfy the latency gate without one write)."""
    phases.advance(db.engine, db.settings, actor="t")  # phase 1: dual writes
    with DualWriteAdapter(db.engine, settings=db.settings, record_stats=False) as setup:
        created = setup.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert setup.update_status(created.entity_id, "CANCELLED", "done", "t").overall_success
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        for _ in range(3):
            with pytest.raises(EntityNotFoundError):
                adapter.update_status("UTX100000000009999", "COMPLETED", "no such", "t")
        with pytest.raises(InvalidTransitionError):  # CANCELLED is final
            adapter.update_status(created.entity_id, "PENDING", "back", "t")
    w = window(db.engine, 600)
    assert (w.count, w.errors, w.p95_ms) == (0, 0, None)
    assert w.refused == 4 and w.as_dict()["refused"] == 4
    gates = {g.name: g for g in phases.phase_status(db.engine, db.settings).gates}
    assert gates["error_rate"].value == "unavailable"  # nothing completed: nothing to judge
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        second = adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert adapter.update_status(second.entity_id, "OTP_PENDING", "otp", "t").overall_success
    gates = {g.name: g for g in phases.phase_status(db.engine, db.settings).gates}
    assert gates["error_rate"].detail == (
        "0 errors in 2 operations over the last hour (4 refused for their input, not counted)"
    )
    with TestClient(create_app(db.settings, db.engine)) as client:
        text = client.get("/metrics").text
    labels = '{mode="DUAL_WRITE_LEGACY_PRIMARY",operation="update_status",system="CASHOUT"}'
    assert f"unistatus_operations_refused_total{labels} 4.0" in text
    assert f"unistatus_operations_total{labels} 1.0" in text  # the one that wrote


def test_service_writes_are_counted_once_and_reach_metrics(db: Database) -> None:
    settings = db.settings.model_copy(update={"admin_token": TOKEN})
    with TestClient(create_app(settings, db.engine)) as client:
        r = client.post(
            "/api/v1/transactions",
            json={"transaction_type": "EXCHANGE", "user_id": 7, "amount": "2", "currency": "USD"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 201, r.text
    # The app's shutdown closed its adapter, which flushed.
    assert _counts(db) == {"create_transaction": 1, "update_status": 0, "get_transaction_status": 0}
    # A plain library adapter in the same process: no wiring, and it shows in /metrics.
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        adapter.create_transaction("EXCHANGE", 8, "2", "USD")
    with TestClient(create_app(db.settings, db.engine)) as client:
        text = client.get("/metrics").text
    assert (
        'unistatus_operations_total{mode="LEGACY_ONLY",operation="create_transaction",'
        'system="EXCHANGE"} 2.0' in text
    )


def test_the_load_tests_operations_appear_once(db: Database) -> None:
    report = run_load_test(
        db.url, db.settings, transactions=6, concurrent=2, mode=M.DUAL_WRITE_LEGACY_PRIMARY
    )
    assert report.run.errors == 0 and report.run.operations > 6
    w = window(db.engine, 600, mode=M.DUAL_WRITE_LEGACY_PRIMARY)
    assert w.count == report.run.operations and w.errors == 0
    with TestClient(create_app(db.settings, db.engine)) as client:
        text = client.get("/metrics").text
    created = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "unistatus_operations_total"
        and sample.labels["mode"] == M.DUAL_WRITE_LEGACY_PRIMARY.value
        and sample.labels["operation"] == "create_transaction"
    ]
    assert {s.labels["system"] for s in created} <= {"CASHOUT", "ESCROW", "EXCHANGE"}
    assert (
        sum(s.value for s in created)
        == window(db.engine, 600, operation="create_transaction").count
    )


def test_record_stats_false_records_nothing(db: Database) -> None:
    with DualWriteAdapter(db.engine, settings=db.settings, record_stats=False) as adapter:
        assert adapter.stats is None and not adapter.observers
        adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    close_all()
    assert db.count("unistatus_operation_stats") == 0 and not _stats_threads()


def test_the_environment_turns_it_off_and_the_argument_wins(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNISTATUS_RECORD_STATS", "false")
    settings = load_settings(database_url=db.url)
    assert settings.record_stats is False
    with DualWriteAdapter(db.engine, settings=settings) as adapter:
        assert adapter.stats is None
        adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert db.count("unistatus_operation_stats") == 0
    with DualWriteAdapter(db.engine, settings=settings, record_stats=True) as adapter:
        adapter.create_transaction("WALLET_CASHOUT", 2, "5", "USD")
    assert window(db.engine, 600).count == 1


def test_a_forgotten_adapter_stops_its_flusher_after_flushing(db: Database) -> None:
    settings = db.settings.model_copy(update={"stats_flush_seconds": 0.1})
    adapter = DualWriteAdapter(db.engine, settings=settings)
    stats = adapter.stats
    adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert stats is not None and stats.running
    del adapter
    gc.collect()
    deadline = time.monotonic() + 5
    while stats.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not stats.running
    assert window(db.engine, 600).count == 1


def test_an_adapter_never_closed_is_flushed_at_exit(sqlite_db: Database, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from unistatus import DualWriteAdapter
        from unistatus.config import load_settings

        url = {sqlite_db.url!r}
        adapter = DualWriteAdapter(url, settings=load_settings(database_url=url))
        assert adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD").overall_success
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISTATUS_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    w = window(sqlite_db.engine, 600)
    assert (w.count, w.processes) == (1, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_process_records_its_own_operations(sqlite_db: Database) -> None:
    db = sqlite_db
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")  # not flushed yet
    pid = os.fork()
    if pid == 0:  # the child: its own counts, under its own name, flushed on close
        code = 1
        try:
            db.engine.dispose(close=False)
            adapter.create_transaction("WALLET_CASHOUT", 2, "5", "USD")
            adapter.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    adapter.close()
    w = window(db.engine, 600)
    assert (w.count, w.processes) == (2, 2)  # the parent's operation was not written twice


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_process_flushes_on_its_own_postgresql_connection(pg: Database) -> None:
    # Sharing the parent's pooled connection would interleave both processes' protocol.
    adapter = DualWriteAdapter(pg.engine, settings=pg.settings)
    adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    with pg.engine.connect() as conn:  # the parent's pooled connection
        parent_backend = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
    used: list[int] = []

    def checkout(dbapi: Any, record: Any, proxy: Any) -> None:
        used.append(dbapi.info.backend_pid)

    event.listen(pg.engine, "checkout", checkout)
    read, write = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # the child: no dispose of its own, the fork hook must do it
            code = 1
            try:
                os.close(read)
                adapter.create_transaction("WALLET_CASHOUT", 2, "5", "USD")
                adapter.close()  # flushes the child's statistics
                os.write(write, ",".join(map(str, used)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as pipe:
            child = pipe.read()
        _, status = os.waitpid(pid, 0)
    finally:
        event.remove(pg.engine, "checkout", checkout)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child, "the child used no connection"
    assert parent_backend not in {int(b) for b in child.split(",")}
    adapter.close()


def test_an_adapter_starts_no_thread_before_its_first_operation(db: Database) -> None:
    """An application that builds its adapter and then forks its workers (gunicorn's
    --preload) forked a process of two threads: Python 3.12 warns "This process is
    multi-threaded, use of fork() may lead to deadlocks in the child" (a probe). Its
    flusher starts with the first operation; one never used leaves nothing behind."""
    before = threading.active_count()
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    assert threading.active_count() == before and not _stats_threads()
    adapter.get_transaction_status("cashout:1")
    assert len(_stats_threads()) == 1
    adapter.close()
    unused = DualWriteAdapter(db.engine, settings=db.settings)
    stats = unused.stats
    del unused
    gc.collect()
    from unistatus.adapter import stats as stats_module

    with DualWriteAdapter(db.engine, settings=db.settings):  # the next one's acquire
        assert stats is not None and not stats.running
        assert all(e.stats is not stats for e in stats_module._registry.values())
