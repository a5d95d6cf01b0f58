"""The secondary write fails for real (a constraint, a trigger) or the database goes away.

``strict`` must leave both sides exactly as they were; ``primary_wins`` commits the
primary, leaves the secondary alone and queues a repair. Tests that change the schema
restore it (PostgreSQL's test database is shared by the whole run).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.outage import Server
from support.refusing import by_a_rule, refuse, refused
from unistatus import DualWriteAdapter, DualWriteMode, OperationEvent
from unistatus.db.control import set_mode
from unistatus.db.tables import repair_queue, status_history
from unistatus.errors import ConfigError, StorageError

M = DualWriteMode
STATE_TABLES = [
    "cashouts",
    "escrows",
    "exchanges",
    "unified_transactions",
    "unified_status_history",
    "unistatus_pending_legacy",
]


def adapter_in(db: Database, mode: DualWriteMode, **kw: Any) -> DualWriteAdapter:
    set_mode(db.engine, mode, reason="test", actor="test")
    adapter = DualWriteAdapter(kw.pop("engine", db.engine), settings=db.settings, **kw)
    adapter.modes.refresh()
    return adapter


def state(db: Database) -> dict[str, list[str]]:
    with db.engine.connect() as conn:
        return {
            t: sorted(repr(tuple(r)) for r in conn.execute(sa.text(f"SELECT * FROM {t}")))
            for t in STATE_TABLES
        }


def status_of(db: Database, table: str, where: str) -> str:
    with db.engine.connect() as conn:
        return str(conn.execute(sa.text(f"SELECT status FROM {table} WHERE {where}")).scalar_one())


def history_of(db: Database, utx_id: str | None) -> list[tuple[str | None, str]]:
    """(from_status, to_status) of each history row of ``utx_id``, in order."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT from_status, to_status FROM unified_status_history "
                "WHERE transaction_id = :t ORDER BY id"
            ),
            {"t": utx_id},
        ).all()
    return [(r[0], r[1]) for r in rows]


def repairs(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(repair_queue)).mappings()]


# --- the secondary side refuses the write ----------------------------------------------


def test_strict_rolls_everything_back(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="strict")
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    before = state(db)
    rule = by_a_rule(db, "unified_transactions")
    with refuse(db, "unified_transactions", "FAILED") as name:
        error = refused(
            lambda: a.update_status(c.entity_id, "FAILED", "provider said no", "svc"), rule=rule
        )
    assert name in error
    assert state(db) == before
    assert repairs(db) == []
    # The schema is back: the same write now succeeds.
    assert a.update_status(c.entity_id, "FAILED", "provider said no", "svc").overall_success


def test_primary_wins_commits_primary_and_queues_repair(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    with refuse(db, "unified_transactions", "FAILED") as name:
        r = a.update_status(c.entity_id, "FAILED", "provider said no", "svc")
    assert r.primary_success and not r.secondary_success and r.has_inconsistency
    assert r.error is not None and name in r.error
    assert status_of(db, "cashouts", f"id = {c.legacy_entity_id}") == "FAILED"
    assert status_of(db, "unified_transactions", f"id = '{c.entity_id}'") == "PENDING"
    (repair,) = repairs(db)
    assert repair["transaction_id"] == c.entity_id and repair["legacy_id"] == c.legacy_entity_id
    assert repair["operation_id"] == r.operation_id and name in repair["error"]
    assert repair["resolved_at"] is None
    report = a.check_consistency(c.entity_id)
    assert not report["consistent"]
    # The history row goes with the unified change it records: rolled back with it.
    assert history_of(db, c.entity_id) == [(None, "PENDING")]


@contextmanager
def refuse_history(db: Database, to_status: str) -> Iterator[str]:
    """Make the database refuse a history row changing to ``to_status``."""
    name = f"t_no_history_{to_status.lower()}"
    if db.backend == "postgres":
        table = "unified_status_history"
        ddl = f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK (to_status <> '{to_status}')"
        undo = f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"
    else:
        body = f"WHEN NEW.to_status = '{to_status}' BEGIN SELECT RAISE(ABORT, '{name}'); END"
        ddl = f"CREATE TRIGGER {name} BEFORE INSERT ON unified_status_history {body}"
        undo = f"DROP TRIGGER IF EXISTS {name}"
    with db.engine.begin() as conn:
        conn.exec_driver_sql(ddl)
    try:
        yield name
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(undo)


def test_primary_wins_a_refused_history_row_rolls_back_the_unified_side_only(
    db: Database,
) -> None:
    """The unified side (row and history) is the secondary one: the legacy change
    commits, the unified row is left as it was and queued for repair."""
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, fallback="primary_wins")
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    with refuse_history(db, "FAILED") as name:
        r = a.update_status(c.entity_id, "FAILED", "provider said no", "svc")
    assert r.primary_success and not r.secondary_success and r.has_inconsistency
    assert r.error is not None and name in r.error
    assert status_of(db, "cashouts", f"id = {c.legacy_entity_id}") == "FAILED"
    assert status_of(db, "unified_transactions", f"id = '{c.entity_id}'") == "PENDING"
    assert history_of(db, c.entity_id) == [(None, "PENDING")]
    assert [q["transaction_id"] for q in repairs(db)] == [c.entity_id]


def test_primary_wins_with_unified_primary_keeps_legacy(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
    c = a.create_transaction("ESCROW", 1, "5", "USD")
    with refuse(db, "escrows", "CANCELLED") as name:
        r = a.update_status(c.entity_id, "CANCELLED", "buyer left", "svc")
    assert r.primary_success and not r.secondary_success and r.has_inconsistency
    assert status_of(db, "unified_transactions", f"id = '{c.entity_id}'") == "CANCELLED"
    assert status_of(db, "escrows", f"id = {c.legacy_entity_id}") == "CREATED"
    (repair,) = repairs(db)
    assert name in repair["error"] and repair["transaction_id"] == c.entity_id
    assert history_of(db, c.entity_id) == [(None, "PENDING"), ("PENDING", "CANCELLED")]


def history_rows(db: Database, utx_id: str | None) -> list[dict[str, Any]]:
    """Each history row of ``utx_id`` (column key: value, ``meta`` decoded), in order."""
    h = status_history
    query = (
        sa.select(*(c.label(c.key) for c in h.c))
        .where(h.c.transaction_id == utx_id)
        .order_by(h.c.id)
    )
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def test_primary_wins_marks_the_history_row_of_a_refused_legacy_side(db: Database) -> None:
    """Unified primary, legacy refuses the change (an application's trigger): the
    history row of the change stands with the unified side, and says legacy refused it
    (the flag, the first line of legacy's error, queued for repair), the caller's
    metadata kept beside; ``to_legacy_status`` stays what the change asked legacy for."""
    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    ok = a.create_transaction("WALLET_CASHOUT", 2, "5", "USD")
    with refuse(db, "cashouts", "EXECUTING") as name:
        r = a.update_status(c.entity_id, "PROCESSING", "second repro", "u2", {"ticket": 7})
        fine = a.update_status(ok.entity_id, "CANCELLED", "user left", "u2", {"ticket": 8})
    assert r.has_inconsistency and fine.overall_success and not fine.has_inconsistency
    assert status_of(db, "cashouts", f"id = {c.legacy_entity_id}") == "PENDING"
    *_, row = history_rows(db, c.entity_id)
    assert (row["from_status"], row["to_status"]) == ("PENDING", "PROCESSING")
    assert (row["from_legacy_status"], row["to_legacy_status"]) == ("PENDING", "EXECUTING")
    assert (row["triggered_by"], row["override"]) == ("u2", False)
    meta = row["meta"]
    mark = (meta or {}).get("unistatus") or {}
    assert mark.get("flag") == "legacy_refused", meta
    assert mark["repair_queued"] is True and meta["ticket"] == 7
    assert name in mark["legacy_error"] and "\n" not in mark["legacy_error"]
    # A change legacy took is not marked.
    *_, row = history_rows(db, ok.entity_id)
    assert row["to_status"] == "CANCELLED" and row["meta"] == {"ticket": 8}


def test_strict_with_unified_primary_rolls_back(db: Database) -> None:
    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY)
    c = a.create_transaction("ESCROW", 1, "5", "USD")
    before = state(db)
    with refuse(db, "escrows", "CANCELLED"):  # the application's own rule
        refused(lambda: a.update_status(c.entity_id, "CANCELLED", "buyer left", "svc"), rule=True)
    assert state(db) == before and repairs(db) == []


# --- the database goes away --------------------------------------------------------------


def test_missing_table_fails_cleanly(pg: Database) -> None:
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    before = state(pg)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE unified_status_history RENAME TO gone_history")
    try:
        r = a.update_status(c.entity_id, "PROCESSING", "r", "t")
        assert not r.overall_success and "unified_status_history" in (r.error or "")
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE gone_history RENAME TO unified_status_history")
    assert state(pg) == before
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts RENAME TO gone_cashouts")
    try:
        with pytest.raises(StorageError, match="cashouts"):
            a.get_transaction_status(c.entity_id)
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE gone_cashouts RENAME TO cashouts")
    assert a.update_status(c.entity_id, "PROCESSING", "r", "t").overall_success


def test_connection_killed_mid_write(pg: Database) -> None:
    """The adapter's backend is terminated while its write waits: nothing half-written,
    and the write is retried on a fresh connection (it had not reached COMMIT)."""
    victim = sa.create_engine(pg.url, connect_args={"application_name": "unistatus_victim"})
    try:
        a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY, engine=victim)
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        before = state(pg)
        results: list[Any] = []
        with pg.engine.connect() as blocker:
            tx = blocker.begin()
            blocker.execute(
                sa.text(f"SELECT 1 FROM cashouts WHERE id = {c.legacy_entity_id} FOR UPDATE")
            )
            worker = threading.Thread(
                target=lambda: results.append(a.update_status(c.entity_id, "PROCESSING", "r", "t"))
            )
            worker.start()
            killed = 0
            for _ in range(100):
                killed = blocker.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'unistatus_victim' AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
                if killed:
                    break
                time.sleep(0.05)
            tx.rollback()
            worker.join(10)
        assert killed == 1
        (r,) = results
        assert r.overall_success, r.error  # retried once the lock was free
        after = state(pg)
        assert after != before
        with pg.engine.connect() as conn:
            changes = conn.execute(
                sa.text(
                    "SELECT count(*) FROM unified_status_history "
                    "WHERE transaction_id = :id AND to_status = 'PROCESSING'"
                ),
                {"id": c.entity_id},
            ).scalar_one()
        assert changes == 1  # applied exactly once
        # The pool recovers: the next write goes through.
        assert a.update_status(c.entity_id, "AWAITING_RESPONSE", "r", "t").overall_success
    finally:
        victim.dispose()


@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.UNIFIED_ONLY])
def test_reads_after_the_server_dropped_the_pools_connections(
    pg: Database, mode: DualWriteMode
) -> None:
    """A PostgreSQL restart or failover drops every pooled connection. Writes were
    retried on a fresh one, but the next read met a dead one and raised StorageError
    (the service's GET answered 503 once while the database was fine: review)."""
    victim = sa.create_engine(pg.url, connect_args={"application_name": "unistatus_victim"})
    try:
        a = adapter_in(pg, mode, engine=victim)
        c = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        server = Server(pg)
        assert server.terminate("application_name = 'unistatus_victim'") >= 1
        status, meta = a.get_transaction_status(c.entity_id)
        assert status is not None and status.value == "PENDING", meta
        assert server.terminate("application_name = 'unistatus_victim'") >= 1
        assert a.check_consistency(c.entity_id)["consistent"]
    finally:
        victim.dispose()


def test_a_create_given_a_deleted_rows_id_again_is_refused_not_a_database_failure(
    db: Database,
) -> None:
    """The legacy table handed out the id of its deleted newest row again (SQLite
    without AUTOINCREMENT; PostgreSQL after its sequence was set back): the unified row of
    that id is another transaction's money record. The create failed as a database error
    (counted in the error rate; on SQLite every create after it, for ever: exploratory
    review). It is refused, saying why, and the old record is untouched."""
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    ids = [a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").legacy_entity_id for _ in "ab"]
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM cashouts WHERE id = {ids[-1]}")
        if db.backend == "postgres":
            conn.exec_driver_sql(f"SELECT setval('cashouts_id_seq', {ids[0]})")
        elif conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"
        ).first():  # an AUTOINCREMENT table: made to hand the id out again
            conn.exec_driver_sql(
                f"UPDATE sqlite_sequence SET seq = {ids[0]} WHERE name = 'cashouts'"
            )
    before = state(db)
    events: list[OperationEvent] = []
    a.observers.append(events.append)
    with pytest.raises(ConfigError, match="handed out again"):
        a.create_transaction("WALLET_CASHOUT", 2, "7", "EUR")
    assert state(db) == before
    assert events and all(e.refused for e in events)
