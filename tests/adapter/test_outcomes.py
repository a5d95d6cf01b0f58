"""Outcomes that do not lie (issue 10, section 4).

- A write whose connection was lost after it may have reached the server says its
  outcome is unknown (``DualWriteResult.outcome_unknown``), whatever a retry reports.
- During an outage every failed operation reaches the observers and the statistics.
- A connection lost inside ``primary_wins``'s secondary savepoint is a connection
  failure (retried), never a secondary failure; no raw SQLAlchemy error escapes.

Faults are real: backends are ended with ``pg_terminate_backend`` and new connections
refused with ``ALTER DATABASE ... ALLOW_CONNECTIONS false`` on the throwaway database
(restored in ``finally``). To lose the reply of a statement that did commit, a psycopg
cursor runs it for real, then terminates its own backend and reads from the dead
connection (the error the caller sees is the driver's own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, ClassVar

import psycopg
import pytest
import sqlalchemy as sa

from conftest import Database
from support.outage import DEADLINE, Server
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.adapter.core import OperationEvent
from unistatus.config import load_settings
from unistatus.db.control import set_mode
from unistatus.db.mode_lock_keys import MODE_LOCK_KEY
from unistatus.db.prepared import Prepared
from unistatus.db.tables import repair_queue
from unistatus.errors import InputError, StorageError
from unistatus.observe.stats import OperationStats, window

M = DualWriteMode


# --- fault injection ---------------------------------------------------------------------


@pytest.fixture
def server(pg: Database) -> Iterator[Server]:
    s = Server(pg)
    yield s
    s.close()


class LostReply(psycopg.Cursor[Any]):
    """Runs the statement for real; if it matches the trap, the reply is then lost:
    ``on_trap(backend pid)`` runs (it ends the backend) and the cursor reads from the
    dead connection, so the caller gets the driver's real error."""

    trap: ClassVar[Callable[[str], bool] | None] = None
    on_trap: ClassVar[Callable[[int], None]] = staticmethod(lambda pid: None)

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:  # type: ignore[override]
        out = super().execute(query, params, **kw)
        trap = type(self).trap
        if trap is not None and trap(str(query)):
            type(self).trap = None  # once
            type(self).on_trap(self.connection.info.backend_pid)
            super().execute("SELECT 1")  # the backend is gone: raises
        return out


def lost_reply_cursor() -> type[LostReply]:
    return type("LostReplyOnce", (LostReply,), {})


def victim_engine(db: Database, app: str, **connect_args: Any) -> sa.Engine:
    return sa.create_engine(db.url, connect_args={"application_name": app, **connect_args})


def adapter_in(db: Database, mode: DualWriteMode, engine: sa.Engine, **kw: Any) -> DualWriteAdapter:
    set_mode(db.engine, mode, reason="test", actor="test")
    settings = db.settings.model_copy(update=kw.pop("settings", {}))
    adapter = DualWriteAdapter(engine, settings=settings, **kw)
    adapter.modes.refresh()
    return adapter


def history_count(db: Database, utx_id: str, to_status: str) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM unified_status_history "
                    "WHERE transaction_id = :id AND to_status = :s"
                ),
                {"id": utx_id, "s": to_status},
            ).scalar_one()
        )


def statuses(db: Database, utx_id: str, legacy_id: int) -> tuple[str, str]:
    """(legacy, unified) status of a cashout (legacy EXECUTING is unified PROCESSING)."""
    with db.engine.connect() as conn:
        legacy = conn.execute(
            sa.text("SELECT status FROM cashouts WHERE id = :i"), {"i": legacy_id}
        ).scalar_one()
        unified = conn.execute(
            sa.text("SELECT status FROM unified_transactions WHERE id = :i"), {"i": utx_id}
        ).scalar_one()
    return str(legacy), str(unified)


# --- 1. outcome unknown ------------------------------------------------------------------


def test_a_committed_change_whose_reply_was_lost_is_unknown_though_the_retry_cannot_connect(
    pg: Database, server: Server
) -> None:
    """The issue's crash: the one-statement write commits, its connection dies before the
    reply, the retry cannot connect. The result must not be a plain failure."""
    cursor = lost_reply_cursor()
    victim = victim_engine(pg, "unistatus_victim", cursor_factory=cursor)
    try:
        a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, victim)
        assert a.fast is not None  # the one-statement path
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert c.entity_id and c.legacy_entity_id

        def lose(pid: int) -> None:
            server.allow_connections(False)
            assert server.terminate(f"pid = {pid}") == 1

        cursor.on_trap = staticmethod(lose)
        cursor.trap = staticmethod(lambda sql: "INSERT INTO unified_status_history" in sql)
        try:
            r = a.update_status(c.entity_id, "PROCESSING", "sent", "svc")
        finally:
            server.allow_connections(True)
        assert cursor.trap is None, "the trap did not fire"
        assert r.outcome_unknown, r
        assert not r.overall_success
        assert r.error is not None and "outcome unknown" in r.error
        assert r.as_dict()["outcome_unknown"] is True
        # It had committed: both sides and the history row.
        assert statuses(pg, c.entity_id, c.legacy_entity_id) == ("EXECUTING", "PROCESSING")
        assert history_count(pg, c.entity_id, "PROCESSING") == 1
        # Once the database is back, the same call settles it (a no-op, not a second row).
        again = a.update_status(c.entity_id, "PROCESSING", "sent", "svc")
        assert again.overall_success and not again.outcome_unknown
        assert history_count(pg, c.entity_id, "PROCESSING") == 1
    finally:
        victim.dispose()


def test_a_lost_write_settled_by_its_retry_is_a_success(pg: Database, server: Server) -> None:
    """Lost reply, database still reachable: the retry reads the committed change (a
    no-op under the guard) and the result is a plain success, written once."""
    cursor = lost_reply_cursor()
    victim = victim_engine(pg, "unistatus_victim", cursor_factory=cursor)
    try:
        a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, victim)
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert c.entity_id and c.legacy_entity_id
        cursor.on_trap = staticmethod(lambda pid: server.terminate(f"pid = {pid}"))
        cursor.trap = staticmethod(lambda sql: "INSERT INTO unified_status_history" in sql)
        r = a.update_status(c.entity_id, "PROCESSING", "sent", "svc")
        assert cursor.trap is None
        assert r.overall_success and not r.outcome_unknown, r
        assert history_count(pg, c.entity_id, "PROCESSING") == 1
    finally:
        victim.dispose()


def test_a_retry_refused_after_a_lost_write_keeps_the_outcome_unknown(
    pg: Database, server: Server
) -> None:
    """The lost write committed, another writer moved on to a final status, so the retry
    is refused: that must not read as "your change was refused"."""
    cursor = lost_reply_cursor()
    victim = victim_engine(pg, "unistatus_victim", cursor_factory=cursor)
    try:
        a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, victim)
        other = DualWriteAdapter(pg.engine, settings=pg.settings)
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert c.entity_id
        events: list[OperationEvent] = []
        a.observers.append(events.append)

        def lose_and_move_on(pid: int) -> None:
            server.terminate(f"pid = {pid}")
            moved = other.update_status(c.entity_id, "FAILED", "provider said no", "other")
            assert moved.overall_success

        cursor.on_trap = staticmethod(lose_and_move_on)
        cursor.trap = staticmethod(lambda sql: "INSERT INTO unified_status_history" in sql)
        r = a.update_status(c.entity_id, "PROCESSING", "sent", "svc")
        assert cursor.trap is None
        assert r.outcome_unknown and not r.overall_success, r
        assert r.error is not None and "refused" in r.error
        assert events[-1].outcome_unknown and not events[-1].success
        assert history_count(pg, c.entity_id, "PROCESSING") == 1
    finally:
        victim.dispose()


@contextmanager
def commit_reply_lost(engine: sa.Engine, server: Server, *, refuse: bool) -> Iterator[list[int]]:
    """The next COMMIT on ``engine`` commits, then its connection dies before the reply
    (optionally refusing new connections from then on). Yields the ended pids."""
    ended: list[int] = []

    def on_commit(conn: sa.Connection) -> None:
        if ended:
            return
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.commit()  # the real commit
        dbapi.cursor().execute("SELECT 1")  # a new transaction for SQLAlchemy's COMMIT
        pid = dbapi.info.backend_pid  # type: ignore[attr-defined]
        ended.append(pid)
        if refuse:
            server.allow_connections(False)
        assert server.terminate(f"pid = {pid}") == 1

    sa.event.listen(engine, "commit", on_commit)
    try:
        yield ended
    finally:
        sa.event.remove(engine, "commit", on_commit)
        server.allow_connections(True)


def test_a_create_whose_commit_reply_was_lost_is_unknown_and_not_retried(
    pg: Database, server: Server
) -> None:
    victim = victim_engine(pg, "unistatus_victim")
    try:
        a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, victim)
        with commit_reply_lost(victim, server, refuse=False) as ended:
            r = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert ended
        assert r.outcome_unknown and not r.overall_success, r
        assert pg.count("cashouts") == 1  # committed once, never written again
        assert pg.count("unified_transactions") == 1
    finally:
        victim.dispose()


def test_a_locked_path_change_whose_commit_reply_was_lost_is_unknown(
    pg: Database, server: Server
) -> None:
    """primary_wins takes the locked path: COMMIT reply lost, then no connection."""
    victim = victim_engine(pg, "unistatus_victim")
    try:
        a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, victim, fallback="primary_wins")
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert c.entity_id and c.legacy_entity_id
        with commit_reply_lost(victim, server, refuse=True) as ended:
            r = a.update_status(c.entity_id, "PROCESSING", "sent", "svc")
        assert ended
        assert r.outcome_unknown and not r.overall_success, r
        assert statuses(pg, c.entity_id, c.legacy_entity_id) == ("EXECUTING", "PROCESSING")
    finally:
        victim.dispose()


# --- 3. an outage is counted in full -----------------------------------------------------


def test_every_failure_during_an_outage_reaches_observers_and_statistics(
    pg: Database, server: Server
) -> None:
    victim = victim_engine(pg, "unistatus_victim")
    try:
        # The mode is re-read before nearly every operation, as when an outage outlasts
        # the refresh interval.
        # Recorded by the test's own stats (attached after the first create), not the
        # default ones.
        a = adapter_in(
            pg,
            M.DUAL_WRITE_LEGACY_PRIMARY,
            victim,
            settings={"mode_refresh_seconds": 0.001},
            record_stats=False,
        )
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        events: list[OperationEvent] = []
        stats = OperationStats(pg.engine, start=False)
        stats.attach(a)
        a.observers.append(events.append)
        returned = raised = 0
        with server.refusing():
            server.terminate("application_name = 'unistatus_victim'")
            for i in range(12):
                try:
                    if i % 3 == 0:
                        r = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
                    elif i % 3 == 1:
                        r = a.update_status(c.entity_id, "PROCESSING", "sent", "svc")
                    else:
                        a.get_transaction_status(c.entity_id)
                        raise AssertionError("a read during an outage cannot succeed")
                    assert not r.overall_success and r.error
                    returned += 1
                except StorageError:
                    raised += 1
        assert (returned, raised) == (8, 4)  # writes return, reads raise (README)
        assert len(events) == 12 and not any(e.success for e in events)
        # Once the database is back, the statistics hold all twelve, as errors.
        assert stats.flush() > 0
        seen = window(pg.engine, 600)
        assert (seen.count, seen.errors) == (12, 12)
    finally:
        victim.dispose()


def test_no_raw_sqlalchemy_error_leaves_the_adapter_when_the_database_is_gone(
    pg: Database, server: Server
) -> None:
    victim = victim_engine(pg, "unistatus_victim")
    try:
        a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, victim)
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        with server.refusing():
            server.terminate("application_name = 'unistatus_victim'")
            with pytest.raises(StorageError):
                a.check_consistency(c.entity_id)
            with pytest.raises(StorageError):
                DualWriteAdapter(victim, settings=pg.settings)
    finally:
        victim.dispose()


# --- 4. primary_wins and a lost connection -----------------------------------------------

HOLD_KEY = 4_242_4242


@contextmanager
def secondary_waits(db: Database) -> Iterator[sa.Connection]:
    """A trigger makes every unified UPDATE wait for an advisory lock the test holds."""
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION t_wait_hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"PERFORM pg_advisory_xact_lock_shared({HOLD_KEY}); RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER t_wait_hold BEFORE UPDATE ON unified_transactions "
            "FOR EACH ROW EXECUTE FUNCTION t_wait_hold()"
        )
    holder = db.engine.connect()
    try:
        holder.exec_driver_sql(f"SELECT pg_advisory_lock({HOLD_KEY})")
        yield holder
    finally:
        holder.exec_driver_sql("SELECT pg_advisory_unlock_all()")
        holder.commit()
        holder.close()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS t_wait_hold ON unified_transactions")
            conn.exec_driver_sql("DROP FUNCTION IF EXISTS t_wait_hold()")


def test_primary_wins_retries_a_connection_lost_in_the_secondary_write(
    pg: Database, server: Server
) -> None:
    victim = victim_engine(pg, "unistatus_victim")
    try:
        a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, victim, fallback="primary_wins")
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert c.entity_id and c.legacy_entity_id
        results: list[Any] = []
        errors: list[BaseException] = []

        def write() -> None:
            try:
                results.append(a.update_status(c.entity_id, "PROCESSING", "sent", "svc"))
            except BaseException as exc:  # what escapes is the finding
                errors.append(exc)

        with secondary_waits(pg) as holder:
            worker = threading.Thread(target=write)
            worker.start()
            waiting = "application_name = 'unistatus_victim' AND wait_event_type = 'Lock'"
            server.wait_for(waiting)
            assert server.terminate(waiting) == 1
            holder.exec_driver_sql(f"SELECT pg_advisory_unlock({HOLD_KEY})")
            worker.join(DEADLINE)
        assert not worker.is_alive()
        assert errors == []
        (r,) = results
        assert r.overall_success and r.secondary_success and not r.has_inconsistency, r
        assert statuses(pg, c.entity_id, c.legacy_entity_id) == ("EXECUTING", "PROCESSING")
        assert history_count(pg, c.entity_id, "PROCESSING") == 1
        with pg.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(repair_queue)).scalar() == 0
    finally:
        victim.dispose()


# --- 2. idempotent creates -----------------------------------------------------------------

KEYED = ("WALLET_CASHOUT", 1, "5.00", "USD")


def counts(db: Database) -> dict[str, int]:
    tables = ("cashouts", "unified_transactions", "unified_status_history")
    return {t: db.count(t) for t in (*tables, "unistatus_pending_legacy", IDEMPOTENCY)}


IDEMPOTENCY = "unistatus_idempotency_keys"


@pytest.mark.parametrize("mode", list(DualWriteMode))
def test_a_repeated_key_returns_the_first_result(db: Database, mode: DualWriteMode) -> None:
    a = adapter_in(db, mode, db.engine)
    first = a.create_transaction(*KEYED, idempotency_key="order-17/payout")
    assert first.overall_success and not first.replayed and first.changed
    after_first = counts(db)
    assert after_first[IDEMPOTENCY] == 1
    # Equal arguments (5.00 == 5) and the same key: the first result, nothing written.
    again = a.create_transaction(
        "WALLET_CASHOUT", 1, Decimal("5"), "USD", idempotency_key="order-17/payout"
    )
    assert again.overall_success and again.replayed and not again.changed
    assert (again.entity_id, again.legacy_entity_id, again.legacy_system) == (
        first.entity_id,
        first.legacy_entity_id,
        first.legacy_system,
    )
    assert (again.operation_id, again.status, again.legacy_status, again.mode) == (
        first.operation_id,
        first.status,
        first.legacy_status,
        first.mode,
    )
    assert counts(db) == after_first
    if mode.writes_legacy:
        assert first.legacy_entity_id is not None
    # LEGACY_ONLY writes no unified row: the key still names the legacy row (and the id
    # its unified row will have).
    assert first.entity_id is not None
    # Another key is another transaction.
    other = a.create_transaction(*KEYED, idempotency_key="order-18/payout")
    assert other.entity_id != first.entity_id and not other.replayed


def test_a_repeated_key_with_other_arguments_is_refused(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, db.engine)
    first = a.create_transaction(*KEYED, idempotency_key="k1")
    before = counts(db)
    for changed in (
        dict(amount="5.01"),
        dict(user_id=2),
        dict(metadata={"order": 1}),
        dict(status="PROCESSING"),
    ):
        args = {
            "transaction_type": "WALLET_CASHOUT",
            "user_id": 1,
            "amount": "5",
            "currency": "USD",
        }
        with pytest.raises(InputError, match="idempotency key 'k1' was used"):
            a.create_transaction(**{**args, **changed}, idempotency_key="k1")  # type: ignore[arg-type]
    assert counts(db) == before
    assert first.entity_id is not None


@pytest.mark.parametrize("key", ["", " k", "k ", "k\n", "ké", "x" * 256, 17])
def test_a_malformed_key_is_refused_before_anything_is_written(db: Database, key: Any) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, db.engine)
    with pytest.raises(InputError, match="idempotency key"):
        a.create_transaction(*KEYED, idempotency_key=key)
    assert counts(db)["cashouts"] == 0


def test_concurrent_creates_with_one_key_make_one_transaction(pg: Database) -> None:
    """Four creates with one key, released together from behind the mode lock."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, pg.engine, settings={"write_concurrency": 4})
    results: list[Any] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            results.append(a.create_transaction(*KEYED, idempotency_key="same"))
        except BaseException as exc:
            errors.append(exc)

    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with pg.engine.connect() as blocker:
        tx = blocker.begin()
        blocker.execute(sa.select(sa.func.pg_advisory_xact_lock(MODE_LOCK_KEY)))
        workers = [threading.Thread(target=create) for _ in range(4)]
        for w in workers:
            w.start()
        end = time.monotonic() + DEADLINE
        while blocker.exec_driver_sql(waiting).scalar_one() < 4:
            assert time.monotonic() < end, "the creates never queued on the mode lock"
            time.sleep(0.01)
        tx.commit()
        for w in workers:
            w.join(DEADLINE)
    assert errors == [] and len(results) == 4
    assert len({r.entity_id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False, True, True, True]
    assert counts(pg) == {
        "cashouts": 1,
        "unified_transactions": 1,
        "unified_status_history": 1,
        "unistatus_pending_legacy": 0,
        IDEMPOTENCY: 1,
    }


def test_concurrent_creates_with_one_key_on_sqlite(sqlite_db: Database) -> None:
    """Separate adapters (no shared write gate): the database serialises them."""
    adapters = [
        adapter_in(sqlite_db, M.DUAL_WRITE_LEGACY_PRIMARY, sqlite_db.engine) for _ in range(3)
    ]
    start = threading.Barrier(3)
    results: list[Any] = []

    def create(a: DualWriteAdapter) -> None:
        start.wait(DEADLINE)
        results.append(a.create_transaction(*KEYED, idempotency_key="same"))

    workers = [threading.Thread(target=create, args=(a,)) for a in adapters]
    for w in workers:
        w.start()
    for w in workers:
        w.join(DEADLINE)
    assert len(results) == 3 and len({r.entity_id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False, True, True]
    assert counts(sqlite_db)["cashouts"] == 1


def test_a_keyed_create_whose_commit_reply_was_lost_is_settled_by_its_key(
    pg: Database, server: Server
) -> None:
    victim = victim_engine(pg, "unistatus_victim")
    try:
        a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, victim)
        with commit_reply_lost(victim, server, refuse=False) as ended:
            r = a.create_transaction(*KEYED, idempotency_key="lost-1")
        assert ended
        # The retry found the key: the first attempt had committed.
        assert r.overall_success and not r.outcome_unknown and r.replayed, r
        with pg.engine.connect() as conn:
            (utx,) = conn.exec_driver_sql("SELECT id FROM unified_transactions").scalars()
        assert r.entity_id == utx
        assert counts(pg)["cashouts"] == 1
    finally:
        victim.dispose()


def test_an_unknown_keyed_create_repeated_later_returns_the_committed_one(
    pg: Database, server: Server
) -> None:
    victim = victim_engine(pg, "unistatus_victim")
    try:
        a = adapter_in(pg, M.LEGACY_ONLY, victim)
        with commit_reply_lost(victim, server, refuse=True):
            r = a.create_transaction(*KEYED, idempotency_key="lost-2")
        assert r.outcome_unknown and not r.overall_success, r
        # The database is back; the caller repeats the call with the same key.
        again = a.create_transaction(*KEYED, idempotency_key="lost-2")
        assert again.overall_success and again.replayed
        with pg.engine.connect() as conn:
            (legacy_id,) = conn.exec_driver_sql("SELECT id FROM cashouts").scalars()
        assert again.legacy_entity_id == legacy_id
        assert counts(pg)["cashouts"] == 1
    finally:
        victim.dispose()


@pytest.mark.parametrize("mode", [M.LEGACY_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY])
def test_a_keyed_create_is_still_one_statement(
    pg: Database, mode: DualWriteMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = adapter_in(pg, mode, pg.engine)
    sent: list[str] = []
    real_rows = Prepared.rows

    def recorded_rows(self: Prepared, conn: sa.Connection, values: Any) -> Any:
        sent.append(self.compiled.string)
        return real_rows(self, conn, values)

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    monkeypatch.setattr(Prepared, "rows", recorded_rows)
    sa.event.listen(pg.engine, "before_cursor_execute", record)
    try:
        r = a.create_transaction(*KEYED, idempotency_key="one-trip")
    finally:
        sa.event.remove(pg.engine, "before_cursor_execute", record)
    assert r.overall_success
    assert len(sent) == 1 and "key_insert" in sent[0], sent


# --- the HTTP API and the CLI --------------------------------------------------------------


def test_http_idempotency_key_header(db: Database) -> None:
    from fastapi.testclient import TestClient

    from unistatus.api.service import create_app

    body = {
        "transaction_type": "WALLET_CASHOUT",
        "user_id": 7,
        "amount": "12.50",
        "currency": "USD",
    }
    tokens = [
        {"name": "shop", "token": "shop-secret", "role": "writer"},
        {"name": "ops", "token": "ops-secret", "role": "writer"},
    ]
    settings = db.settings.model_copy(
        update={"api_tokens": load_settings(api_tokens=tokens).api_tokens}
    )
    shop = {"Authorization": "Bearer shop-secret"}
    key = {"Idempotency-Key": "req-0001", **shop}
    with TestClient(create_app(settings, db.engine)) as client:
        first = client.post("/api/v1/transactions", json=body, headers=key)
        assert first.status_code == 201, first.text
        again = client.post("/api/v1/transactions", json=body, headers=key)
        assert again.status_code == 200, again.text
        assert again.json()["replayed"] and not first.json()["replayed"]
        assert again.json()["legacy_entity_id"] == first.json()["legacy_entity_id"]
        other = client.post("/api/v1/transactions", json={**body, "amount": "13"}, headers=key)
        assert other.status_code == 422 and "req-0001" in other.json()["detail"]
        bad = client.post(
            "/api/v1/transactions", json=body, headers={"Idempotency-Key": " x", **shop}
        )
        assert bad.status_code == 422 and "idempotency key" in bad.json()["detail"]
        long_key = {"Idempotency-Key": "k" * 201, **shop}
        too_long = client.post("/api/v1/transactions", json=body, headers=long_key)
        assert too_long.status_code == 422 and "at most 200" in too_long.json()["detail"]
        # The same key from another token is another key: a transaction of its own,
        # never the shop's transaction handed to ops.
        ops = {"Idempotency-Key": "req-0001", "Authorization": "Bearer ops-secret"}
        theirs = client.post("/api/v1/transactions", json=body, headers=ops)
        assert theirs.status_code == 201 and not theirs.json()["replayed"], theirs.text
        assert theirs.json()["legacy_entity_id"] != first.json()["legacy_entity_id"]
    assert db.count("cashouts") == 2


def test_cli_tx_create_idempotency_key(db: Database) -> None:
    import json

    from typer.testing import CliRunner

    from unistatus.cli import app

    args = ["--database-url", db.url, "tx", "create", "--type", "cashout", "--user", "3"]
    args += ["--amount", "9.99", "--currency", "USD", "--idempotency-key", "cli-1", "--json"]
    runner = CliRunner()
    first = runner.invoke(app, args, catch_exceptions=False)
    again = runner.invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0 and again.exit_code == 0, (first.output, again.output)
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert b["replayed"] and b["legacy_entity_id"] == a["legacy_entity_id"]
    plain = runner.invoke(app, args[:-1], catch_exceptions=False)
    assert plain.exit_code == 0 and "already created" in plain.stdout, plain.output
    clash = args[:-1]
    clash[clash.index("9.99")] = "1"
    refused = runner.invoke(app, clash, catch_exceptions=False)
    assert refused.exit_code == 2 and "cli-1" in refused.stderr
    assert db.count("cashouts") == 1
