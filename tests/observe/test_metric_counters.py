"""The counters and the histogram on /metrics never go down: pruning keeps their totals.

``unistatus_operations_total`` and its siblings are sums over the statistics table,
whose rows older than a week are pruned. A pruned row must not take its operations out
of the sums: Prometheus reads any decrease as a counter reset, and ``rate()`` would
then count the whole remaining total again as new operations.
"""

from __future__ import annotations

import threading

from prometheus_client.parser import text_string_to_metric_families

from conftest import IN_EVERY_LAYOUT, Database
from unistatus.adapter.core import OperationEvent
from unistatus.adapter.stats import prune
from unistatus.domain.statuses import DualWriteMode
from unistatus.observe.metrics import SnapshotCollector
from unistatus.observe.stats import OperationStats, window

M = DualWriteMode
CUMULATIVE = {"counter", "histogram"}


def _cumulative(db: Database) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter and histogram sample of a scrape, by name and labels."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(SnapshotCollector(db.engine, db.settings))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        if f.type in CUMULATIVE
        for s in f.samples
        if not s.name.endswith("_created")
    }


def _record(db: Database, process: str, n: int, mode: M, ms: float) -> None:
    stats = OperationStats(db.engine, process_id=process, start=False)
    for i in range(n):
        stats.record(OperationEvent("update_status", mode, i % 10 != 0, ms))
        stats.record(OperationEvent("create_transaction", mode, True, ms, rolled_back=i == 0))
    stats.flush()


def _rows(db: Database) -> int:
    return db.count("unistatus_operation_stats")


@IN_EVERY_LAYOUT
def test_pruning_old_rows_keeps_every_counter_and_histogram_total(db: Database) -> None:
    _record(db, "a", 30, M.DUAL_WRITE_LEGACY_PRIMARY, 12.0)
    _record(db, "b", 20, M.DUAL_WRITE_LEGACY_PRIMARY, 250.0)
    _record(db, "b", 10, M.DUAL_WRITE_UNIFIED_PRIMARY, 3.0)
    before = _cumulative(db)
    key = (
        "unistatus_operations_total",
        (("mode", "DUAL_WRITE_LEGACY_PRIMARY"), ("operation", "update_status"), ("system", "")),
    )
    assert before[key] == 50.0
    rows = _rows(db)

    assert prune(db.engine, older_than_seconds=0) == rows  # every row is old enough
    assert _cumulative(db) == before
    assert _rows(db) == 4  # one row per (operation, mode) carries what was pruned
    assert prune(db.engine, older_than_seconds=0) == 4  # pruning again: still the same
    assert _cumulative(db) == before and _rows(db) == 4

    _record(db, "c", 5, M.DUAL_WRITE_LEGACY_PRIMARY, 12.0)
    after = _cumulative(db)
    assert after[key] == 55.0
    assert all(after[k] >= v for k, v in before.items())


def test_recent_rows_are_left_alone(db: Database) -> None:
    _record(db, "a", 10, M.DUAL_WRITE_LEGACY_PRIMARY, 12.0)
    before = window(db.engine, 600)
    assert prune(db.engine) == 0  # nothing older than the retention
    assert window(db.engine, 600) == before and _rows(db) == 2


def test_concurrent_prunes_count_every_row_once(pg: Database) -> None:
    """Two processes' flushers pruning at the same moment must not both carry a row."""
    for p in range(6):
        _record(pg, f"p{p}", 10, M.DUAL_WRITE_LEGACY_PRIMARY, 12.0)
    before = _cumulative(pg)
    errors: list[BaseException] = []

    def run(start: threading.Barrier) -> None:
        try:
            start.wait()
            prune(pg.engine, older_than_seconds=0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    for _ in range(5):
        start = threading.Barrier(4)
        threads = [threading.Thread(target=run, args=(start,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _record(pg, "late", 1, M.DUAL_WRITE_LEGACY_PRIMARY, 12.0)
    assert not errors, errors
    after = _cumulative(pg)
    key = (
        "unistatus_operations_total",
        (("mode", "DUAL_WRITE_LEGACY_PRIMARY"), ("operation", "update_status"), ("system", "")),
    )
    assert after[key] == before[key] + 5
