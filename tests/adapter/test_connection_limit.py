"""A role's CONNECTION LIMIT (or the server's max_connections) is no outage: a connection
the server refuses for it wrote nothing, so the write is retried until a slot frees up;
failing that, it says what refused it (exploratory DBA: 939 of 2350 writes failed as
"unreachable", none retried, as a role with ``CONNECTION LIMIT 2``)."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import unistatus
from conftest import Database
from support.limited_role import a_role_limited_to, hold
from unistatus import DualWriteAdapter, DualWriteMode, OperationEvent
from unistatus.config import load_settings
from unistatus.db.control import write_mode
from unistatus.db.dialect import PostgresOps
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import UnifiedTransactionType


def _adapter(url: str, **settings: object) -> DualWriteAdapter:
    chosen = load_settings(database_url=url, record_stats=False, **settings)
    adapter = DualWriteAdapter(url, settings=chosen)
    adapter.engine.dispose()  # every write below connects anew
    return adapter


def _create(adapter: DualWriteAdapter, user: int = 1):  # type: ignore[no-untyped-def]
    return adapter.create_transaction(
        transaction_type=UnifiedTransactionType.WALLET_CASHOUT,
        user_id=user,
        amount=Decimal("1.00"),
        currency="USD",
    )


def test_a_write_refused_a_connection_waits_for_a_slot_to_free_up(pg: Database) -> None:
    with a_role_limited_to(pg, 2) as (_role, url):
        adapter = _adapter(url, write_queue_timeout_seconds=10)
        held = hold(url, 2)
        try:
            results = []
            writer = threading.Thread(target=lambda: results.append(_create(adapter)))
            writer.start()
            time.sleep(0.5)  # the write meets the limit meanwhile
            held.pop().close()
            writer.join(15)
            assert results and results[0].overall_success, results and results[0].error
        finally:
            for conn in held:
                conn.close()
            adapter.close()


def test_concurrent_writes_under_a_small_limit_all_succeed(pg: Database) -> None:
    with a_role_limited_to(pg, 2) as (_role, url):
        adapter = _adapter(url)
        failed: list[str] = []

        def write(user: int) -> None:
            for _ in range(10):
                r = _create(adapter, user)
                if not r.overall_success:
                    failed.append(r.error or "")

        try:
            threads = [threading.Thread(target=write, args=(i + 1,)) for i in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not failed, f"{len(failed)} failed, e.g. {failed[0]}"
        finally:
            adapter.close()


def test_a_limit_that_stays_full_fails_the_write_saying_so(pg: Database) -> None:
    with a_role_limited_to(pg, 1) as (role, url):
        adapter = _adapter(url, write_queue_timeout_seconds=1, pool_size=3, max_overflow=2)
        events: list[OperationEvent] = []
        adapter.observers = [events.append]
        held = hold(url, 1)
        try:
            r = _create(adapter)
            assert not r.overall_success and not r.outcome_unknown
            error = r.error or ""
            assert "unreachable" not in error, error
            assert f'the server refused a connection: too many connections for role "{role}"' in (
                error
            ), error
            assert "CONNECTION LIMIT" in error and "max_connections" in error, error
            assert "may open up to 5" in error, error
            assert events and not events[-1].success
            assert events[-1].error_kind == "connection_limit", events[-1]
            with pytest.raises(
                unistatus.ConnectionLimitError, match="too many connections for role"
            ):
                adapter.get_transaction_status("UTX100000000000001")
        finally:
            for conn in held:
                conn.close()
            adapter.close()


def test_the_pool_settings_reach_the_adapters_pool(pg: Database) -> None:
    settings = load_settings(database_url=pg.url, pool_size=3, max_overflow=7)
    adapter = DualWriteAdapter(pg.url, settings=settings, record_stats=False)
    try:
        assert adapter.engine.pool.size() == 3  # type: ignore[attr-defined]
        assert adapter.engine.pool._max_overflow == 7  # type: ignore[attr-defined]
    finally:
        adapter.close()


def test_a_write_that_may_have_committed_stays_outcome_unknown_whatever_refused_its_retry(
    pg: Database,
) -> None:
    """A lost COMMIT, then a retry refused for a limit: the event's kind is still
    ``outcome_unknown`` (what alerts and metrics key on), not ``connection_limit``,
    which reads as "nothing written" (a review finding)."""
    import time as clock

    from unistatus.adapter.runner import CONNECTION_LIMIT
    from unistatus.domain.statuses import DualWriteMode

    adapter = _adapter(pg.url)
    events: list[OperationEvent] = []
    adapter.observers.append(events.append)
    try:
        adapter._runner._give_up(  # the failed result as the attempt loop gives it up
            "update_status",
            "op-1",
            DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
            "the server refused a connection: too many connections",
            "connection lost during COMMIT",
            clock.perf_counter(),
            None,
            CONNECTION_LIMIT,
        )
    finally:
        adapter.close()
    assert [(e.outcome_unknown, e.error_kind) for e in events] == [(True, "outcome_unknown")]


def _set_limit(pg: Database, role: str, limit: int) -> None:
    """The role's CONNECTION LIMIT now (0: every new connection of it is refused; the
    ones open stay)."""
    admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER ROLE {role} CONNECTION LIMIT {int(limit)}")
    finally:
        admin.dispose()


def test_the_mode_re_read_after_a_switch_waits_for_a_slot_too(pg: Database) -> None:
    """A write that meets a mode switch re-reads the mode on a connection of its own:
    refused there for a limit, it waits for a slot like its first read and its attempts
    (it failed at once as "connection_limit", a gap noticed in review)."""
    with a_role_limited_to(pg, 2) as (role, url):
        settings = load_settings(
            database_url=url,
            record_stats=False,
            mode_refresh_seconds=60,  # the mode as first read, until the switch says
            write_queue_timeout_seconds=5,
        )
        # No pool: the re-read opens a connection of its own, as when the pool's are busy.
        engine = create_engine(url, poolclass=NullPool, lock_timeout_ms=settings.lock_timeout_ms)
        connects: list[float] = []
        sa.event.listen(engine, "do_connect", lambda *_: connects.append(time.monotonic()))
        adapter = DualWriteAdapter(engine, settings=settings)
        assert adapter.mode is DualWriteMode.LEGACY_ONLY
        results = []
        with pg.engine.connect() as switcher:
            tx = switcher.begin()
            PostgresOps(pg.engine).mode_exclusive_lock(switcher)
            write_mode(switcher, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, actor="t", reason="t")
            writer = threading.Thread(target=lambda: results.append(_create(adapter)))
            writer.start()
            waiting = sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = :role "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
            )
            with pg.engine.connect() as watcher:
                until = time.monotonic() + 10
                while not watcher.execute(waiting, {"role": role}).scalar_one():
                    watcher.rollback()  # the activity view is read once per transaction
                    assert time.monotonic() < until, "the write never waited for the switch"
                    time.sleep(0.01)
            # The write holds its connection: from now on the role connects no more.
            _set_limit(pg, role, 0)
            before = len(connects)
            tx.commit()
        try:
            # Refused twice after the switch (the re-read, then its retry), or the write
            # gave up: either way a slot frees up now.
            until = time.monotonic() + 5
            while writer.is_alive() and len(connects) < before + 2 and time.monotonic() < until:
                time.sleep(0.01)
            _set_limit(pg, role, 2)
            writer.join(10)
            assert results, "the write did not end"
            r = results[0]
            assert r.overall_success, r.error
            assert r.mode is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
        finally:
            adapter.close()
            engine.dispose()
