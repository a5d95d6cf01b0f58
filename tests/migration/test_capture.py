"""Writes that bypass the adapter, captured in the database (issue 12, section 3).

SQLite and PostgreSQL (the ``db`` fixture). A raw writer (the "cron job") changes the
legacy tables with plain SQL; the capture brings unified in step in the same
transaction, exactly as the adapter would have, names the writer and counts it. The
concurrent test is in ``test_capture_concurrency.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT, PG_IN_EVERY_LAYOUT, Database
from support.adapters import adapter_in
from support.capture_data import (
    captured,
    history_of,
    legacy_status,
    outdate_capture,
    pending_of,
    raw,
    raw_writer,
    unified_of,
    writer_name,
)
from support.legacy_columns import legacy_columns
from unistatus import DualWriteMode
from unistatus.backfill import quarantine_count
from unistatus.backfill.quarantine import retry_quarantine
from unistatus.backfill.statements import BEYOND_UTX_RANGE
from unistatus.cli import app
from unistatus.db.control import set_mode
from unistatus.db.dialect import ops_for
from unistatus.db.tables import pending_legacy_changes, unified_transactions
from unistatus.db.tables_backfill import backfill_quarantine
from unistatus.db.tables_capture import capture_changed, capture_writers
from unistatus.domain.ids import MAX_LEGACY_ID
from unistatus.domain.mapping import register_extra_statuses
from unistatus.errors import ConfigError
from unistatus.migration import capture
from unistatus.migration.capture_sql import FLAG_DELETED, FLAG_FROZEN, FLAG_REFUSED
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair
from unistatus.observe import alerts
from unistatus.observe.notify import Notifier

M = DualWriteMode
T0 = "2026-01-01 00:00:00"


@pytest.fixture
def cap(db: Database) -> Iterator[Database]:
    with captured(db):
        yield db


def insert_cashouts(
    db: Database, ids: range, status: str = "PENDING", table: str = "cashouts"
) -> None:
    raw(
        db,
        f"INSERT INTO {table} (id, user_id, amount, currency, status, created_at, updated_at) "
        f"SELECT :first + n, 7, 10.50, 'USD', :status, '{T0}', '{T0}' FROM ("
        + " UNION ALL ".join(f"SELECT {i} AS n" for i in range(len(ids)))
        + ") AS seq",
        params={"first": ids.start, "status": status},
    )


def consistent(db: Database) -> bool:
    report = run_check(db.engine, db.settings, store=False)
    return report.is_consistent and report.total > 0


# --- install, remove --------------------------------------------------------------------------


@IN_EVERY_LAYOUT
def test_enable_installs_every_trigger_and_disable_leaves_nothing(db: Database) -> None:
    with db.engine.connect() as conn:
        assert capture.installed(conn) == ([], [])
    enabled = capture.enable(db.engine, db.settings, actor="test", reason="on")
    try:
        assert enabled.enabled and enabled.ok, enabled.as_dict()
        tables = {t.table for t in enabled.installed}
        assert tables == {
            "cashouts",
            "escrows",
            "exchanges",
            "unified_transactions",
            "unistatus_control",
        }
        if db.backend == "postgres":
            # One function per legacy table, the detector and the catch-up.
            assert len(enabled.functions) == 5
        # Enabling again regenerates the same objects in place.
        again = capture.enable(db.engine, db.settings, actor="test", reason="again")
        assert again.installed == enabled.installed and again.ok
    finally:
        disabled = capture.disable(db.engine, db.settings, actor="test", reason="off")
    assert not disabled.enabled and disabled.ok
    with db.engine.connect() as conn:
        assert capture.installed(conn) == ([], [])
        if db.backend == "postgres":
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'unistatus_capture%'")
            ).scalar_one()
            assert left == 0
        else:
            left = conn.execute(
                sa.text(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
                    "AND name NOT LIKE 'unistatus_control_summary_guard%'"  # revision 0021's
                )
            ).scalar_one()
            assert left == 0


def test_status_names_missing_triggers(cap: Database) -> None:
    victim = capture.status(cap.engine, cap.settings).installed[0]
    with cap.engine.begin() as conn:
        on = f" ON {victim.table}" if cap.backend == "postgres" else ""
        conn.exec_driver_sql(f"DROP TRIGGER {victim.name}{on}")
    broken = capture.status(cap.engine, cap.settings)
    assert not broken.ok
    assert {"name": victim.name, "table": victim.table} in broken.as_dict()["missing"]


@pytest.mark.postgres
def test_status_names_disabled_triggers_and_enable_turns_them_on(pg: Database) -> None:
    """`ALTER TABLE ... DISABLE TRIGGER` (what pg_restore --disable-triggers and bulk
    loads do) stopped the capture, and `capture status` still said ok, the gate into
    phase 4 passing over writes it never saw (found by a probe)."""
    with captured(pg):
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE cashouts DISABLE TRIGGER USER")
        broken = capture.status(pg.engine, pg.settings)
        assert not broken.ok
        disabled = broken.as_dict()["disabled"]
        assert disabled and {d["table"] for d in disabled} == {"cashouts"}, disabled
        assert not broken.as_dict()["missing"]
        again = capture.enable(pg.engine, pg.settings, actor="test", reason="on again")
        assert again.ok and again.as_dict()["disabled"] == [], again.as_dict()


@pytest.mark.postgres
def test_a_status_column_renamed_behind_unistatus_is_said_not_taken_for_a_retirement(
    pg: Database,
) -> None:
    """`ALTER TABLE escrows RENAME COLUMN status TO state` (PostgreSQL refuses a type
    change of a trigger's column, not a rename): `capture status` called the table
    "suspended while its status column is retired" and `capture enable` dropped its
    triggers, every later write unseen (found by a probe). Status names it, not ok;
    enable refuses, nothing changed."""
    with captured(pg):
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE escrows RENAME COLUMN status TO state")
        try:
            seen = capture.status(pg.engine, pg.settings)
            assert not seen.ok and seen.suspended == [], seen.as_dict()
            assert seen.as_dict()["status_column_gone"] == ["escrows"], seen.as_dict()
            before = capture.status(pg.engine, pg.settings).installed
            with pytest.raises(ConfigError, match=r"escrows.*status.*not there"):
                capture.enable(pg.engine, pg.settings, actor="test", reason="again")
            assert capture.status(pg.engine, pg.settings).installed == before
        finally:
            with pg.engine.begin() as conn:
                conn.exec_driver_sql("ALTER TABLE escrows RENAME COLUMN state TO status")


def test_status_says_when_the_triggers_were_generated_by_other_code(cap: Database) -> None:
    """Triggers installed by an earlier unistatus hold its SQL (one that a fix since has
    changed, like the conflict arbiter of a missing unified row): status is not ok, and
    says why, until ``enable`` generates them again; then it is ok in a new process's
    eyes too (what it compares is generated the same way every time)."""
    assert capture.status(cap.engine, cap.settings).ok
    outdate_capture(cap)
    stale = capture.status(cap.engine, cap.settings)
    assert not stale.ok and stale.as_dict()["sql_changed"]
    assert not stale.as_dict()["mapping_changed"] and not stale.as_dict()["missing"]
    # `init` (an upgrade) leaves them as they are, and says so (it said nothing: a probe).
    init = CliRunner().invoke(app, ["--database-url", cap.url, "init", "--json"])
    assert init.exit_code == 0 and json.loads(init.stdout)["capture_outdated"], init.output
    assert "unistatus capture enable" in " ".join(init.stderr.split())
    capture.enable(cap.engine, cap.settings, actor="test", reason="the new SQL")
    again = capture.status(cap.engine, cap.settings)
    assert again.ok and not again.as_dict()["sql_changed"]


def test_status_says_when_the_mapping_changed_since_enable(cap: Database) -> None:
    """The triggers hold the mapping as it was at ``enable``: an extra value configured
    since is quarantined by them as unknown, so status is not ok (and says why) until
    ``enable`` generates them again."""
    assert capture.status(cap.engine, cap.settings).ok
    register_extra_statuses({"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}})
    stale = capture.status(cap.engine, cap.settings)
    assert not stale.ok and stale.as_dict()["mapping_changed"]
    capture.enable(cap.engine, cap.settings, actor="test", reason="the new mapping")
    again = capture.status(cap.engine, cap.settings)
    assert again.ok and not again.as_dict()["mapping_changed"]
    # The triggers generated again map the new value.
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    lid = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").legacy_entity_id or 0
    raw(cap, "UPDATE cashouts SET status = 'REFUND_REQUESTED' WHERE id = :id", params={"id": lid})
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None and u["status"] == "CANCELLED"
    assert quarantine_count(cap.engine) == 0


def test_capture_needs_the_schema_of_revision_0011(db: Database) -> None:
    from unistatus.db import schema

    schema.downgrade(db.engine, db.settings, "0010")
    try:
        with pytest.raises(ConfigError, match="unistatus init"):
            capture.enable(db.engine, db.settings, actor="test", reason="on")
    finally:
        schema.upgrade(db.engine, db.settings)


@IN_EVERY_LAYOUT
def test_the_downgrade_of_0011_drops_the_triggers(db: Database) -> None:
    from unistatus.db import schema

    capture.enable(db.engine, db.settings, actor="test", reason="on")
    schema.downgrade(db.engine, db.settings, "0010")
    try:
        with db.engine.connect() as conn:
            assert capture.installed(conn) == ([], [])
        raw(
            db,
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            f"updated_at) VALUES (1, 7, 1, 'USD', 'PENDING', '{T0}', '{T0}')",
        )
    finally:
        schema.upgrade(db.engine, db.settings)


# --- a bypass write, brought in step ----------------------------------------------------------


@IN_EVERY_LAYOUT
@pytest.mark.parametrize("mode", [M.DUAL_WRITE_LEGACY_PRIMARY, M.DUAL_WRITE_UNIFIED_PRIMARY])
def test_a_bypass_update_is_applied_as_the_adapter_would(cap: Database, mode: M) -> None:
    a = adapter_in(cap, mode)
    created = a.create_transaction("ESCROW", 3, "10.50", "USD", status="FUNDS_HELD")
    lid = created.legacy_entity_id
    assert lid is not None
    assert a.update_status(created.entity_id, "RELEASE_PENDING", "release", "svc").changed
    # A refinement legacy cannot express stays when the legacy value still agrees.
    raw(cap, "UPDATE escrows SET amount = 11 WHERE id = :id", params={"id": lid})
    u = unified_of(cap, "ESCROW", lid)
    assert u is not None and (u["status"], u["legacy_status"], u["version"]) == (
        "RELEASE_PENDING",
        "ACTIVE",
        3,
    )
    assert float(u["amount"]) == 11.0
    # A status change: mapped, legacy_status exact, version + 1, one history row.
    raw(cap, "UPDATE escrows SET status = 'COMPLETED' WHERE id = :id", params={"id": lid})
    u = unified_of(cap, "ESCROW", lid)
    assert u is not None and (u["status"], u["legacy_status"], u["version"]) == (
        "SUCCESS",
        "COMPLETED",
        4,
    )
    history = history_of(cap, "ESCROW", lid)
    assert len(history) == 4  # created, the adapter's change, the two bypass writes
    last = history[-1]
    assert (last["from_status"], last["to_status"]) == ("RELEASE_PENDING", "SUCCESS")
    assert (last["from_legacy_status"], last["to_legacy_status"]) == ("ACTIVE", "COMPLETED")
    assert last["triggered_by"] == writer_name(cap) and last["mode"] == mode.value
    assert last["override"] is False and last["meta"]["flag"] is None
    assert last["meta"]["capture"] == "bypass" and last["meta"]["writer"] == writer_name(cap)
    # An update that changes nothing unistatus keeps is no change (nor counted).
    raw(cap, "UPDATE escrows SET updated_at = updated_at WHERE id = :id", params={"id": lid})
    assert len(history_of(cap, "ESCROW", lid)) == 4
    assert consistent(cap)
    # The adapter judges its next change from the captured state.
    after = a.update_status(created.entity_id, "SUCCESS", "again", "svc")
    assert after.overall_success and not after.changed
    seen = {(w.writer, w.system): w for w in capture.writers_seen(cap.engine)}
    assert set(seen) == {(writer_name(cap), "ESCROW")}
    w = seen[(writer_name(cap), "ESCROW")]
    assert (w.writes, w.flagged, w.unmappable, w.last_mode) == (2, 0, 0, mode.value)
    if cap.backend == "postgres":
        assert w.client_addr == "127.0.0.1"


def test_a_bypass_insert_creates_the_unified_row(cap: Database) -> None:
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    insert_cashouts(cap, range(1, 4), "APPROVED")
    for lid in range(1, 4):
        u = unified_of(cap, "CASHOUT", lid)
        assert u is not None
        assert (u["id"], u["status"], u["legacy_status"], u["version"]) == (
            f"UTX1{lid:014d}",
            "FUNDS_HELD",
            "APPROVED",
            1,
        )
        (h,) = history_of(cap, "CASHOUT", lid)
        assert (h["from_status"], h["to_status"], h["to_legacy_status"]) == (
            None,
            "FUNDS_HELD",
            "APPROVED",
        )
        assert h["transaction_id"] == u["id"] and h["triggered_by"] == writer_name(cap)
    assert consistent(cap)


def test_an_update_of_the_id_is_the_old_rows_deletion(cap: Database) -> None:
    """`UPDATE cashouts SET id = 200008 WHERE id = 8`: the new id got a unified row of
    its own, the old one's was left without a word, and its open quarantine entry stayed
    open (found by a probe). The old id now goes as a DELETE does: flagged in its
    history, its quarantine entry closed."""
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    insert_cashouts(cap, range(1, 3), "APPROVED")
    insert_cashouts(cap, range(3, 4), "bogus")  # unmappable: quarantined
    assert unified_of(cap, "CASHOUT", 3) is None
    raw(cap, "UPDATE cashouts SET id = id + 1000 WHERE id IN (1, 3)")
    gone = history_of(cap, "CASHOUT", 1)
    assert gone[-1]["meta"]["flag"] == FLAG_DELETED, gone
    assert gone[-1]["to_legacy_status"] is None and gone[-1]["from_legacy_status"] == "APPROVED"
    moved = unified_of(cap, "CASHOUT", 1001)
    assert moved is not None and moved["status"] == "FUNDS_HELD"
    assert history_of(cap, "CASHOUT", 2)[-1]["meta"]["flag"] is None  # not moved: untouched
    with cap.engine.connect() as conn:
        q = f"SELECT legacy_id, resolution FROM {cap.table('unistatus_backfill_quarantine')}"
        quarantined = dict(conn.execute(sa.text(q)).tuples().all())
    assert quarantined.get(3) == "legacy_row_gone", quarantined
    assert 1003 in quarantined and quarantined[1003] is None, quarantined


@pytest.mark.postgres
def test_a_bulk_update_after_a_one_row_update_on_its_connection_stays_linear(
    pg: Database,
) -> None:
    """PL/pgSQL keeps each statement's plan for the session, made for the first
    statement's row counts: after a one-row captured UPDATE, a bulk UPDATE on the same
    connection (a pooled one, a cron job's) joined its old and new rows in a nested loop,
    each against every other: 20,000 rows took 36-42 s instead of 0.7 s (found by a
    review). Timed against the same bulk UPDATE on a fresh connection."""
    n = 6000
    with captured(pg):
        set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
        raw(
            pg,
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            f"updated_at) SELECT g, 7, 10.50, 'USD', 'PENDING', '{T0}', '{T0}' "
            "FROM generate_series(1, :n) AS g",
            params={"n": n},
        )
        bulk = "UPDATE cashouts SET amount = amount + 1"

        def timed(conn: sa.Connection, sql: str) -> float:
            started = time.perf_counter()
            conn.exec_driver_sql(sql)
            conn.commit()
            return time.perf_counter() - started

        engine = sa.create_engine(pg.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as fresh:
                alone = timed(fresh, bulk)
            with engine.connect() as warmed:
                timed(warmed, "UPDATE cashouts SET amount = amount + 1 WHERE id = 1")
                after = timed(warmed, bulk)
        finally:
            engine.dispose()
        assert after < 4 * alone + 0.5, (after, alone)
        assert consistent(pg)


@IN_EVERY_LAYOUT
def test_a_bulk_update_and_a_bulk_delete(cap: Database) -> None:
    n = 300
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    insert_cashouts(cap, range(1, n + 1), "PENDING")
    with raw_writer(cap) as engine, engine.begin() as conn:
        if cap.backend == "postgres":
            conn.exec_driver_sql("SET LOCAL track_functions = 'pl'")
        done = conn.execute(sa.text("UPDATE cashouts SET status = 'EXECUTING' WHERE id % 3 = 0"))
        assert done.rowcount == n // 3
        if cap.backend == "postgres":
            # One statement, one call of the trigger function: set-based, not per row;
            # and one of its UPDATE OF status trigger (per statement, capture_frozen.py),
            # which returns at once outside UNIFIED_ONLY.
            calls = conn.execute(
                sa.text(
                    "SELECT calls FROM pg_stat_xact_user_functions "
                    "WHERE funcname = 'unistatus_capture_cashout'"
                )
            ).scalar_one()
            assert calls == 2
    assert consistent(cap)
    for lid in (3, 6, n):
        u = unified_of(cap, "CASHOUT", lid)
        assert u is not None and (u["status"], u["version"]) == ("PROCESSING", 2)
        assert len(history_of(cap, "CASHOUT", lid)) == 2
    assert len(history_of(cap, "CASHOUT", 1)) == 1

    raw(cap, "DELETE FROM cashouts WHERE id > :cut", params={"cut": n - 50})
    # Kept: a unified row whose legacy row is gone is a money record (as repair says).
    assert cap.count("unified_transactions") == n
    gone = history_of(cap, "CASHOUT", n)
    assert gone[-1]["to_legacy_status"] is None and gone[-1]["meta"]["flag"] == FLAG_DELETED
    assert gone[-1]["from_status"] == gone[-1]["to_status"] == "PROCESSING"
    report = run_check(cap.engine, cap.settings, store=False)
    assert report.inconsistencies["orphan_unified"] == 50 and report.inconsistent == 50
    (w,) = capture.writers_seen(cap.engine)
    assert (w.writes, w.flagged) == (n + n // 3 + 50, 50)


@PG_IN_EVERY_LAYOUT
def test_a_truncate_is_captured_as_a_delete_of_every_row(pg: Database) -> None:
    """TRUNCATE fires no row or DELETE trigger: captured before it runs, as deleting every
    row would be (history flagged, the writer counted), never a silent orphaning of the
    system's unified rows. Not recorded while LEGACY_ONLY, as a DELETE is not."""
    with captured(pg):
        insert_cashouts(pg, range(1, 4), "PENDING")  # LEGACY_ONLY: unified never had them
        raw(pg, "TRUNCATE cashouts")
        assert capture.writers_seen(pg.engine) == []
        set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
        insert_cashouts(pg, range(1, 11), "PENDING")
        insert_cashouts(pg, range(1, 5), "CREATED", table="escrows")
        raw(pg, "TRUNCATE cashouts, escrows")
        assert pg.count("cashouts") == 0 and pg.count("escrows") == 0
        # Kept, as after a DELETE: a unified row whose legacy row is gone is a money record.
        assert pg.count("unified_transactions") == 14
        for system, lid in (("CASHOUT", 1), ("CASHOUT", 10), ("ESCROW", 4)):
            gone = history_of(pg, system, lid)[-1]
            assert gone["to_legacy_status"] is None and gone["meta"]["flag"] == FLAG_DELETED
            assert gone["reason"] == "bypass truncate"
        report = run_check(pg.engine, pg.settings, store=False)
        assert report.inconsistencies["orphan_unified"] == 14 and report.inconsistent == 14
        seen = {w.system: (w.writes, w.flagged) for w in capture.writers_seen(pg.engine)}
        assert seen == {"CASHOUT": (10 + 10, 10), "ESCROW": (4 + 4, 4)}


@PG_IN_EVERY_LAYOUT
def test_a_truncate_of_unified_is_counted_as_a_direct_write(pg: Database) -> None:
    """Every unified row a TRUNCATE removes is a direct write to unified, counted (and
    flagged) for its writer like a DELETE of each; unistatus's own TRUNCATE is not."""
    with captured(pg):
        set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
        unified = pg.table("unified_transactions")
        insert_cashouts(pg, range(1, 8), "PENDING")
        with pg.engine.begin() as conn:  # unistatus's own (marked): not counted
            ops_for(pg.engine).mark_writer(conn)
            conn.exec_driver_sql(f"TRUNCATE {unified}")
        assert all(w.system != "UNIFIED" for w in capture.writers_seen(pg.engine))
        insert_cashouts(pg, range(8, 15), "PENDING")
        raw(pg, f"TRUNCATE {unified}")
        assert pg.count("unified_transactions") == 0
        seen = [w for w in capture.writers_seen(pg.engine) if w.system == "UNIFIED"]
        assert [(w.writer, w.writes, w.flagged) for w in seen] == [(writer_name(pg), 7, 7)]


def _age_writer_rows(db: Database, hours: float) -> None:
    W = capture_writers
    back = sa.func.now() - sa.text(f"interval '{hours} hours'")
    with db.engine.begin() as conn:
        conn.execute(sa.update(W).values(last_seen_at=back, first_seen_at=back))


def test_old_sessions_writer_counts_are_folded_into_one_row(pg: Database) -> None:
    """A writer's counts are kept per session (backend pid): a cron job that connects
    anew each run adds a row each time. Rows not written for a while are folded into one
    per writer and target (shard 0), the totals unchanged; the monitor does it."""
    W = capture_writers
    with captured(pg):
        set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
        insert_cashouts(pg, range(1, 4), "PENDING")  # one session
        for lid in (1, 2):  # two more sessions, one each (raw() has an engine of its own)
            raw(pg, "UPDATE cashouts SET status = 'EXECUTING' WHERE id = :id", params={"id": lid})
        assert pg.count(W.name) == 3
        before = capture.writers_seen(pg.engine)
        assert capture.fold_writers(pg.engine) == 0  # all recent: nothing to fold
        _age_writer_rows(pg, 2)
        aged = capture.writers_seen(pg.engine)
        assert capture.fold_writers(pg.engine) == 3
        assert pg.count(W.name) == 1
        assert capture.writers_seen(pg.engine) == aged
        assert [(w.writes, w.flagged) for w in aged] == [(w.writes, w.flagged) for w in before]
        # A later session adds its own row; readers sum it with the folded one.
        raw(pg, "UPDATE cashouts SET status = 'EXECUTING' WHERE id = 3")
        (w,) = capture.writers_seen(pg.engine)
        assert w.writes == before[0].writes + 1 and pg.count(W.name) == 2
        # The monitor folds too (at most every FOLD_EVERY seconds).
        _age_writer_rows(pg, 2)
        monitor = alerts.Monitor(pg.engine, pg.settings, notifier=Notifier(), verify_rows=0)
        monitor.evaluate()
        assert pg.count(W.name) == 1
        assert capture.writers_seen(pg.engine)[0].writes == before[0].writes + 1


def test_the_fold_never_waits_for_a_writer_and_counts_each_write_once(pg: Database) -> None:
    """The fold deletes the old rows and adds what it deleted. A row a session's open
    transaction holds is skipped, not waited for (no writer queues behind the fold): it
    is recent once that commits, and nothing is counted twice."""
    with captured(pg):
        set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
        insert_cashouts(pg, range(1, 3), "PENDING")
        with raw_writer(pg) as engine, engine.connect() as conn:
            conn.execute(sa.text("UPDATE cashouts SET status = 'EXECUTING' WHERE id = 1"))
            conn.commit()
            _age_writer_rows(pg, 2)
            total = sum(w.writes for w in capture.writers_seen(pg.engine))
            # The same session writes again, holding its row until it commits.
            conn.execute(sa.text("UPDATE cashouts SET status = 'EXECUTING' WHERE id = 2"))
            with ThreadPoolExecutor(1) as pool:
                folded = pool.submit(capture.fold_writers, pg.engine).result(timeout=10)
            conn.commit()
        assert folded == 1  # the insert's session only: the writer's own row was held
        assert pg.count(capture_writers.name) == 2
        assert sum(w.writes for w in capture.writers_seen(pg.engine)) == total + 1


def test_the_folded_row_keeps_the_newest_mode_and_address_and_the_span(pg: Database) -> None:
    W = capture_writers
    at = "2026-01-01 00:00:00+00"

    def row(shard: int, writes: int, hours: int, mode: str, addr: str | None) -> dict[str, Any]:
        seen = sa.text(f"timestamptz '{at}' + interval '{hours} hours'")
        return {
            "writer": "bypass:cron/x",
            "system": "CASHOUT",
            "shard": shard,
            "writes": writes,
            "flagged": 1,
            "unmappable": 0,
            "first_seen_at": seen,
            "last_seen_at": seen,
            "last_mode": mode,
            "client_addr": addr,
        }

    rows = [
        row(0, 5, 1, "LEGACY_ONLY", "10.0.0.1"),  # folded before, older than the newest
        row(11, 2, 0, "DUAL_WRITE_LEGACY_PRIMARY", "10.0.0.2"),  # the earliest
        row(12, 3, 3, "DUAL_WRITE_UNIFIED_PRIMARY", None),  # the newest: its mode, no address
        row(13, 4, 2, "DUAL_WRITE_LEGACY_PRIMARY", "10.0.0.4"),
    ]
    with pg.engine.begin() as conn:
        for r in rows:
            conn.execute(sa.insert(W).values(**r))
    assert capture.fold_writers(pg.engine) == 3
    (w,) = capture.writers_seen(pg.engine)
    assert (w.writes, w.flagged, w.last_mode, w.client_addr) == (
        14,
        4,
        "DUAL_WRITE_UNIFIED_PRIMARY",
        None,
    )
    assert w.first_seen_at is not None and w.last_seen_at is not None
    assert (w.last_seen_at - w.first_seen_at).total_seconds() == 3 * 3600


def test_a_change_the_rules_refuse_is_applied_and_flagged(cap: Database) -> None:
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="SUCCESS")
    lid = created.legacy_entity_id
    raw(cap, "UPDATE cashouts SET status = 'PENDING' WHERE id = :id", params={"id": lid})
    u = unified_of(cap, "CASHOUT", lid or 0)
    assert u is not None and (u["status"], u["version"]) == ("PENDING", 2)
    last = history_of(cap, "CASHOUT", lid or 0)[-1]
    assert last["override"] is True and last["meta"]["flag"] == FLAG_REFUSED
    (w,) = capture.writers_seen(cap.engine)
    assert (w.writes, w.flagged) == (1, 1)
    assert consistent(cap)


@IN_EVERY_LAYOUT
def test_a_bypass_row_with_an_id_beyond_the_utx_range_is_quarantined(cap: Database) -> None:
    """Its derived id would be the next system's (cashout 10^14 + 1: escrow 1's
    ``UTX200000000000001``): set aside with its reason, the writer unharmed, and the
    quarantine retry does not migrate it either."""
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    big = MAX_LEGACY_ID + 2
    insert_cashouts(cap, range(big, big + 1), "APPROVED")
    assert legacy_status(cap, "cashouts", big) == "APPROVED"  # the writer succeeded
    assert unified_of(cap, "CASHOUT", big) is None
    Q = backfill_quarantine
    with cap.engine.connect() as conn:
        q = conn.execute(sa.select(Q)).mappings().one()
    assert (q["legacy_id"], q["raw_status"], q["reason"]) == (big, "APPROVED", BEYOND_UTX_RANGE)
    raw(cap, "UPDATE cashouts SET status = 'EXECUTING' WHERE id = :id", params={"id": big})
    assert retry_quarantine(cap.engine, cap.settings)["still_unmappable"] == 1
    assert unified_of(cap, "CASHOUT", big) is None and quarantine_count(cap.engine) == 1
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    escrow = a.create_transaction("ESCROW", 1, "5", "USD")  # escrow 1's id is its own
    assert escrow.overall_success and escrow.entity_id == "UTX200000000000001"


@IN_EVERY_LAYOUT
def test_legacy_ids_of_zero_or_below_are_quarantined_not_given_malformed_utx_ids(
    cap: Database,
) -> None:
    """Cashouts 0 and -5 (a legacy table may hold them: SQLite, or an explicit id) were
    given UTX100000000000000 and UTX99999999999995, ids no command can address, and check
    called them consistent (exploratory review). They are outside the UTX range as ids
    beyond it are: set aside with that reason, by the capture and by the backfill."""
    from unistatus.backfill import run_backfill

    insert_cashouts(cap, range(-5, -4), "APPROVED")  # in LEGACY_ONLY: for the backfill
    insert_cashouts(cap, range(0, 1), "APPROVED")
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
    insert_cashouts(cap, range(-7, -6), "APPROVED")  # a bypass writer's, captured
    run_backfill(cap.engine, cap.settings)
    Q = backfill_quarantine
    with cap.engine.connect() as conn:
        set_aside = {r.legacy_id: r.reason for r in conn.execute(sa.select(Q))}
        utx_ids = set(conn.execute(sa.select(unified_transactions.c.id)).scalars())
    assert set_aside == {-7: BEYOND_UTX_RANGE, -5: BEYOND_UTX_RANGE, 0: BEYOND_UTX_RANGE}
    assert utx_ids == set(), utx_ids


@IN_EVERY_LAYOUT
def test_an_unmappable_value_is_quarantined_and_unified_left_alone(cap: Database) -> None:
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="PROCESSING")
    lid = created.legacy_entity_id or 0
    before = unified_of(cap, "CASHOUT", lid)
    raw(cap, "UPDATE cashouts SET status = 'REFUND_REQUESTED' WHERE id = :id", params={"id": lid})
    assert legacy_status(cap, "cashouts", lid) == "REFUND_REQUESTED"  # the writer succeeded
    assert unified_of(cap, "CASHOUT", lid) == before
    assert len(history_of(cap, "CASHOUT", lid)) == 1  # its creation only
    Q = backfill_quarantine
    with cap.engine.connect() as conn:
        q = conn.execute(sa.select(Q)).mappings().one()
    assert (q["system"], q["legacy_id"], q["raw_status"], q["reason"], q["writer"]) == (
        "CASHOUT",
        lid,
        "REFUND_REQUESTED",
        "unknown_status",
        writer_name(cap),
    )
    # What /metrics' unistatus_quarantine_rows and the gate into phase 3 read.
    assert quarantine_count(cap.engine) == 1
    (w,) = capture.writers_seen(cap.engine)
    assert (w.writes, w.unmappable) == (1, 1)
    # Corrected by the writer: migrated, and the quarantine entry is resolved.
    raw(cap, "UPDATE cashouts SET status = 'EXECUTING' WHERE id = :id", params={"id": lid})
    assert quarantine_count(cap.engine) == 0
    assert consistent(cap)


@IN_EVERY_LAYOUT
def test_direct_writes_to_unified_are_counted_and_unistatus_writes_are_not(
    cap: Database,
) -> None:
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    insert_cashouts(cap, range(100, 110), "PENDING")
    # unistatus's own writers: the adapter, repair, the backfill.
    assert a.update_status(created.entity_id, "PROCESSING", "r", "svc").overall_success
    unified = cap.table("unified_transactions")
    raw(cap, f"UPDATE {unified} SET status = 'FAILED' WHERE legacy_id = 100")
    assert capture.foreign_unified_writes(cap.engine) == 1
    run_repair(cap.engine, cap.settings, strategy="legacy_wins", actor="test", reason="test")
    assert unified_of(cap, "CASHOUT", 100)["status"] == "PENDING"  # type: ignore[index]
    assert capture.foreign_unified_writes(cap.engine) == 1
    raw(cap, f"DELETE FROM {unified} WHERE legacy_id >= 105")
    assert capture.foreign_unified_writes(cap.engine) == 6
    seen = [w for w in capture.writers_seen(cap.engine) if w.system == "UNIFIED"]
    assert [(w.writer, w.writes, w.flagged) for w in seen] == [(writer_name(cap), 6, 6)]


# --- the adapter's own writes ---------------------------------------------------------------


@pytest.mark.parametrize("fallback", ["strict", "primary_wins"])
@pytest.mark.parametrize("in_caller", [False, True], ids=["own", "connection"])
@pytest.mark.parametrize("mode", list(M), ids=lambda m: m.value)
def test_the_adapters_writes_are_applied_once(
    cap: Database, mode: M, in_caller: bool, fallback: str
) -> None:
    """Exactly one history row and version + 1 per change, in every mode, with and
    without ``connection=``, on the one-statement paths and the locked one
    (``primary_wins`` writes each side apart); no writer counted."""
    a = adapter_in(cap, mode, fallback=fallback)
    steps = ["OTP_PENDING", "ADMIN_PENDING", "PROCESSING", "SUCCESS"]

    def run(conn: Any) -> Any:
        created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", connection=conn)
        assert created.overall_success, created.error
        for step in steps:
            r = a.update_status(created.entity_id, step, "r", "svc", connection=conn)
            assert r.overall_success and r.changed, r.error
        return created

    if in_caller:
        with cap.engine.connect() as conn, conn.begin():
            created = run(conn)
    else:
        created = run(None)
    U = unified_transactions
    with cap.engine.connect() as conn:
        u = conn.execute(sa.select(U).where(U.c.id == created.entity_id)).mappings().first()
        history = conn.execute(
            sa.text("SELECT count(*) FROM unified_status_history WHERE transaction_id = :id"),
            {"id": created.entity_id},
        ).scalar_one()
    if mode.writes_unified:
        assert u is not None and u["version"] == 1 + len(steps)
        assert history == 1 + len(steps)
    else:
        assert u is None and history == 0
    assert capture.writers_seen(cap.engine) == []
    if mode.writes_legacy and mode.writes_unified:
        assert consistent(cap)


def test_the_callers_own_sql_after_the_adapter_is_captured(cap: Database) -> None:
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    lid = created.legacy_entity_id
    with cap.engine.connect() as conn, conn.begin():
        r = a.update_status(created.entity_id, "PROCESSING", "r", "svc", connection=conn)
        assert r.overall_success
        conn.execute(sa.text("UPDATE cashouts SET status = 'FAILED' WHERE id = :id"), {"id": lid})
    u = unified_of(cap, "CASHOUT", lid or 0)
    assert u is not None and (u["status"], u["version"]) == ("FAILED", 3)
    assert [h["to_status"] for h in history_of(cap, "CASHOUT", lid or 0)] == [
        "PENDING",
        "PROCESSING",
        "FAILED",
    ]
    assert [w.system for w in capture.writers_seen(cap.engine)] == ["CASHOUT"]


# --- LEGACY_ONLY, UNIFIED_ONLY ----------------------------------------------------------------


@IN_EVERY_LAYOUT
def test_changes_while_legacy_only_are_brought_in_step_on_entering_dual_write(
    cap: Database,
) -> None:
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    ids = []
    for _ in range(4):
        created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        ids.append(created.legacy_entity_id or 0)
    set_mode(cap.engine, M.LEGACY_ONLY, reason="test: rollback", actor="test")
    # Raw SQL, and the adapter too: unified is not maintained now.
    raw(cap, f"UPDATE cashouts SET status = 'EXECUTING' WHERE id IN ({ids[0]}, {ids[1]})")
    raw(cap, f"UPDATE cashouts SET amount = 6 WHERE id = {ids[2]}")
    legacy_only = adapter_in(cap, M.LEGACY_ONLY)
    assert legacy_only.update_status(f"cashout:{ids[3]}", "CANCELLED", "r", "svc").changed
    insert_cashouts(cap, range(900, 902))  # new rows: no unified row to go stale
    with cap.engine.connect() as conn:
        logged = conn.execute(sa.select(capture_changed.c.legacy_id)).scalars().all()
    assert sorted(logged) == sorted(ids)
    assert not run_check(cap.engine, cap.settings, store=False).is_consistent
    assert capture.writers_seen(cap.engine) == []  # LEGACY_ONLY only logs (cheap)

    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test: back", actor="test")
    assert cap.count("unistatus_capture_changed") == 0
    expected = {ids[0]: "PROCESSING", ids[1]: "PROCESSING", ids[2]: "PENDING", ids[3]: "CANCELLED"}
    for lid, status in expected.items():
        u = unified_of(cap, "CASHOUT", lid)
        assert u is not None and u["status"] == status and u["version"] == 2
        last = history_of(cap, "CASHOUT", lid)[-1]
        assert last["triggered_by"] == "capture:catch_up"
        assert last["mode"] == M.DUAL_WRITE_LEGACY_PRIMARY.value
    assert float(unified_of(cap, "CASHOUT", ids[2])["amount"]) == 6.0  # type: ignore[index]
    report = run_check(cap.engine, cap.settings, store=False)
    # Verified: only the two rows inserted while LEGACY_ONLY lack a unified row (the
    # backfill's job, as without capture).
    assert report.inconsistencies["missing_unified"] == 2 and report.inconsistent == 2


@IN_EVERY_LAYOUT
def test_a_bypass_write_in_unified_only_is_mirrored_and_kept_by_the_replay(
    cap: Database,
) -> None:
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", status="PROCESSING")
    lid = created.legacy_entity_id or 0
    frozen = adapter_in(cap, M.UNIFIED_ONLY)
    assert frozen.update_status(created.entity_id, "AWAITING_RESPONSE", "r", "svc").changed
    raw(cap, "UPDATE cashouts SET status = 'FAILED' WHERE id = :id", params={"id": lid})
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None and (u["status"], u["legacy_status"], u["version"]) == (
        "FAILED",
        "FAILED",
        3,
    )
    last = history_of(cap, "CASHOUT", lid)[-1]
    assert last["meta"]["flag"] == FLAG_FROZEN and last["mode"] == M.UNIFIED_ONLY.value
    P = pending_legacy_changes
    with cap.engine.connect() as conn:
        pending = conn.execute(sa.select(P).order_by(P.c.id)).mappings().all()
    # The adapter's change is superseded (legacy holds a newer value); the bypass change
    # is recorded as already in legacy.
    assert [(p["legacy_status"], p["replayed_at"] is not None) for p in pending] == [
        ("AWAITING_RESPONSE", True),
        ("FAILED", True),
    ]
    (w,) = capture.writers_seen(cap.engine)
    assert (w.system, w.writes, w.flagged, w.last_mode) == ("CASHOUT", 1, 1, "UNIFIED_ONLY")
    # Back to legacy primary: the replay does not overwrite the bypass value.
    from unistatus.migration.replay import replay_pending

    replay_pending(cap.engine, cap.settings, actor="test", reason="test")
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test: back", actor="test")
    assert legacy_status(cap, "cashouts", lid) == "FAILED"
    assert consistent(cap)


@pytest.mark.parametrize("mode", [M.UNIFIED_ONLY, M.DUAL_WRITE_UNIFIED_PRIMARY])
def test_an_update_that_changes_nothing_unistatus_keeps_writes_nothing(
    db: Database, mode: M
) -> None:
    """Legacy behind unified (UNIFIED_ONLY: frozen, the change awaiting its replay;
    DUAL_WRITE_UNIFIED_PRIMARY: its legacy side failed): an UPDATE of the application's
    own column, or one setting the kept columns to what they hold, in the adapter's
    transaction or later, leaves the committed change (and its replay) alone. In a bulk
    UPDATE the row whose status changed is still mirrored."""
    P = pending_legacy_changes
    with legacy_columns(db, {"note": "TEXT"}), captured(db):
        a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
        kept, changed = (a.create_transaction("WALLET_CASHOUT", 1, "5", "USD") for _ in "ab")
        lid, other = kept.legacy_entity_id or 0, changed.legacy_entity_id or 0
        a = adapter_in(db, mode)
        with db.engine.connect() as conn, conn.begin():  # the application's transaction
            for c in (kept, changed):
                r = a.update_status(c.entity_id, "PROCESSING", "r", "svc", connection=conn)
                assert r.changed
            conn.execute(sa.text("UPDATE cashouts SET note = 'a' WHERE id = :id"), {"id": lid})
        if mode is not M.UNIFIED_ONLY:
            # Legacy behind, as a primary_wins write whose legacy side failed leaves it
            # (unistatus's own write: marked, not captured).
            with ops_for(db.engine).write_transaction() as conn:
                conn.execute(sa.text("UPDATE cashouts SET status = 'PENDING'"))
        before = unified_of(db, "CASHOUT", lid)
        assert before is not None and (before["status"], before["version"]) == ("PROCESSING", 2)
        raw(db, "UPDATE cashouts SET note = 'b' WHERE id = :id", params={"id": lid})
        raw(
            db,
            "UPDATE cashouts SET note = 'c', status = status, amount = amount, "
            "updated_at = '2026-02-01 00:00:00' WHERE id = :id",
            params={"id": lid},
        )
        assert unified_of(db, "CASHOUT", lid) == before
        assert [h["to_status"] for h in history_of(db, "CASHOUT", lid)] == [
            "PENDING",
            "PROCESSING",
        ]
        with db.engine.connect() as conn:
            pending = conn.execute(
                sa.select(P.c.legacy_status, P.c.replayed_at.is_not(None)).where(
                    P.c.transaction_id == kept.entity_id
                )
            ).all()
        if mode is M.UNIFIED_ONLY:
            assert [tuple(p) for p in pending] == [("EXECUTING", False)]  # its legacy value
        # Legacy frozen: the statement naming the status column (``status = status``) is
        # a writer of the frozen table, counted (capture_frozen.py); nothing else of it.
        frozen = mode is M.UNIFIED_ONLY
        seen = [(w.writes, w.flagged, w.last_mode) for w in capture.writers_seen(db.engine)]
        assert seen == ([(1, 1, mode.value)] if frozen else [])
        assert a.get_transaction_status(kept.entity_id)[0] == "PROCESSING"
        # One statement, two rows: the one whose status changed is mirrored, not the other.
        raw(
            db,
            "UPDATE cashouts SET note = 'd', "
            "status = CASE WHEN id = :other THEN 'FAILED' ELSE status END "
            "WHERE id IN (:id, :other)",
            params={"id": lid, "other": other},
        )
        assert unified_of(db, "CASHOUT", lid) == before
        mirrored = unified_of(db, "CASHOUT", other)
        assert mirrored is not None
        assert (mirrored["status"], mirrored["legacy_status"]) == ("FAILED", "FAILED")
        (w,) = capture.writers_seen(db.engine)
        # Frozen: 1 more for the row the statement left as it was, on SQLite (a row
        # trigger); none on PostgreSQL (a statement trigger, the statement counted).
        unchanged_row = 1 if frozen and db.backend == "sqlite" else 0
        assert (w.writes, w.last_mode) == (1 + frozen + unchanged_row, mode.value)


@pytest.mark.parametrize("mode", [M.UNIFIED_ONLY, M.DUAL_WRITE_UNIFIED_PRIMARY])
def test_a_bypass_update_takes_only_the_columns_it_changed(cap: Database, mode: M) -> None:
    """Legacy behind unified (UNIFIED_ONLY: frozen, the change awaiting its replay;
    DUAL_WRITE_UNIFIED_PRIMARY: its legacy side failed): an UPDATE of a shared field
    mirrors that field, and leaves unified's status (and the replay of its change) as
    they are. In one statement, a row whose status changed takes the new status (as
    before), a row whose amount changed takes the amount only."""
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    kept, changed = (a.create_transaction("WALLET_CASHOUT", 1, "5", "USD") for _ in "ab")
    lid, other = kept.legacy_entity_id or 0, changed.legacy_entity_id or 0
    a = adapter_in(cap, mode)
    for c in (kept, changed):
        assert a.update_status(c.entity_id, "PROCESSING", "r", "svc").changed
    if mode is not M.UNIFIED_ONLY:
        # Legacy behind, as a primary_wins write whose legacy side failed leaves it
        # (unistatus's own write: marked, not captured).
        with ops_for(cap.engine).write_transaction() as conn:
            conn.execute(sa.text("UPDATE cashouts SET status = 'PENDING'"))
    before = unified_of(cap, "CASHOUT", lid)
    assert before is not None and (before["status"], before["version"]) == ("PROCESSING", 2)
    flag = FLAG_FROZEN if mode is M.UNIFIED_ONLY else None

    raw(cap, "UPDATE cashouts SET amount = 6 WHERE id = :id", params={"id": lid})
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None
    assert (u["status"], u["legacy_status"], float(u["amount"]), u["version"]) == (
        "PROCESSING",
        before["legacy_status"],
        6.0,
        3,
    )
    last = history_of(cap, "CASHOUT", lid)[-1]
    assert (last["from_status"], last["to_status"]) == ("PROCESSING", "PROCESSING")
    assert last["triggered_by"] == writer_name(cap) and last["meta"]["flag"] == flag
    if mode is M.UNIFIED_ONLY:
        assert pending_of(cap, kept.entity_id) == [("EXECUTING", False)]  # still to replay
    assert a.get_transaction_status(kept.entity_id)[0] == "PROCESSING"

    # One statement: the status of one row, the amount of the other.
    raw(
        cap,
        "UPDATE cashouts SET status = CASE WHEN id = :other THEN 'FAILED' ELSE status END, "
        "amount = CASE WHEN id = :id THEN 7 ELSE amount END WHERE id IN (:id, :other)",
        params={"id": lid, "other": other},
    )
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None
    assert (u["status"], u["legacy_status"], float(u["amount"]), u["version"]) == (
        "PROCESSING",
        before["legacy_status"],
        7.0,
        4,
    )
    mirrored = unified_of(cap, "CASHOUT", other)
    assert mirrored is not None
    assert (mirrored["status"], mirrored["legacy_status"], float(mirrored["amount"])) == (
        "FAILED",
        "FAILED",
        5.0,
    )
    assert history_of(cap, "CASHOUT", other)[-1]["meta"]["flag"] == flag
    (w,) = capture.writers_seen(cap.engine)
    assert (w.writes, w.last_mode) == (3, mode.value)
    if mode is M.UNIFIED_ONLY:
        assert w.flagged == 3
        assert pending_of(cap, kept.entity_id) == [("EXECUTING", False)]
        # The bypass status change supersedes the other row's change, as before.
        assert pending_of(cap, changed.entity_id) == [("EXECUTING", True), ("FAILED", True)]
        # Back to legacy primary: the replay brings the kept status change to legacy,
        # which keeps the bypass amount; nothing is lost.
        from unistatus.migration.replay import replay_pending

        replay_pending(cap.engine, cap.settings, actor="test", reason="test")
        set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test: back", actor="test")
        assert legacy_status(cap, "cashouts", lid) == "EXECUTING"
        assert legacy_status(cap, "cashouts", other) == "FAILED"
        assert consistent(cap)


def test_legacy_primary_a_bypass_update_leaves_a_lagging_unified_status_to_repair(
    cap: Database,
) -> None:
    """DUAL_WRITE_LEGACY_PRIMARY, the unified row behind (its side of a dual write
    failed): a bypass UPDATE of the amount mirrors the amount, not the status it did not
    write; check still reports the lag and repair corrects it (docs/capture.md)."""
    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    lid = created.legacy_entity_id or 0
    assert a.update_status(created.entity_id, "PROCESSING", "r", "svc").changed
    unified = cap.table("unified_transactions")
    with ops_for(cap.engine).write_transaction() as conn:  # marked: not a bypass write
        conn.execute(
            sa.text(
                f"UPDATE {unified} SET status = 'PENDING', legacy_status = 'PENDING' "
                "WHERE legacy_system = 'CASHOUT' AND legacy_id = :id"
            ),
            {"id": lid},
        )
    raw(cap, "UPDATE cashouts SET amount = 6 WHERE id = :id", params={"id": lid})
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None
    assert (u["status"], u["legacy_status"], float(u["amount"]), u["version"]) == (
        "PENDING",
        "PENDING",
        6.0,
        3,
    )
    assert not consistent(cap)
    run_repair(cap.engine, cap.settings, strategy="legacy_wins", actor="test", reason="test")
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None and (u["status"], u["legacy_status"]) == ("PROCESSING", "EXECUTING")
    assert consistent(cap)


# --- retirement ----------------------------------------------------------------------------


def test_the_triggers_leave_with_the_status_columns_and_come_back_with_them(
    cap: Database, tmp_path: Any
) -> None:
    from unistatus.migration.archive import export_archive, record_verified, verify_archive
    from unistatus.migration.retire import retire_legacy_columns, undo_cleanup

    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    created = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    lid = created.legacy_entity_id or 0
    set_mode(cap.engine, M.UNIFIED_ONLY, reason="test: phase 4", actor="test")
    export_archive(cap.engine, cap.settings, tmp_path / "archive")
    record_verified(cap.engine, verify_archive(cap.engine, tmp_path / "archive"), actor="t")
    full = capture.status(cap.engine, cap.settings)
    assert full.ok and len(full.installed) > 3

    retire_legacy_columns(cap.engine, cap.settings, actor="test", reason="test")
    try:
        retired = capture.status(cap.engine, cap.settings)
        # Only the detector of direct writes to unified stays; the rest read the columns.
        assert retired.ok and retired.enabled
        assert {t.table for t in retired.installed} == {"unified_transactions"}
        assert retired.suspended == ["cashouts", "escrows", "exchanges"]
        raw(cap, "UPDATE cashouts SET amount = 6 WHERE id = :id", params={"id": lid})
        raw(
            cap,
            "UPDATE unified_transactions SET amount = 6 WHERE legacy_id = :id",
            params={"id": lid},
        )
        assert capture.foreign_unified_writes(cap.engine) == 1
    finally:
        undo_cleanup(cap.engine, cap.settings, actor="test", reason="test")
    back = capture.status(cap.engine, cap.settings)
    assert back.ok and sorted(back.installed, key=str) == sorted(full.installed, key=str)
    set_mode(cap.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test: back", actor="test")
    raw(cap, "UPDATE cashouts SET status = 'EXECUTING' WHERE id = :id", params={"id": lid})
    u = unified_of(cap, "CASHOUT", lid)
    assert u is not None and (u["status"], u["legacy_status"]) == ("PROCESSING", "EXECUTING")


@pytest.mark.postgres
def test_a_writer_with_rights_on_the_legacy_table_only_is_captured(pg: Database) -> None:
    """The triggers run with their owner's rights: the cron job's role needs no grant on
    unistatus's tables, and is named by its login role."""
    role = "unistatus_test_cron"
    admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON cashouts TO {role}")
    url = sa.engine.make_url(pg.url).set(username=role)
    cron = sa.create_engine(url, connect_args={"application_name": "nightly"})
    try:
        with captured(pg):
            set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
            with cron.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
                    "updated_at) VALUES (5, 7, 1, 'USD', 'PENDING', now(), now())"
                )
                conn.exec_driver_sql("UPDATE cashouts SET status = 'EXECUTING' WHERE id = 5")
            with cron.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="denied"):
                conn.exec_driver_sql("SELECT 1 FROM unified_transactions")
            u = unified_of(pg, "CASHOUT", 5)
            assert u is not None and (u["status"], u["version"]) == ("PROCESSING", 2)
            names = {h["triggered_by"] for h in history_of(pg, "CASHOUT", 5)}
            assert names == {f"bypass:nightly/{role}"}
    finally:
        cron.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"REVOKE ALL ON cashouts FROM {role}")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


# --- one installation of several in a database ------------------------------------------------


@PG_IN_EVERY_LAYOUT
def test_a_bypass_writer_holds_this_installations_mode_lock(pg: Database) -> None:
    """The trigger takes the mode lock of the installation it belongs to (each schema
    has its own key), then its table's system's, so this installation's mode switch
    (of every system, or of cashouts) waits for the writer."""
    from unistatus.db.dialect import ops_for
    from unistatus.domain.statuses import LegacySystemType

    keys = ops_for(pg.engine).mode_lock_keys(LegacySystemType.CASHOUT)
    with captured(pg):
        set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test")
        insert_cashouts(pg, range(1, 2))
        with raw_writer(pg) as engine, engine.begin() as conn:
            conn.exec_driver_sql("UPDATE cashouts SET status = 'EXECUTING' WHERE id = 1")
            held = conn.execute(
                sa.text(
                    "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objsubid = 1 AND pid = pg_backend_pid()"
                )
            ).scalars()
            assert sorted(held) == sorted(keys) and len(keys) == 2


def executed_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The nodes of an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan that ran."""
    if node.get("Actual Loops", 0) > 0:
        yield node
    for child in node.get("Plans", []):
        yield from executed_nodes(child)


def test_a_one_row_pre_check_probes_and_never_reads_the_whole_system(pg: Database) -> None:
    """The read before the quarantine-and-create statement (``needs_preparing``), for a
    one-row statement, is one index probe per table. Unfenced, on a unified table not
    yet analyzed, the planner read every unified row of the system into a hash to probe
    the one row (a plan kept for the session). A table of the test's own, with one row
    and analyzed as a transition table's count is known, stands in for the transition
    table."""
    from unistatus.db.dialect import ops_for
    from unistatus.db.legacy import LEGACY_COLUMNS, resolve_legacy_tables
    from unistatus.domain.statuses import LegacySystemType
    from unistatus.migration.capture_ddl import CaptureDdl
    from unistatus.migration.capture_sql import Rows, SystemSql

    insert_cashouts(pg, range(1, 4))  # unified rows by the backfill's rule: none yet
    lt = resolve_legacy_tables(pg.engine, pg.settings)[LegacySystemType.CASHOUT]
    columns = [lt.column(name) for name in LEGACY_COLUMNS]
    written = sa.table("capture_written", *(sa.column(c.name, c.type) for c in columns))
    rows = Rows.of(
        {name: written.c[c.name] for name, c in zip(LEGACY_COLUMNS, columns, strict=True)},
        written,
    )
    ddl = CaptureDdl(ops_for(pg.engine), pg.engine.dialect)
    ddl.schema = "public"
    check = ddl.render(sa.select(SystemSql(lt, ops_for(pg.engine)).needs_preparing(rows)))
    table = pg.engine.dialect.identifier_preparer.format_table(lt.table)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE capture_written AS SELECT * FROM {table} WHERE id = 2"
        )
        conn.exec_driver_sql("ANALYZE capture_written")
        explain = "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY OFF, FORMAT JSON) "
        plan = conn.exec_driver_sql(explain + check).scalar_one()[0]["Plan"]
        needed = conn.exec_driver_sql(check).scalar_one()
    assert needed  # no unified row: the quarantine-and-create statement runs
    ran = list(executed_nodes(plan))
    assert not [n for n in ran if "hashed" in n.get("Filter", "")], plan
    unified = "unified_transactions"
    probes = [n.get("Index Cond", "") for n in ran if n.get("Relation Name") == unified]
    assert probes and all("(legacy_id = capture_written" in p for p in probes), plan


DECOY = "unistatus_capture_decoy"


@PG_IN_EVERY_LAYOUT
def test_enable_disable_and_the_downgrade_leave_other_objects_alone(pg: Database) -> None:
    """Objects under the capture's prefix that are not this installation's (another
    installation's, in another schema; here a decoy in public) are neither listed,
    nor dropped by ``disable`` or revision 0011's downgrade."""
    from unistatus.db import schema

    with pg.app_engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE FUNCTION public.{DECOY}() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RETURN NULL; END $$"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER {DECOY} AFTER UPDATE ON public.escrows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION public.{DECOY}()"
        )

    def decoys() -> tuple[int, int]:
        with pg.app_engine.connect() as conn:
            return (
                conn.execute(
                    sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = :n"), {"n": DECOY}
                ).scalar_one(),
                conn.execute(
                    sa.text("SELECT count(*) FROM pg_proc WHERE proname = :n"), {"n": DECOY}
                ).scalar_one(),
            )

    try:
        with pg.engine.connect() as conn:
            assert capture.installed(conn) == ([], [])
        enabled = capture.enable(pg.engine, pg.settings, actor="test", reason="on")
        assert enabled.ok and DECOY not in {t.name for t in enabled.installed}
        capture.disable(pg.engine, pg.settings, actor="test", reason="off")
        assert decoys() == (1, 1)
        capture.enable(pg.engine, pg.settings, actor="test", reason="on")
        schema.downgrade(pg.engine, pg.settings, "0010")
        try:
            assert decoys() == (1, 1)
            with pg.engine.connect() as conn:
                assert capture.installed(conn) == ([], [])
        finally:
            schema.upgrade(pg.engine, pg.settings)
    finally:
        capture.disable(pg.engine, pg.settings, actor="test", reason="off")
        with pg.app_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {DECOY} ON public.escrows")
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS public.{DECOY}()")


# --- one system at a time (issue 14) -----------------------------------------------------------


@IN_EVERY_LAYOUT
def test_each_tables_trigger_follows_its_own_systems_mode(cap: Database) -> None:
    """Cashouts back in LEGACY_ONLY, exchanges still dual-written: a bypass write to an
    exchange is brought in step at once, one to a cashout is only logged, and caught up
    when cashouts (and only they) leave LEGACY_ONLY."""
    from unistatus.domain.statuses import LegacySystemType

    a = adapter_in(cap, M.DUAL_WRITE_LEGACY_PRIMARY)
    cashout = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").legacy_entity_id
    exchange = a.create_transaction("EXCHANGE", 1, "5", "USD").legacy_entity_id
    set_mode(cap.engine, M.LEGACY_ONLY, system=LegacySystemType.CASHOUT, reason="t", actor="test")
    raw(cap, f"UPDATE cashouts SET status = 'EXECUTING' WHERE id = {cashout}")
    raw(cap, f"UPDATE exchanges SET status = 'AWAITING_DEPOSIT' WHERE id = {exchange}")
    in_step = unified_of(cap, "EXCHANGE", exchange or 0)
    assert in_step is not None and in_step["legacy_status"] == "AWAITING_DEPOSIT"
    assert in_step["version"] == 2
    stale = unified_of(cap, "CASHOUT", cashout or 0)
    assert stale is not None and stale["status"] == "PENDING" and stale["version"] == 1
    with cap.engine.connect() as conn:
        logged = conn.execute(sa.select(capture_changed.c.system, capture_changed.c.legacy_id))
        assert [tuple(r) for r in logged] == [("CASHOUT", cashout)]

    set_mode(
        cap.engine,
        M.DUAL_WRITE_LEGACY_PRIMARY,
        system=LegacySystemType.CASHOUT,
        reason="t",
        actor="test",
    )
    assert cap.count("unistatus_capture_changed") == 0
    caught = unified_of(cap, "CASHOUT", cashout or 0)
    assert caught is not None and caught["status"] == "PROCESSING" and caught["version"] == 2
    assert history_of(cap, "CASHOUT", cashout or 0)[-1]["triggered_by"] == "capture:catch_up"
    assert unified_of(cap, "EXCHANGE", exchange or 0) == in_step  # not caught up again
    assert consistent(cap)


def test_the_legacy_tables_are_locked_only_while_the_ddl_runs(pg: Database) -> None:
    """``enable`` generates its DDL (the catalog read, the functions rendered: half a
    second) before it takes the legacy tables' locks, which block every legacy write
    (and idle the session past an ``idle_in_transaction_session_timeout``): from the
    first statement that locks a legacy table (LOCK TABLE, DROP TRIGGER) to the last
    DDL statement, only DDL and one check that the tables are as generated for."""
    ran: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        ran.append(" ".join(statement.split()))

    sa.event.listen(pg.engine, "before_cursor_execute", record)
    try:
        for _ in range(2):  # the second replaces what the first installed
            ran.clear()
            capture.enable(pg.engine, pg.settings)
            locking = [n for n, s in enumerate(ran) if s.startswith(("LOCK TABLE", "DROP TRIGGER"))]
            ddl = [n for n, s in enumerate(ran) if s.startswith(("CREATE ", "DROP ", "LOCK "))]
            window = ran[locking[0] : ddl[-1] + 1]
            others = [
                s for s in window if not s.startswith(("CREATE ", "DROP ", "LOCK ", "COMMENT "))
            ]
            assert len(others) <= 1 and all(capture.SHAPES_CHECK in s for s in others), others
    finally:
        sa.event.remove(pg.engine, "before_cursor_execute", record)
        capture.disable(pg.engine, pg.settings)


def test_two_enables_at_once_both_succeed(pg: Database) -> None:
    """A pipeline that retries ``capture enable`` (or two operators) may run two at once.
    Each lists what is installed before it locks the legacy tables; the second, having
    listed nothing, created triggers the first had committed meanwhile ("trigger ...
    already exists"). Staged: the other enable commits between this one's listing and
    its locks."""
    other = threading.Thread(target=capture.enable, args=(pg.engine, pg.settings))

    def the_other_commits_first(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("LOCK TABLE") and not other.ident:
            other.start()
            other.join(timeout=30)

    sa.event.listen(pg.engine, "before_cursor_execute", the_other_commits_first)
    try:
        status = capture.enable(pg.engine, pg.settings)
        assert other.ident and not other.is_alive()
        assert status.ok, status
    finally:
        sa.event.remove(pg.engine, "before_cursor_execute", the_other_commits_first)
        capture.disable(pg.engine, pg.settings)
