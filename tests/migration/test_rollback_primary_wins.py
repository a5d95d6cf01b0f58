"""Leaving DUAL_WRITE_UNIFIED_PRIMARY keeps what ``primary_wins`` acknowledged.

In DUAL_WRITE_UNIFIED_PRIMARY under ``primary_wins`` a legacy write the database refuses
(a trigger of the application's, here refusing once) is acknowledged on the unified side
and queued in ``unistatus_repair_queue``. A rollback to legacy must carry it to legacy
(an UPDATE, or the INSERT of a create), and a hand ``mode set`` must not skip that, even
after a rollback that stopped half-way (legacy primary then takes legacy as it is). The
unified row without a legacy row is counted by ``check`` (``missing_legacy``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import adapter_in
from support.phases import to_phase
from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.db.control import get_mode, set_mode
from unistatus.errors import InvalidTransitionError, ModeError
from unistatus.migration.check import run_check
from unistatus.migration.rollback import emergency_rollback, rollback_current_phase

M = DualWriteMode
pytestmark = pytest.mark.postgres


@contextmanager
def legacy_refuses(db: Database, event: str, legacy_id: int | None = None) -> Iterator[None]:
    """``cashouts`` refuses an ``event`` (UPDATE: of ``legacy_id``; INSERT: any) until the
    block ends: the application's own trigger, as in an incident."""
    guard = f"NEW.id = {legacy_id}" if legacy_id is not None else "true"
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION t_refuse_legacy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF {guard} THEN RAISE EXCEPTION 't_refuse_legacy: locked by the ledger'; "
            "END IF; RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER t_refuse_legacy BEFORE {event} ON cashouts "
            "FOR EACH ROW EXECUTE FUNCTION t_refuse_legacy()"
        )
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS t_refuse_legacy ON cashouts")
            conn.exec_driver_sql("DROP FUNCTION IF EXISTS t_refuse_legacy()")


def one(db: Database, sql: str, **params: Any) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).one()


def all_rows(db: Database, sql: str, **params: Any) -> list[Any]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).all())


def acknowledged_success(db: Database) -> tuple[DualWriteAdapter, str, int]:
    """A cashout PROCESSING -> SUCCESS acknowledged while legacy refused its UPDATE:
    unified SUCCESS, legacy still PROCESSING's value, one open repair-queue row."""
    to_phase(db.engine, 3)
    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
    r = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD")
    assert a.update_status(r.entity_id, "PROCESSING", "go", "app").overall_success
    lid = r.legacy_entity_id
    with legacy_refuses(db, "UPDATE", lid):
        res = a.update_status(r.entity_id, "SUCCESS", "paid", "app")
    assert res.overall_success and not res.secondary_success
    u = one(
        db, "SELECT status, legacy_status FROM unified_transactions WHERE id = :e", e=r.entity_id
    )
    legacy = one(db, "SELECT status FROM cashouts WHERE id = :i", i=lid).status
    assert u.status == "SUCCESS" and legacy != u.legacy_status
    assert len(all_rows(db, "SELECT id FROM unistatus_repair_queue")) == 1
    return a, r.entity_id, lid


def assert_success_kept(db: Database, a: DualWriteAdapter, utx: str, lid: int) -> None:
    """Legacy holds SUCCESS's value, the queue row is closed, and FAILED is refused."""
    u = one(db, "SELECT status, legacy_status FROM unified_transactions WHERE id = :e", e=utx)
    assert u.status == "SUCCESS"
    assert one(db, "SELECT status FROM cashouts WHERE id = :i", i=lid).status == u.legacy_status
    assert all_rows(db, "SELECT id FROM unistatus_repair_queue WHERE resolved_at IS NULL") == []
    a.modes.refresh()
    with pytest.raises(InvalidTransitionError):
        a.update_status(utx, "FAILED", "reconciliation says failed", "app")
    assert one(db, "SELECT status FROM unified_transactions WHERE id = :e", e=utx).status == (
        "SUCCESS"
    )


def test_emergency_rollback_carries_a_refused_legacy_update_to_legacy(pg: Database) -> None:
    a, utx, lid = acknowledged_success(pg)
    out = emergency_rollback(pg.engine, pg.settings, actor="oncall", reason="unified incident")
    assert (out["replay"]["replayed"], out["conflicts"]) == (1, 0)
    assert_success_kept(pg, a, utx, lid)


def test_phase_rollback_carries_a_refused_legacy_update_to_legacy(pg: Database) -> None:
    a, utx, lid = acknowledged_success(pg)
    change = rollback_current_phase(pg.engine, pg.settings, actor="oncall", reason="p95")
    assert change.details["replay"]["replayed"] == 1
    assert get_mode(pg.engine) is M.DUAL_WRITE_LEGACY_PRIMARY
    assert_success_kept(pg, a, utx, lid)


def test_a_rollback_keeps_a_conflict_when_legacy_moved_meanwhile(pg: Database) -> None:
    a, utx, lid = acknowledged_success(pg)
    with pg.engine.begin() as conn:  # the application wrote legacy behind the adapter
        conn.exec_driver_sql(f"UPDATE cashouts SET status = 'FAILED' WHERE id = {lid}")
    out = emergency_rollback(pg.engine, pg.settings, actor="oncall", reason="unified incident")
    assert out["conflicts"] == 1
    assert one(pg, "SELECT status FROM cashouts WHERE id = :i", i=lid).status == "FAILED"
    assert all_rows(pg, "SELECT id FROM unistatus_repair_queue WHERE resolved_at IS NULL") == []


def test_mode_set_to_legacy_primary_is_refused_while_legacy_repairs_are_open(
    pg: Database,
) -> None:
    acknowledged_success(pg)
    with pytest.raises(ModeError, match="rollback"):
        set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="back", actor="oncall")
    assert get_mode(pg.engine) is M.DUAL_WRITE_UNIFIED_PRIMARY


def test_legacy_primary_takes_legacy_as_it_is_even_under_a_final_unified_status(
    pg: Database,
) -> None:
    """While legacy is primary it is the authority: a legacy application that reopened a
    SUCCESS behind the adapter (no capture) may then fail it, as it could before
    unistatus. A final unified status does not overrule legacy in this mode."""
    a = adapter_in(pg, M.DUAL_WRITE_LEGACY_PRIMARY)
    r = a.create_transaction("WALLET_CASHOUT", 1, "10", "USD")
    assert a.update_status(r.entity_id, "PROCESSING", "go", "app").overall_success
    assert a.update_status(r.entity_id, "SUCCESS", "paid", "app").overall_success
    with pg.engine.begin() as conn:  # the legacy application, behind the adapter
        conn.exec_driver_sql(
            f"UPDATE cashouts SET status = 'EXECUTING' WHERE id = {r.legacy_entity_id}"
        )
    assert a.update_status(r.entity_id, "FAILED", "bank says failed", "app").overall_success
    assert one(pg, "SELECT status FROM unified_transactions WHERE id = :e", e=r.entity_id)[0] == (
        "FAILED"
    )


def test_mode_set_is_refused_while_a_carried_write_awaits_its_replay(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback stopped between two rounds (Ctrl-C while a busy legacy row held its
    replay) has carried the refused write into a pending change and closed its queue
    row: a hand ``mode set`` to legacy primary must still refuse, or legacy never gets
    the acknowledged SUCCESS; running the rollback again replays it."""
    from unistatus.migration import replay as replay_module

    a, utx, lid = acknowledged_success(pg)
    holder = pg.engine.connect()
    held = holder.begin()
    holder.exec_driver_sql(f"SELECT id FROM cashouts WHERE id = {lid} FOR UPDATE")

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(replay_module.time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        emergency_rollback(pg.engine, pg.settings, actor="oncall", reason="unified incident")
    held.rollback()
    holder.close()
    monkeypatch.undo()
    assert get_mode(pg.engine) is M.DUAL_WRITE_UNIFIED_PRIMARY
    assert all_rows(pg, "SELECT id FROM unistatus_repair_queue WHERE resolved_at IS NULL") == []
    with pytest.raises(ModeError, match="rollback"):
        set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="back", actor="oncall")
    out = emergency_rollback(pg.engine, pg.settings, actor="oncall", reason="again")
    assert (out["replay"]["replayed"], out["conflicts"]) == (1, 0)
    assert_success_kept(pg, a, utx, lid)


def refused_create(db: Database) -> tuple[DualWriteAdapter, str]:
    """A create acknowledged while legacy refused its INSERT: a born-unified row."""
    to_phase(db.engine, 3)
    a = adapter_in(db, M.DUAL_WRITE_UNIFIED_PRIMARY, fallback="primary_wins")
    assert a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").overall_success
    with legacy_refuses(db, "INSERT"):
        r = a.create_transaction("WALLET_CASHOUT", 7, "99", "USD", status="PROCESSING")
    assert r.overall_success and not r.secondary_success and r.legacy_entity_id is None
    return a, str(r.entity_id)


def test_check_counts_a_unified_row_whose_legacy_insert_was_refused(pg: Database) -> None:
    refused_create(pg)
    report = run_check(pg.engine, pg.settings)
    assert report.inconsistencies["missing_legacy"] == 1
    assert report.consistent < report.total


def test_emergency_rollback_creates_the_legacy_row_of_a_refused_create(pg: Database) -> None:
    _, utx = refused_create(pg)
    out = emergency_rollback(pg.engine, pg.settings, actor="oncall", reason="unified incident")
    assert (out["replay"]["legacy_created"], out["conflicts"]) == (1, 0)
    u = one(pg, "SELECT legacy_id, legacy_status FROM unified_transactions WHERE id = :e", e=utx)
    assert u.legacy_id is not None
    legacy = one(pg, "SELECT user_id, amount, status FROM cashouts WHERE id = :i", i=u.legacy_id)
    assert (legacy.user_id, int(legacy.amount), legacy.status) == (7, 99, u.legacy_status)
    assert all_rows(pg, "SELECT id FROM unistatus_repair_queue WHERE resolved_at IS NULL") == []
    report = run_check(pg.engine, pg.settings)
    assert report.consistent == report.total == 2
