"""Operation statistics: per-process aggregation, flushing, and the cross-process window."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time

import pytest
import sqlalchemy as sa

from conftest import IN_EVERY_LAYOUT, Database
from unistatus.adapter.core import DualWriteAdapter, OperationEvent
from unistatus.clock import utcnow
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import InputError
from unistatus.observe.stats import (
    LATENCY_BUCKETS_MS,
    OperationStats,
    bucket_index,
    percentile,
    window,
)

MODE = DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY


def _event(
    ms: float, ok: bool = True, op: str = "update_status", mismatch: bool = False
) -> OperationEvent:
    return OperationEvent(op, MODE, ok, ms, shadow_mismatch=mismatch)


def _bucket_bounds(value: float) -> tuple[float, float]:
    i = bucket_index(value)
    lower = LATENCY_BUCKETS_MS[i - 1] if i else 0.0
    upper = LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else float("inf")
    return lower, upper


def test_bucket_index_edges() -> None:
    assert bucket_index(0.0) == 0
    assert bucket_index(1.0) == 0  # bounds are inclusive, like Prometheus' "le"
    assert bucket_index(1.0001) == 1
    assert bucket_index(200.0) == LATENCY_BUCKETS_MS.index(200.0)
    assert bucket_index(1e9) == len(LATENCY_BUCKETS_MS)
    assert percentile([0] * (len(LATENCY_BUCKETS_MS) + 1), 0.95, 0.0) is None


@IN_EVERY_LAYOUT
def test_two_processes_merge_in_window(db: Database) -> None:
    rng = random.Random(7)
    latencies = [rng.lognormvariate(3.0, 0.8) for _ in range(4000)]  # median ~20 ms
    a = OperationStats(db.engine, flush_seconds=60, process_id="proc-a", start=False)
    b = OperationStats(db.engine, flush_seconds=60, process_id="proc-b", start=False)
    errors = 0
    for i, ms in enumerate(latencies):
        ok = i % 250 != 0
        errors += not ok
        (a if i % 2 else b).record(_event(ms, ok, mismatch=i % 1000 == 0))
    a.record(_event(3.0, op="create_transaction"))
    assert a.flush() == 2 and b.flush() == 1
    assert a.flush() == 0  # nothing new: no empty rows
    assert db.count("unistatus_operation_stats") == 3

    w = window(db.engine, 300, operation="update_status")
    assert w.count == 4000 and w.errors == errors == 16
    assert w.error_rate == pytest.approx(16 / 4000)
    assert w.processes == 2 and w.shadow_mismatches == 4
    true = sorted(latencies)
    for q, got in ((0.5, w.p50_ms), (0.95, w.p95_ms), (0.99, w.p99_ms)):
        exact = true[int(q * len(true)) - 1]
        lower, upper = _bucket_bounds(exact)
        assert got is not None and lower <= got <= upper, (q, got, exact)
    assert w.throughput_per_s == pytest.approx(4000 / 300)
    assert window(db.engine, 300).count == 4001
    assert window(db.engine, 300, mode=MODE).count == 4001
    assert window(db.engine, 300, mode=DualWriteMode.UNIFIED_ONLY).count == 0
    d = w.as_dict()
    assert {
        "count",
        "errors",
        "error_rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "throughput_per_s",
    } <= d.keys()
    assert w.cumulative_buckets()[-1] == (float("inf"), 4000)


def test_window_excludes_old_rows_and_rejects_bad_input(db: Database) -> None:
    s = OperationStats(db.engine, process_id="p", start=False)
    s.record(_event(5.0))
    s.flush()
    assert window(db.engine, 60).count == 1
    assert window(db.engine, 60, now=utcnow() + dt.timedelta(seconds=120)).count == 0
    with pytest.raises(InputError):
        window(db.engine, 0)
    with pytest.raises(InputError):
        OperationStats(db.engine, flush_seconds=0)


@IN_EVERY_LAYOUT
def test_attached_to_adapter_flushes_in_background(db: Database) -> None:
    set_mode(db.engine, MODE, reason="test")
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    stats = OperationStats(db.engine, flush_seconds=0.2, process_id="bg").attach(adapter)
    try:
        for _ in range(5):
            assert adapter.create_transaction("ESCROW", 1, "10", "USD").overall_success
        with pytest.raises(InputError):
            adapter.create_transaction("ESCROW", 1, "-1", "USD")  # refused: not counted (input)
        deadline = time.monotonic() + 5
        while window(db.engine, 60).count < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stats.close()
    w = window(db.engine, 60, operation="create_transaction")
    assert w.count == 5 and w.errors == 0
    assert w.p95_ms is not None and w.p95_ms > 0


def test_failed_flush_keeps_counts_and_never_raises(sqlite_db: Database, tmp_path) -> None:
    from unistatus.db.engine import create_engine

    broken = create_engine(f"sqlite:///{tmp_path}/no_tables.db")
    stats = OperationStats(broken, process_id="x", start=False)
    stats.record(_event(1.0))
    assert stats.flush() == 0 and stats.flush_errors == 1
    stats.engine = sqlite_db.engine
    from unistatus.db.dialect import ops_for

    stats._ops = ops_for(sqlite_db.engine)
    assert stats.flush() == 1
    assert window(sqlite_db.engine, 60).count == 1
    stats.record("not an event")  # type: ignore[arg-type]  # logged, not raised


def test_a_flush_in_an_outage_is_one_warning_line_and_its_figures_wait(
    sqlite_db: Database, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database unreachable (an OperationalError): nothing is lost, so one WARNING
    line naming the driver's error, not a traceback each interval; the traceback is at
    DEBUG. A failure that is a bug (not the database) keeps its traceback."""
    from unistatus.db.dialect import ops_for
    from unistatus.db.engine import create_engine

    unreachable = create_engine(f"sqlite:///{tmp_path}/no/such/dir/unistatus.db")
    stats = OperationStats(unreachable, process_id="x", start=False)
    stats.record(_event(1.0))
    stats.record(_event(2.0, ok=False))
    with caplog.at_level(logging.DEBUG, logger="unistatus.observe.stats"):
        assert stats.flush() == 0 and stats.flush_errors == 1
        stats._maybe_prune()
    shown = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in shown] == ["WARNING", "WARNING"], caplog.text
    for record in shown:
        assert record.exc_info is None, record.getMessage()
        message = record.getMessage()
        assert "unable to open database file" in message and "\n" not in message, message
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)

    caplog.clear()
    stats.engine, stats._ops = sqlite_db.engine, ops_for(sqlite_db.engine)
    assert stats.flush() == 1  # the figures kept through the outage
    w = window(sqlite_db.engine, 60)
    assert w.count == 2 and w.errors == 1

    def bug() -> None:
        raise ValueError("a bug, not an outage")

    stats._ops = type("Broken", (), {"write_transaction": staticmethod(bug)})()  # type: ignore[assignment]
    stats.record(_event(3.0))
    with caplog.at_level(logging.DEBUG, logger="unistatus.observe.stats"):
        assert stats.flush() == 0
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_module_all_is_sorted_and_resolves() -> None:
    import unistatus.migration.phases
    import unistatus.migration.rollback
    import unistatus.observe.diagnose
    import unistatus.observe.stats

    for module in (
        unistatus.observe.stats,
        unistatus.migration.phases,
        unistatus.migration.rollback,
        unistatus.observe.diagnose,
    ):
        assert module.__all__ == sorted(module.__all__), module.__name__
        assert all(hasattr(module, name) for name in module.__all__), module.__name__


def test_migration_0004_downgrades_and_upgrades(sqlite_db: Database) -> None:
    import sqlalchemy as sa

    from unistatus.db import schema

    engine, settings = sqlite_db.engine, sqlite_db.settings
    assert "unistatus_operation_stats" in sa.inspect(engine).get_table_names()
    schema.downgrade(engine, settings, "0003")
    assert "unistatus_operation_stats" not in sa.inspect(engine).get_table_names()
    schema.upgrade(engine, settings, schema.INSTALL_REVISION)
    assert "unistatus_operation_stats" in sa.inspect(engine).get_table_names()
    s = OperationStats(engine, process_id="after", start=False)
    s.record(_event(2.0))
    assert s.flush() == 1


def test_a_schema_older_than_0010_still_records_and_reads(sqlite_db: Database) -> None:
    """New code before `unistatus init` (a rolling upgrade): the flush and the window work
    without revision 0010's rolled_back column instead of failing every interval."""
    import sqlalchemy as sa

    from unistatus.db import schema

    engine, settings = sqlite_db.engine, sqlite_db.settings
    schema.downgrade(engine, settings, "0009")
    columns = {c["name"] for c in sa.inspect(engine).get_columns("unistatus_operation_stats")}
    assert "rolled_back" not in columns
    s = OperationStats(engine, process_id="old-schema", start=False)
    s.record(_event(2.0))
    s.record(_event(3.0, ok=False))
    assert s.flush() == 1
    assert s.flush_errors == 0
    w = window(engine, 60)
    assert (w.count, w.errors, w.rolled_back) == (2, 1, 0)
    schema.upgrade(engine, settings, schema.INSTALL_REVISION)
    assert window(engine, 60).count == 2


@IN_EVERY_LAYOUT
def test_the_p95_tells_a_fifth_slower_apart_between_20_and_50_ms(db: Database) -> None:
    """The throttle and the gates judge a p95 against 1.2 times a baseline: the
    histogram must see a 20% change where live writes are (tens of ms). With buckets
    of 20 and 50 ms a p95 of 43.5 and of 52 ms both read about 48."""
    calm, slowed = _p95_of(db, 30.0), _p95_of(db, 36.0)
    assert abs(calm - 43.5) / 43.5 < 0.08 and abs(slowed - 52.2) / 52.2 < 0.08
    assert slowed / calm > 1.12


def _p95_of(db: Database, ms: float) -> float:
    """The stored p95 of 1000 operations spread evenly over 0.5..1.5 times ``ms`` and
    three outliers of 120 ms, as live traffic has them (its true p95: about 1.45 times
    ``ms``), alone in the table."""
    import sqlalchemy as sa

    from unistatus.db.tables_ops import operation_stats

    with db.engine.begin() as conn:
        conn.execute(sa.delete(operation_stats))
    stats = OperationStats(db.engine, flush_seconds=60, process_id="p", start=False)
    for i in range(1000):
        stats.record(_event(ms * (0.5 + i / 1000)))
    for _ in range(3):
        stats.record(_event(120.0))
    stats.flush()
    p95 = window(db.engine, 60).p95_ms
    assert p95 is not None
    return p95


def test_rows_without_the_fine_buckets_are_read_from_the_coarse_ones(sqlite_db: Database) -> None:
    """A rolling upgrade: new code on a schema before revision 0019 records and reads the
    coarse buckets; after the upgrade a window that still holds such a row reads the
    coarse buckets (the fine ones lack its operations), and the fine ones once it left."""
    from unistatus.db import schema

    engine, settings = sqlite_db.engine, sqlite_db.settings
    schema.downgrade(engine, settings, "0018")
    old = OperationStats(engine, process_id="before-0019", start=False)
    old.record(_event(36.0))
    assert old.flush() == 1 and old.flush_errors == 0
    w = window(engine, 60)
    assert w.count == 1 and w.fine_buckets is None and w.p95_ms is not None
    schema.upgrade(engine, settings, schema.INSTALL_REVISION)
    new = OperationStats(engine, process_id="after-0019", start=False)
    for _ in range(99):
        new.record(_event(36.0))
    new.flush()
    mixed = window(engine, 60)
    assert mixed.count == 100 and mixed.fine_buckets is not None
    assert sum(mixed.fine_buckets) == 99 and mixed.histogram[1] == mixed.buckets  # coarse
    import sqlalchemy as sa

    from unistatus.db.tables_ops import operation_stats

    with engine.begin() as conn:
        conn.execute(
            sa.delete(operation_stats).where(operation_stats.c.process_id == "before-0019")
        )
    fine = window(engine, 60)
    assert fine.histogram[1] == fine.fine_buckets and fine.p95_ms is not None
    assert 35.0 <= fine.p95_ms <= 36.0  # the fine bucket (35, 40], clamped by the max


def test_pruning_keeps_the_fine_buckets_of_the_rows_it_folds(sqlite_db: Database) -> None:
    from unistatus.observe.stats import prune

    stats = OperationStats(sqlite_db.engine, process_id="folded", start=False)
    for _ in range(50):
        stats.record(_event(36.0))
    stats.flush()
    assert prune(sqlite_db.engine, older_than_seconds=-60) == 1
    folded = window(sqlite_db.engine, 3600, now=utcnow() + dt.timedelta(seconds=120))
    assert folded.count == 50 and folded.fine_buckets is not None
    assert sum(folded.fine_buckets) == 50 and folded.histogram[1] == folded.fine_buckets


@pytest.mark.postgres
def test_closing_behind_a_locked_statistics_table_is_bounded(
    pg: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The application's own engine (no lock_timeout): a flush behind a session holding
    the statistics table waited for as long as it was held, and close() (and the
    interpreter's exit, which calls it) after it: the process never exited (found by a
    probe of the library). Both flushes give up now, and close() says what was lost."""
    app = sa.create_engine(pg.url)
    stats = OperationStats(app, flush_seconds=0.3, process_id="locked-out")
    stats.record(_event(12.0))
    try:
        with pg.engine.connect() as held:
            table = pg.table("unistatus_operation_stats")
            held.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            time.sleep(0.6)  # the flusher is waiting behind it
            closing = threading.Thread(target=stats.close, daemon=True)
            started = time.monotonic()
            closing.start()
            closing.join(timeout=20)
            took = time.monotonic() - started
            alive = closing.is_alive()
            held.rollback()
        assert not alive, "close() still waiting behind the lock after 20 s"
        assert took < 12, took
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "not stored" in said, said
    finally:
        stats.close()
        app.dispose()


@pytest.mark.parametrize("skewed", ["the adapter's host", "the reader's host"])
def test_windows_are_on_the_databases_clock(
    db: Database, skewed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter on a host ten minutes behind stamped its statistics ten minutes ago,
    out of every window; a monitor on a host 400 s ahead read a window with nothing in
    it, and its error-rate and p95 alerts said "resolved" (a probe). Intervals are
    stamped, and windows read, on the database's clock."""
    from unistatus.adapter import stats as adapter_stats  # noqa: PLC0415
    from unistatus.db import server_clock  # noqa: PLC0415
    from unistatus.observe import stats as observe_stats  # noqa: PLC0415

    if skewed == "the adapter's host":  # every reading of this host's clock
        behind = lambda: utcnow() - dt.timedelta(minutes=10)  # noqa: E731
        monkeypatch.setattr(adapter_stats, "utcnow", behind)
        monkeypatch.setattr(server_clock, "utcnow", behind)
    else:
        ahead = lambda: utcnow() + dt.timedelta(seconds=400)  # noqa: E731
        monkeypatch.setattr(observe_stats, "utcnow", ahead, raising=False)  # its clock, if read
    recorder = OperationStats(db.engine, flush_seconds=60, process_id="skewed", start=False)
    for ms in (3.0, 5.0, 8.0):
        recorder.record(_event(ms))
    assert recorder.flush() == 1
    assert window(db.engine, 300).count == 3


def test_the_backfills_health_reads_the_window_on_the_databases_clock(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill on a host 400 s ahead read the p95 window from its own now: empty, "too
    few operations", its throttle blind (a review)."""
    from unistatus.backfill import health  # noqa: PLC0415
    from unistatus.db import server_clock  # noqa: PLC0415
    from unistatus.db.dialect import ops_for  # noqa: PLC0415

    recorder = OperationStats(db.engine, flush_seconds=60, process_id="live", start=False)
    for ms in range(1, 41):
        recorder.record(_event(float(ms)))
    assert recorder.flush() == 1
    ahead = lambda: utcnow() + dt.timedelta(seconds=400)  # noqa: E731
    monkeypatch.setattr(server_clock, "utcnow", ahead)
    readings = health.read_health(
        db.engine, ops_for(db.engine), [], window_seconds=60, min_operations=20, now=ahead()
    )
    assert readings.operations == 40 and readings.p95_ms is not None
