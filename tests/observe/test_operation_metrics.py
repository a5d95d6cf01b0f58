"""/metrics carries each legacy system's operation figures apart (a ``system`` label).

Each system's gates judge its own latency and error rate; Prometheus sees the same
figures per system: the window gauges and the cumulative families alike.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import Database
from support.stats_data import record_latency
from unistatus.adapter.core import DualWriteAdapter
from unistatus.api.service import create_app
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.observe.stats import window

M = DualWriteMode
S = LegacySystemType


def _samples(db: Database) -> dict[str, list[Any]]:
    with TestClient(create_app(db.settings, db.engine)) as client:
        text = client.get("/metrics").text
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _by_system(samples: list[Any], **labels: str) -> dict[str, float]:
    return {
        s.labels["system"]: s.value
        for s in samples
        if all(s.labels.get(k) == v for k, v in labels.items())
    }


def test_operations_on_two_systems_are_separate_series(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        for user in range(1, 4):
            adapter.create_transaction("WALLET_CASHOUT", user, "5", "USD")
        adapter.create_transaction("EXCHANGE", 9, "2", "USD")
    # Slow, failing escrow operations next to fast, healthy cashouts.
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 300.0, 20, errors=4, system=S.ESCROW)
    record_latency(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, 3.0, 20, system=S.CASHOUT)
    got = _samples(db)

    mode = M.DUAL_WRITE_LEGACY_PRIMARY.value
    created = _by_system(
        got["unistatus_operations_total"], operation="create_transaction", mode=mode
    )
    assert created == {"CASHOUT": 3.0, "EXCHANGE": 1.0}
    updates = _by_system(got["unistatus_operation_errors_total"], operation="update_status")
    assert updates == {"CASHOUT": 0.0, "ESCROW": 4.0}
    inf = _by_system(
        got["unistatus_operation_latency_seconds_bucket"], operation="update_status", le="+Inf"
    )
    assert inf == {"CASHOUT": 20.0, "ESCROW": 20.0}

    # The window gauges: each system's own figures, as its gates read them.
    p95 = _by_system(got["unistatus_latency_p95_seconds"])
    assert set(p95) == {"CASHOUT", "ESCROW", "EXCHANGE"}
    assert p95["ESCROW"] > 0.2 > p95["CASHOUT"]
    for system, value in p95.items():
        own = window(db.engine, 300, system=system).p95_ms
        assert own is not None and abs(value - own / 1000.0) < 1e-3
    errors = _by_system(got["unistatus_error_rate"])
    assert errors == {"CASHOUT": 0.0, "ESCROW": 0.2, "EXCHANGE": 0.0}
    throughput = _by_system(got["unistatus_throughput_per_second"])
    assert throughput["ESCROW"] > 0 and set(throughput) == {"CASHOUT", "ESCROW", "EXCHANGE"}


def test_a_system_without_operations_has_no_latency_series(db: Database) -> None:
    record_latency(db.engine, M.LEGACY_ONLY, 12.0, 5, system=S.EXCHANGE)
    got = _samples(db)
    assert set(_by_system(got["unistatus_latency_p95_seconds"])) == {"EXCHANGE"}
    assert _by_system(got["unistatus_error_rate"]) == {
        "CASHOUT": 0.0,
        "ESCROW": 0.0,
        "EXCHANGE": 0.0,
    }


def test_before_revision_0016_the_counters_carry_an_empty_system(db: Database) -> None:
    """A rolling upgrade: new code on a schema without the stats' system column still
    exports the cumulative families (``system=""``: no system, in Prometheus' terms)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from unistatus.db import schema
    from unistatus.db.engine import create_engine
    from unistatus.observe.operation_metrics import operation_families
    from unistatus.observe.stats import stats_totals

    assert schema.downgrade(db.engine, db.settings, "0015") == "0015"
    try:
        # A process started on that schema (a new engine: what it has seen is not cached).
        old = create_engine(db.url, schema=db.settings.schema)
        record_latency(old, M.LEGACY_ONLY, 12.0, 4, errors=1, system=S.ESCROW)
        totals = stats_totals(old)
        assert [(t["operation"], t["system"], t["count"], t["errors"]) for t in totals] == [
            ("update_status", "", 4, 1)
        ]

        class Families:
            def collect(self) -> Any:
                return operation_families(totals)

        registry = CollectorRegistry()
        registry.register(Families())  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        assert (
            'unistatus_operations_total{mode="LEGACY_ONLY",operation="update_status",system=""} 4.0'
            in text
        )
        assert window(old, 300, system=S.ESCROW).count == 0  # no system known there
        old.dispose()
    finally:  # the database is shared by the tests of this run: leave it installed
        schema.upgrade(db.engine, db.settings)
