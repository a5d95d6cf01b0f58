"""The adapter's one- and two-round-trip paths on PostgreSQL (unistatus.adapter.fast).

A status change is planned from state known without locks (this adapter's last write,
or an unlocked read) and written by one statement that takes the mode lock, reads the
mode afresh, locks the rows and re-checks them. These tests hold it to the guarantees of
the locked path: nothing is written from a stale state, a mode switch that commits while
the write waits is obeyed, the history chain stays exact under racing writers with stale
caches, and without revision 0015's function the adapter still works (locked path).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.clock import utcnow
from unistatus.db import schema
from unistatus.db.control import set_mode, write_mode
from unistatus.db.dialect import PostgresOps
from unistatus.db.prepared import Prepared
from unistatus.db.tables import pending_legacy_changes, status_history
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InvalidTransitionError

M = DualWriteMode
H = status_history


def adapter_in(db: Database, mode: DualWriteMode, **settings: Any) -> DualWriteAdapter:
    set_mode(db.engine, mode, reason="test", actor="test")
    adapter = DualWriteAdapter(db.engine, settings=db.settings.model_copy(update=settings))
    adapter.modes.refresh()
    assert adapter.fast is not None, "revision 0015's function should be installed"
    return adapter


def history(db: Database, utx_id: str) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        q = sa.select(H).where(H.c.transaction_id == utx_id).order_by(H.c.id)
        return [dict(r) for r in conn.execute(q).mappings()]


def row_state(db: Database, utx_id: str, legacy_id: int) -> tuple[Any, ...]:
    with db.engine.connect() as conn:
        u = conn.execute(sa.select(U).where(U.c.id == utx_id)).mappings().one()
        legacy = conn.execute(
            sa.text("SELECT status FROM cashouts WHERE id = :id"), {"id": legacy_id}
        ).scalar_one()
    return legacy, u["status"], u["legacy_status"], u["version"]


@pytest.fixture
def statements(pg: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, bool]]]:
    """Every statement sent, with whether its connection was in autocommit."""
    sent: list[tuple[str, bool]] = []
    real_rows = Prepared.rows

    def recorded_rows(self: Prepared, conn: sa.Connection, values: Any) -> Any:
        dbapi = conn.connection.dbapi_connection
        sent.append((self.compiled.string, bool(getattr(dbapi, "autocommit", False))))
        return real_rows(self, conn, values)

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append((statement, bool(conn.connection.dbapi_connection.autocommit)))

    monkeypatch.setattr(Prepared, "rows", recorded_rows)
    sa.event.listen(pg.engine, "before_cursor_execute", record)
    yield sent
    sa.event.remove(pg.engine, "before_cursor_execute", record)


# --- round trips --------------------------------------------------------------------------


def test_round_trips_of_the_hot_paths(pg: Database, statements: list[tuple[str, bool]]) -> None:
    """A create is one statement in a transaction (it takes the mode lock itself); a
    change after this adapter's own write is one autocommit statement; a change to a
    transaction it does not know is an unlocked read plus that statement."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    statements.clear()
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="PROCESSING")
    created = list(statements)
    statements.clear()
    r1 = a.update_status(c.entity_id, "AWAITING_RESPONSE", "r", "t")
    known = list(statements)
    statements.clear()
    a.fast.known.clear()  # type: ignore[union-attr]
    r2 = a.update_status(c.entity_id, "PROCESSING", "r", "t")
    unknown = list(statements)
    assert c.overall_success and r1.overall_success and r2.overall_success

    assert len(created) == 1 and not created[0][1], created
    assert created[0][0].lstrip().startswith("WITH unistatus_legacy_insert")
    assert "unistatus_locked_mode('CASHOUT')" in created[0][0]
    assert len(known) == 1 and known[0][1], known
    assert known[0][0].lstrip().startswith("WITH unistatus_locked")
    assert "unistatus_locked_mode('CASHOUT')" in known[0][0] and "FOR UPDATE" in known[0][0]
    assert len(unknown) == 2 and all(auto for _, auto in unknown), unknown
    assert "FOR UPDATE" not in unknown[0][0] and unknown[1][0] == known[0][0]

    chain = [
        (h["from_status"], h["to_status"], h["to_legacy_status"])
        for h in history(pg, c.entity_id or "")
    ]
    assert chain == [
        (None, "PROCESSING", "EXECUTING"),
        ("PROCESSING", "AWAITING_RESPONSE", "AWAITING_RESPONSE"),
        ("AWAITING_RESPONSE", "PROCESSING", "EXECUTING"),
    ]
    assert row_state(pg, c.entity_id or "", c.legacy_entity_id or 0) == (
        "EXECUTING",
        "PROCESSING",
        "EXECUTING",
        3,
    )


def test_legacy_only_changes_are_guarded_too(
    pg: Database, statements: list[tuple[str, bool]]
) -> None:
    a = adapter_in(pg, M.LEGACY_ONLY)
    other = adapter_in(pg, M.LEGACY_ONLY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    lid = c.legacy_entity_id or 0
    statements.clear()
    assert a.update_status(f"cashout:{lid}", "PROCESSING", "r", "t").overall_success
    assert len(statements) == 1 and statements[0][1]
    # Another adapter moves it on: this adapter's cached state is stale, its guard
    # refuses, and the change is planned again from the row as it is.
    assert other.update_status(f"cashout:{lid}", "AWAITING_RESPONSE", "r", "t").overall_success
    assert a.fast is not None and (a.fast.hits, a.fast.misses) == (1, 0)
    r = a.update_status(f"cashout:{lid}", "SUCCESS", "r", "t")
    assert r.overall_success and r.changed
    assert (a.fast.hits, a.fast.misses) == (1, 1)  # the cached state was refused
    with pg.engine.connect() as conn:
        status = conn.execute(sa.text(f"SELECT status FROM cashouts WHERE id = {lid}"))
        assert status.scalar_one() == "SUCCESS"
    assert history(pg, c.entity_id or "") == []  # LEGACY_ONLY leaves unified alone


# --- stale state -------------------------------------------------------------------------


def test_a_stale_cached_state_is_never_written_from(pg: Database) -> None:
    """Adapter A created the transaction (and remembers PENDING); B moves it on. A's
    next change must be judged from the real state, and history must say so."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    b = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    utx, lid = c.entity_id or "", c.legacy_entity_id or 0
    assert b.update_status(utx, "PROCESSING", "r", "b").overall_success

    # Valid from the stale PENDING and from the real PROCESSING: the guard must notice.
    r = a.update_status(utx, "FAILED", "r", "a")
    assert r.overall_success and r.changed
    last = history(pg, utx)[-1]
    assert (last["from_status"], last["to_status"]) == ("PROCESSING", "FAILED")
    assert row_state(pg, utx, lid) == ("FAILED", "FAILED", "FAILED", 3)

    # Invalid from the stale state, valid from the real one: planned again, written.
    c2 = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert b.update_status(c2.entity_id, "PROCESSING", "r", "b").overall_success
    assert a.update_status(c2.entity_id, "AWAITING_RESPONSE", "r", "a").overall_success

    # Valid from the stale state, invalid from the real one: refused, nothing written.
    c3 = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert b.update_status(c3.entity_id, "PROCESSING", "r", "b").overall_success
    assert b.update_status(c3.entity_id, "SUCCESS", "r", "b").overall_success
    before = row_state(pg, c3.entity_id or "", c3.legacy_entity_id or 0)
    with pytest.raises(InvalidTransitionError):
        a.update_status(c3.entity_id, "CANCELLED", "r", "a")
    assert row_state(pg, c3.entity_id or "", c3.legacy_entity_id or 0) == before
    assert len(history(pg, c3.entity_id or "")) == 3


def test_a_refused_write_reports_what_it_found(
    pg: Database, statements: list[tuple[str, bool]]
) -> None:
    """A stale cached state costs one more statement, not a read and a write: the
    refused guarded write returns the rows as it found them, and the change is planned
    again from that."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    b = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    assert b.update_status(c.entity_id, "PROCESSING", "r", "b").overall_success
    statements.clear()
    r = a.update_status(c.entity_id, "FAILED", "r", "a")
    assert r.overall_success and r.changed
    prefix = "WITH unistatus_locked"
    assert [sql.lstrip()[: len(prefix)] for sql, _ in statements] == [prefix] * 2, statements
    last = history(pg, c.entity_id or "")[-1]
    assert (last["from_status"], last["to_status"]) == ("PROCESSING", "FAILED")


@pytest.mark.parametrize("undone_by", ["rollback", "savepoint"])
def test_a_change_the_caller_rolls_back_is_forgotten(
    pg: Database, statements: list[tuple[str, bool]], undone_by: str
) -> None:
    """The state cache remembers a change made in the caller's transaction; when the
    caller (or a savepoint of it) rolls it back, it is forgotten at once, so the next
    change reads afresh instead of costing a guarded write refused on a stale state."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="PROCESSING")
    with pg.engine.connect() as conn:
        tx = conn.begin()
        savepoint = conn.begin_nested() if undone_by == "savepoint" else None
        a.update_status(c.entity_id, "AWAITING_RESPONSE", "r", "t", connection=conn)
        if savepoint is not None:
            savepoint.rollback()
            statements.clear()
            r = a.update_status(c.entity_id, "FAILED", "r", "t", connection=conn)
            tx.commit()
        else:
            tx.rollback()
            statements.clear()
            r = a.update_status(c.entity_id, "FAILED", "r", "t")  # valid from either state
    assert r.overall_success and r.changed, r.error
    # A read, then the write (and, in the caller's transaction, clearing the capture's
    # writer mark so that the caller's own SQL after it is captured: docs/capture.md).
    sent = [sql.lstrip() for sql, _ in statements if "set_config" not in sql]
    assert len(sent) == 2 and "FOR UPDATE" not in sent[0], sent
    assert sent[1].startswith("WITH unistatus_locked")
    chain = [(h["from_status"], h["to_status"]) for h in history(pg, c.entity_id or "")]
    assert chain == [(None, "PROCESSING"), ("PROCESSING", "FAILED")]


def test_racing_adapters_with_stale_caches_keep_an_exact_history(pg: Database) -> None:
    """Four adapters, each remembering its own last writes, race on the same escrows.
    Every committed change must chain from the one before it, and the version must
    count them: a write from a stale state would break the chain."""
    adapters = [adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY) for _ in range(4)]
    ids = [
        adapters[0].create_transaction("ESCROW", 1, "10", "USDT", status="FUNDS_HELD").entity_id
        for _ in range(3)
    ]
    stop = time.monotonic() + 1.5

    def writer(seed: int) -> int:
        rng, done = random.Random(seed), 0
        while time.monotonic() < stop:
            a = adapters[seed % len(adapters)]
            target = rng.choice(["FUNDS_HELD", "RELEASE_PENDING", "DISPUTED"])
            try:
                done += a.update_status(rng.choice(ids), target, "race", f"w{seed}").changed
            except InvalidTransitionError:
                pass  # e.g. DISPUTED -> RELEASE_PENDING is valid, FUNDS_HELD -> itself no-op
        return done

    with ThreadPoolExecutor(8) as pool:
        changed = sum(pool.map(writer, range(8)))
    assert changed > 50
    assert sum(a.fast.hits for a in adapters if a.fast) > 0  # the cache was exercised
    total = 0
    for utx in ids:
        rows = history(pg, utx or "")
        for before, after in zip(rows, rows[1:], strict=False):
            assert after["from_status"] == before["to_status"], (before, after)
            assert after["from_legacy_status"] == before["to_legacy_status"]
        with pg.engine.connect() as conn:
            u = conn.execute(sa.select(U).where(U.c.id == utx)).mappings().one()
            legacy = conn.execute(
                sa.text(f"SELECT status FROM escrows WHERE id = {u['legacy_id']}")
            ).scalar_one()
        assert u["version"] == len(rows) and u["status"] == rows[-1]["to_status"]
        assert legacy == u["legacy_status"] == rows[-1]["to_legacy_status"]
        total += len(rows) - 1
    assert total == changed


def _backend_waiting_on_a_row(pg: Database) -> bool:
    """Asked in a transaction of its own: pg_stat_activity is a snapshot per transaction."""
    q = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND wait_event IN ('transactionid', 'tuple') AND datname = current_database()"
    )
    with pg.engine.connect() as conn:
        return bool(conn.execute(q).scalar_one())


def test_a_unified_change_committed_while_the_write_waits_leaves_legacy_alone(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guarded write locks only the legacy row explicitly; the unified row is
    guarded by its UPDATE's own lock and WHERE. A writer of the unified side alone holds
    that row while the write is on its way; once it commits (version moved on), the
    statement must write nothing at all: no legacy change without its unified change
    and history row. The change is then planned again and written once."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    utx, lid = c.entity_id or "", c.legacy_entity_id or 0
    assert a.update_status(utx, "PROCESSING", "r", "a").changed  # remembered: version 2

    guarded = a.hot.guarded_dual_write(LegacySystemType.CASHOUT)
    real_rows = guarded.rows
    after_each: list[tuple[int, tuple[Any, ...]]] = []

    def spied_rows(conn: sa.Connection, values: Any) -> list[tuple[Any, ...]]:
        rows = real_rows(conn, values)  # autocommit: committed (or not) on return
        after_each.append((rows[0][0] if rows else -1, row_state(pg, utx, lid)))
        return rows

    monkeypatch.setattr(guarded, "rows", spied_rows)
    results: list[Any] = []
    with pg.engine.connect() as holder:
        tx = holder.begin()
        holder.execute(sa.update(U).where(U.c.id == utx).values(version=U.c.version + 1))
        worker = threading.Thread(
            target=lambda: results.append(a.update_status(utx, "AWAITING_RESPONSE", "r", "a"))
        )
        worker.start()
        for _ in range(200):
            if _backend_waiting_on_a_row(pg):
                break
            time.sleep(0.01)
        else:
            tx.rollback()
            worker.join(10)
            pytest.fail("the guarded write never waited for the unified row")
        tx.commit()
    worker.join(10)

    (r,) = results
    assert r.overall_success and r.changed
    refused, state = after_each[0]
    assert refused == 0
    assert state == ("EXECUTING", "PROCESSING", "EXECUTING", 3)  # only the holder's bump
    assert row_state(pg, utx, lid) == (
        "AWAITING_RESPONSE",
        "AWAITING_RESPONSE",
        "AWAITING_RESPONSE",
        4,
    )
    steps = [(h["from_status"], h["to_status"]) for h in history(pg, utx)]
    assert steps == [
        (None, "PENDING"),
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "AWAITING_RESPONSE"),
    ]


# --- mode switches -----------------------------------------------------------------------


def _backend_waiting_on_advisory_lock(conn: sa.Connection) -> bool:
    q = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND wait_event = 'advisory' AND pid <> pg_backend_pid()"
    )
    return bool(conn.execute(q).scalar_one())


def _switch_while_waiting(pg: Database, new_mode: DualWriteMode, write: Callable[[], Any]) -> Any:
    """Hold a mode switch (exclusive lock, new mode written, not committed), start
    ``write``, wait until it waits for the mode lock, then commit the switch."""
    results: list[Any] = []
    with pg.engine.connect() as switcher:
        tx = switcher.begin()
        PostgresOps(pg.engine).mode_exclusive_lock(switcher)
        write_mode(switcher, new_mode, actor="test", reason="switch")
        worker = threading.Thread(target=lambda: results.append(write()))
        worker.start()
        for _ in range(200):
            if _backend_waiting_on_advisory_lock(switcher):
                break
            time.sleep(0.01)
        else:
            tx.rollback()
            worker.join(10)
            pytest.fail("the write never waited for the mode lock")
        tx.commit()
    worker.join(10)
    (result,) = results
    return result


@pytest.mark.parametrize("cached", [True, False], ids=["known-state", "read-state"])
def test_a_switch_committed_while_the_change_waits_is_obeyed(pg: Database, cached: bool) -> None:
    """The guarded statement waits for the switch, then must see UNIFIED_ONLY (its own
    snapshot predates the switch; unistatus_locked_mode() reads afresh) and write
    nothing to legacy: the change is made in UNIFIED_ONLY and queued for replay."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, state_cache_size=100 if cached else 0)
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    utx, lid = c.entity_id or "", c.legacy_entity_id or 0
    assert bool(a.fast and a.fast.known) is cached
    r = _switch_while_waiting(
        pg, M.UNIFIED_ONLY, lambda: a.update_status(utx, "PROCESSING", "r", "t")
    )
    assert r.overall_success and r.mode is M.UNIFIED_ONLY
    assert row_state(pg, utx, lid) == ("PENDING", "PROCESSING", "EXECUTING", 2)
    assert history(pg, utx)[-1]["mode"] == M.UNIFIED_ONLY.value
    with pg.engine.connect() as conn:
        queued = conn.execute(sa.select(pending_legacy_changes.c.legacy_status)).scalars().all()
    assert queued == ["EXECUTING"]


def test_a_create_waiting_for_a_switch_is_made_under_the_new_mode(pg: Database) -> None:
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    r = _switch_while_waiting(
        pg, M.UNIFIED_ONLY, lambda: a.create_transaction("ESCROW", 1, "5", "USD")
    )
    assert r.overall_success and r.mode is M.UNIFIED_ONLY and r.legacy_entity_id is None
    assert pg.count("escrows") == 0
    assert history(pg, r.entity_id or "")[0]["mode"] == M.UNIFIED_ONLY.value


def test_guards_take_the_mode_lock_before_any_row_lock(pg: Database) -> None:
    """The mode lock is a one-time filter, evaluated before rows are read or locked, as
    a mode switch takes its locks (advisory first): no lock-order inversion."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    system = LegacySystemType.CASHOUT
    for prepared in (
        a.hot.guarded_dual_write(system),
        a.hot.guarded_legacy_write(system),
        a.hot.create_dual(system),
        a.hot.create_legacy(system),
    ):
        params = {name: _sample(bind.type) for bind, name in prepared.compiled.bind_names.items()}
        params["p_mode"] = "DUAL_WRITE_LEGACY_PRIMARY"
        with pg.engine.connect() as conn:
            plan = "\n".join(
                r[0]
                for r in conn.exec_driver_sql(
                    "EXPLAIN (VERBOSE) " + prepared.compiled.string, prepared.bind(params)
                )
            )
        assert "Output: unistatus_locked_mode('" in plan, plan
        assert re.search(r"One-Time Filter: \(\$\d+ = 'DUAL_WRITE_LEGACY_PRIMARY'", plan), plan


def _sample(type_: Any) -> Any:
    """A plausible value of a bind's type (NULLs would let the planner fold guards away)."""
    try:
        python_type = type_.python_type
    except NotImplementedError:
        return None
    samples = {int: 1, str: "x", Decimal: Decimal(1), bool: False, datetime: utcnow()}
    return samples.get(python_type)


# --- without revision 0015 --------------------------------------------------------------


def test_without_the_function_the_locked_path_does_the_work(
    pg: Database, caplog: pytest.LogCaptureFixture
) -> None:
    set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    schema.downgrade(pg.engine, pg.settings, "0005")
    try:
        with caplog.at_level(logging.WARNING, logger="unistatus.adapter.core"):
            a = DualWriteAdapter(pg.engine, settings=pg.settings)
        assert a.fast is None and "unistatus_locked_mode(system) is missing" in caplog.text
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert a.update_status(c.entity_id, "PROCESSING", "r", "t").overall_success
        assert [h["to_status"] for h in history(pg, c.entity_id or "")] == [
            "PENDING",
            "PROCESSING",
        ]
    finally:
        assert schema.upgrade(pg.engine, pg.settings) == schema.INSTALL_REVISION
    assert DualWriteAdapter(pg.engine, settings=pg.settings).fast is not None


@pytest.mark.parametrize(
    "level", ["repeatable\\ read", "serializable"], ids=["repeatable-read", "serializable"]
)
def test_a_switch_is_obeyed_whatever_the_servers_default_isolation(
    pg: Database, level: str
) -> None:
    """Under a server default of REPEATABLE READ or SERIALIZABLE, the autocommit guarded
    statement's snapshot predated the switch it waited for: the change was made in
    LEGACY_ONLY after DUAL_WRITE_LEGACY_PRIMARY had committed (a probe), its unified row
    left behind. Such a connection's changes take the locked path (READ COMMITTED)."""
    set_mode(pg.engine, M.LEGACY_ONLY, reason="test", actor="test")
    url = pg.engine.url.render_as_string(hide_password=False)
    strict = sa.create_engine(
        url,
        connect_args={"options": f"-c default_transaction_isolation={level}"},
    )
    try:
        a = DualWriteAdapter(
            strict, settings=pg.settings.model_copy(update={"state_cache_size": 100})
        )
        a.modes.refresh()
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        utx, lid = c.entity_id or "", c.legacy_entity_id or 0
        assert a.update_status(utx, "PROCESSING", "r", "t").overall_success  # state known
        r = _switch_while_waiting(
            pg,
            M.DUAL_WRITE_LEGACY_PRIMARY,
            lambda: a.update_status(utx, "AWAITING_RESPONSE", "r", "t"),
        )
        assert r.overall_success and r.mode is M.DUAL_WRITE_LEGACY_PRIMARY
        assert history(pg, utx)[-1]["mode"] == M.DUAL_WRITE_LEGACY_PRIMARY.value
        assert row_state(pg, utx, lid)[:2] == ("AWAITING_RESPONSE", "AWAITING_RESPONSE")
        a.close()
    finally:
        strict.dispose()
