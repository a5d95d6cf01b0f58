"""What kind of failure each failed adapter operation was, in ``/metrics``.

An operation's event says what failed it (``error_kind``: a role's CONNECTION LIMIT or
max_connections, a write that may have committed, the write queue's timeout, an
interruption, or the database otherwise), but only the event did: the statistics, and
so ``/metrics``, had one error count, and an SRE could not tell "the database is full"
(add capacity, raise the limit) from "the database fails" (page someone) without
reading logs. Each kind is now counted (revision 0023) and exposed as
``unistatus_operation_errors_by_kind_total{kind=...}``; every kind of every series is
there, 0 included, so a rate is defined from the first scrape; "database" is every
error of no other kind (those flushed before the revision too).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import Database
from support.limited_role import a_role_limited_to, hold
from unistatus import ConnectionLimitError, DualWriteAdapter, OperationEvent
from unistatus.adapter.stats import OperationStats, prune
from unistatus.api.service import create_app
from unistatus.config import load_settings
from unistatus.domain.statuses import DualWriteMode, LegacySystemType

KINDS = {"database", "connection_limit", "outcome_unknown", "queue_timeout", "interrupted"}


def _by_kind(db: Database) -> dict[tuple[str, str], float]:
    """``/metrics``' errors by kind: {(operation, kind): value}, every series."""
    with TestClient(create_app(db.settings, db.engine)) as client:
        text = client.get("/metrics").text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "unistatus_operation_errors_by_kind":
            for sample in family.samples:
                key = (sample.labels["operation"], sample.labels["kind"])
                found[key] = found.get(key, 0.0) + sample.value
    return found


def test_a_write_failed_for_a_connection_limit_is_counted_as_one(pg: Database) -> None:
    with a_role_limited_to(pg, 1) as (_role, url):
        chosen = load_settings(
            database_url=url, record_stats=True, write_queue_timeout_seconds=1, pool_size=3
        )
        adapter = DualWriteAdapter(url, settings=chosen)
        adapter.engine.dispose()  # the write connects anew, refused for the limit
        held = hold(url, 1)
        try:
            failed = adapter.create_transaction("WALLET_CASHOUT", 1, Decimal("1.00"), "USD")
            assert not failed.overall_success and not failed.outcome_unknown
            with pytest.raises(ConnectionLimitError):  # a read refused so: the same kind
                adapter.get_transaction_status("UTX100000000000001")
        finally:
            for conn in held:
                conn.close()
        adapter.close()  # its statistics flushed, the slot free again
    counted = _by_kind(pg)
    assert counted[("create_transaction", "connection_limit")] == 1.0, counted
    assert counted[("create_transaction", "database")] == 0.0, counted
    assert counted[("get_transaction_status", "connection_limit")] == 1.0, counted
    assert counted[("get_transaction_status", "database")] == 0.0, counted
    assert {kind for _, kind in counted} == KINDS, counted


def _event(kind: str | None, *, success: bool = False, **more: Any) -> OperationEvent:
    return OperationEvent(
        operation="update_status",
        mode=DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
        duration_ms=3.0,
        success=success,
        error_kind=kind,
        system=LegacySystemType.ESCROW,
        **more,
    )


def test_each_kind_is_counted_apart_and_the_rest_is_database(db: Database) -> None:
    stats = OperationStats(db.engine, flush_seconds=3600)
    try:
        for kind, n in (
            ("connection_limit", 2),
            ("outcome_unknown", 1),
            ("queue_timeout", 3),
            ("interrupted", 1),
            ("database", 4),
            (None, 1),  # a failure no one labelled: the database's
            ("something new", 1),  # a kind this release does not know: the same
        ):
            for _ in range(n):
                stats.record(_event(kind))
        # A write in a caller's transaction that may have committed, said so unlabelled.
        stats.record(_event(None, outcome_unknown=True))
        stats.record(_event(None, success=True))
        stats.record(_event(None, success=True, refused=True))  # the caller's input
        stats.record(_event("database", rolled_back=True))  # the caller's: not one either
        assert stats.flush() == 1
    finally:
        stats.close()
    counted = _by_kind(db)
    assert {k: v for (op, k), v in counted.items() if op == "update_status"} == {
        "connection_limit": 2.0,
        "outcome_unknown": 2.0,
        "queue_timeout": 3.0,
        "interrupted": 1.0,
        "database": 6.0,
    }, counted


def test_the_kinds_survive_the_pruning_fold(db: Database) -> None:
    """Statistics older than the retention are folded into one row per series: the
    kinds' sums with the rest, so their counters never go down."""
    for _ in range(2):  # two rows of the same series, folded into one
        stats = OperationStats(db.engine, flush_seconds=3600)
        try:
            stats.record(_event("connection_limit"))
            stats.record(_event("queue_timeout"))
            stats.record(_event("database"))
            assert stats.flush() == 1
        finally:
            stats.close()
    before = _by_kind(db)
    assert before[("update_status", "connection_limit")] == 2.0, before
    assert prune(db.engine, older_than_seconds=0) == 2
    assert _by_kind(db) == before
