"""Rolling back out of phase 4 after the legacy status columns were retired."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.cli import app
from unistatus.db.control import get_mode, set_mode
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.consistency import compare
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.errors import ModeError
from unistatus.migration import phases, rollback
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.retire import legacy_columns_dropped, retire_legacy_columns, undo_cleanup


def archived(db: Database, tmp_path: Path) -> None:
    """A verified archive of the frozen legacy tables (the retirement's gate)."""
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    record_verified(db.engine, verify_archive(db.engine, out), actor="test")


def test_rollback_from_4_restores_columns_then_replays(db: Database, tmp_path: Path) -> None:
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    phases.advance(db.engine, db.settings, actor="t")
    adapter.modes.refresh()
    old = adapter.create_transaction("ESCROW", 4, "20", "EUR")
    assert old.entity_id
    assert adapter.update_status(old.entity_id, "PENDING_SELLER", "s", "t").overall_success
    for _ in range(3):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    archived(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings)
        assert legacy_columns_dropped(db.engine, db.settings)
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        born = adapter.create_transaction("EXCHANGE", 9, "1.5", "USDT")
        assert born.overall_success and born.entity_id
        assert adapter.update_status(born.entity_id, "AWAITING_PAYMENT", "w", "t").overall_success
        assert adapter.update_status(old.entity_id, "PAYMENT_CONFIRMED", "w", "t").overall_success

        change = rollback.rollback_current_phase(
            db.engine, db.settings, actor="ops", reason="retire bug"
        )
        assert change.details["replay"]["undo_cleanup"]["undone"] is True
        assert not legacy_columns_dropped(db.engine, db.settings)
        assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
        tables = resolve_legacy_tables(db.engine, db.settings)
        with db.engine.connect() as conn:
            unified = [dict(r) for r in conn.execute(sa.select(U)).mappings()]
            for u in unified:
                lt = tables[LegacySystemType(u["legacy_system"])]
                assert lt.status is not None and u["legacy_id"] is not None
                row = (
                    conn.execute(
                        sa.select(
                            lt.id.label("id"),
                            lt.status.label("status"),
                            lt.user_id.label("user_id"),
                            lt.amount.label("amount"),
                            lt.currency.label("currency"),
                        ).where(lt.id == u["legacy_id"])
                    )
                    .mappings()
                    .first()
                )
                assert not compare(LegacySystemType(u["legacy_system"]), row, u)
        statuses = {u["id"]: (u["status"], u["legacy_status"]) for u in unified}
        assert statuses[born.entity_id] == ("AWAITING_PAYMENT", "AWAITING_DEPOSIT")
        assert statuses[old.entity_id] == ("PAYMENT_CONFIRMED", "PAYMENT_CONFIRMED")
        # The adapter started while the columns were gone reads legacy again (before any
        # write of its own) and writes it again, no restart.
        adapter.modes.refresh()
        assert adapter.check_consistency(born.entity_id)["consistent"]
        status, meta = adapter.get_transaction_status(born.entity_id)
        assert status is not None and status.value == "AWAITING_PAYMENT"
        assert meta["source"] == "legacy"
        moved = adapter.update_status(old.entity_id, "FUNDS_HELD", "seller accepted", "t")
        assert moved.overall_success, moved.error
        assert moved.legacy_status == "ACTIVE"
        assert adapter.check_consistency(old.entity_id)["consistent"]
    finally:
        undo_cleanup(db.engine, db.settings)


def test_rollback_of_one_system_from_4_after_retirement(db: Database, tmp_path: Path) -> None:
    """The columns are restored for every table (the retirement was of every system),
    only escrows' changes are replayed; exchanges stay frozen in phase 4, their writes
    still recorded, and replayed by their own rollback later: nothing lost."""
    from unistatus.migration.replay import pending_count

    E, X = LegacySystemType.ESCROW, LegacySystemType.EXCHANGE
    for _ in range(4):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    archived(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings)
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        escrow = adapter.create_transaction("ESCROW", 4, "20", "EUR")
        exchange = adapter.create_transaction("EXCHANGE", 9, "1.5", "USDT")
        assert escrow.entity_id and exchange.entity_id
        assert pending_count(db.engine, E) == 1 and pending_count(db.engine, X) == 1

        change = rollback.rollback_current_phase(
            db.engine, db.settings, actor="ops", reason="escrow bug", system="escrow"
        )
        assert change.details["replay"]["undo_cleanup"]["undone"] is True
        assert change.details["replay"]["replayed"] == 1
        assert not legacy_columns_dropped(db.engine, db.settings)
        assert pending_count(db.engine, E) == 0 and pending_count(db.engine, X) == 1
        assert get_mode(db.engine, E) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
        assert get_mode(db.engine, X) is DualWriteMode.UNIFIED_ONLY
        adapter.modes.refresh(X)
        moved = adapter.update_status(exchange.entity_id, "AWAITING_PAYMENT", "w", "t")
        assert moved.overall_success and moved.mode is DualWriteMode.UNIFIED_ONLY
        assert pending_count(db.engine, X) == 2

        back = rollback.rollback_current_phase(
            db.engine, db.settings, actor="ops", reason="exchange too", system=X
        )
        assert back.details["replay"]["replayed"] == 2 and pending_count(db.engine) == 0
        from unistatus.migration.check import run_check

        report = run_check(db.engine, db.settings, store=False)
        assert report.total == 2 and report.consistent == 2, report.as_dict()
        fresh = DualWriteAdapter(db.engine, settings=db.settings)
        for utx in (escrow.entity_id, exchange.entity_id):
            assert fresh.check_consistency(utx)["consistent"], str(fresh.check_consistency(utx))
    finally:
        undo_cleanup(db.engine, db.settings)


def test_mode_set_refuses_a_mode_that_writes_legacy_while_its_columns_are_retired(
    db: Database, tmp_path: Path
) -> None:
    """Nothing is pending, so leaving UNIFIED_ONLY skips no replay; but the legacy status
    columns are gone, and in any mode that writes legacy every write would fail. The
    switch is refused, even forced (a rollback restores the columns first)."""
    for _ in range(4):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    archived(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings)
        for mode in (M.DUAL_WRITE_UNIFIED_PRIMARY, M.DUAL_WRITE_LEGACY_PRIMARY, M.LEGACY_ONLY):
            for system in (None, LegacySystemType.ESCROW):
                with pytest.raises(ModeError, match="retire legacy-columns --undo"):
                    set_mode(
                        db.engine,
                        mode,
                        system=system,
                        reason="by hand",
                        force=True,
                        settings=db.settings,
                    )
        assert {get_mode(db.engine, s) for s in LegacySystemType} == {M.UNIFIED_ONLY}
        done = CliRunner().invoke(
            app, ["--database-url", db.url, "mode", "set", "LEGACY_ONLY", "--reason", "x"]
        )
        assert done.exit_code == 2, done.output
        assert "retire legacy-columns --undo" in done.output
        # Writes go on as before.
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        born = adapter.create_transaction("ESCROW", 4, "20", "EUR")
        assert born.overall_success and born.mode is M.UNIFIED_ONLY
        assert legacy_columns_dropped(db.engine, db.settings)
    finally:
        undo_cleanup(db.engine, db.settings)


def legacy_status_of(db: Database, utx: str) -> str | None:
    """What the transaction's legacy row holds now."""
    tables = resolve_legacy_tables(db.engine, db.settings)
    with db.engine.connect() as conn:
        u = conn.execute(sa.select(U.c.legacy_system, U.c.legacy_id).where(U.c.id == utx)).one()
        lt = tables[LegacySystemType(u.legacy_system)]
        assert lt.status is not None
        value = conn.execute(sa.select(lt.status).where(lt.id == u.legacy_id)).scalar_one()
    return None if value is None else str(value)


def cashouts_in_phase_4(db: Database, n: int) -> list[str]:
    """``n`` cashouts made in dual-write, then every system in phase 4 (UNIFIED_ONLY)."""
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    phases.advance(db.engine, db.settings, actor="t")
    adapter.modes.refresh()
    made = [adapter.create_transaction("WALLET_CASHOUT", 6 + i, "20", "EUR") for i in range(n)]
    assert all(m.overall_success and m.entity_id for m in made)
    for _ in range(3):
        phases.advance(db.engine, db.settings, actor="t", force=True, reason="test setup")
    return [str(m.entity_id) for m in made]


def test_a_write_between_an_undo_and_the_rollback_is_replayed(db: Database, tmp_path: Path) -> None:
    """The undo refills legacy with the newest legacy_status: the changes it so applied
    are not replayed again (the next change starts from what the refill wrote), so a
    write made after the undo, still in UNIFIED_ONLY, reaches legacy on rollback."""
    (utx,) = cashouts_in_phase_4(db, 1)
    archived(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings)
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        assert adapter.update_status(utx, "OTP_PENDING", "a", "t", force=True).overall_success
        undo_cleanup(db.engine, db.settings, reason="undo drill")
        assert legacy_status_of(db, utx) == "OTP_PENDING"
        moved = adapter.update_status(utx, "USER_CONFIRM_PENDING", "b", "t", force=True)
        assert moved.overall_success and moved.mode is M.UNIFIED_ONLY

        change = rollback.rollback_current_phase(db.engine, db.settings, actor="t", reason="back")
        assert change.details["replay"]["conflicts"] == 0, change.details
        assert legacy_status_of(db, utx) == "USER_CONFIRM_PENDING"
        adapter.modes.refresh()
        status, meta = adapter.get_transaction_status(utx)
        assert meta["source"] == "legacy" and status is not None
        assert status.value == "AWAITING_APPROVAL"
    finally:
        undo_cleanup(db.engine, db.settings)


def test_an_emergency_rollback_of_one_system_then_the_others_rollback(
    db: Database, tmp_path: Path
) -> None:
    """The emergency rollback of escrows restores every system's columns: the cashouts'
    changes it refilled are not replayed again by the cashouts' own rollback later."""
    (utx,) = cashouts_in_phase_4(db, 1)
    archived(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings)
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        assert adapter.update_status(utx, "OTP_PENDING", "a", "t", force=True).overall_success
        rollback.emergency_rollback(
            db.engine, db.settings, actor="t", reason="escrow", system=LegacySystemType.ESCROW
        )
        assert not legacy_columns_dropped(db.engine, db.settings)
        adapter.modes.refresh(LegacySystemType.CASHOUT)
        moved = adapter.update_status(utx, "USER_CONFIRM_PENDING", "b", "t", force=True)
        assert moved.overall_success and moved.mode is M.UNIFIED_ONLY

        change = rollback.rollback_current_phase(
            db.engine, db.settings, actor="t", reason="back", system="cashout"
        )
        assert change.details["replay"]["conflicts"] == 0, change.details
        assert legacy_status_of(db, utx) == "USER_CONFIRM_PENDING"
    finally:
        undo_cleanup(db.engine, db.settings)


@pytest.mark.postgres
def test_a_rollback_from_retired_columns_under_a_live_writer_loses_nothing(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer thread keeps changing transactions that had changes awaiting replay while
    the rollback restores the columns and replays. Writes acknowledged between the undo
    and the replay (still UNIFIED_ONLY) start from what the undo refilled: no conflict,
    and every transaction's last acknowledged write is what legacy holds afterwards."""
    from unistatus.migration import replay
    from unistatus.migration.check import run_check

    db = pg
    utxs = cashouts_in_phase_4(db, 4)
    archived(db, tmp_path)
    acked: dict[str, str] = {}
    attempts: dict[str, str] = {}
    last_ok: dict[str, bool] = {}
    count = [0]
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        w = DualWriteAdapter(db.engine, settings=db.settings)
        steps = ("OTP_PENDING", "USER_CONFIRM_PENDING", "ADMIN_PENDING", "PENDING")
        n = 0
        try:
            while not stop.is_set():
                utx, step = utxs[n % len(utxs)], steps[(n // len(utxs)) % len(steps)]
                n += 1
                attempts[utx] = step
                done = w.update_status(utx, step, "load", "writer", force=True)
                last_ok[utx] = done.overall_success
                if done.overall_success:
                    acked[utx] = done.legacy_status or step
                    count[0] += 1
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    def wait_for_writes(more: int) -> None:
        goal, deadline = count[0] + more, time.monotonic() + 30
        while count[0] < goal:
            assert time.monotonic() < deadline and not failures, (count[0], failures)
            time.sleep(0.01)

    real_undo = replay.undo

    def undo_then_writes(*args: Any, **kwargs: Any) -> Any:
        done = real_undo(*args, **kwargs)
        wait_for_writes(len(utxs) * 2)  # acknowledged between the undo and the replay
        return done

    monkeypatch.setattr(replay, "undo", undo_then_writes)
    thread = threading.Thread(target=writer)
    try:
        retire_legacy_columns(db.engine, db.settings)
        thread.start()
        wait_for_writes(len(utxs) * 2)  # changes awaiting replay while retired
        change = rollback.rollback_current_phase(db.engine, db.settings, actor="t", reason="back")
        assert change.details["replay"]["undo_cleanup"]["undone"] is True
        wait_for_writes(len(utxs))  # dual writes again
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(30)
        undo_cleanup(db.engine, db.settings)
    assert not failures, failures
    assert change.details["replay"]["conflicts"] == 0, change.details
    for utx in utxs:
        # The last write's outcome is known (acknowledged) or it was the one cut short.
        expected = {acked[utx]} if last_ok[utx] else {acked[utx], attempts[utx]}
        assert legacy_status_of(db, utx) in expected, (utx, expected)
    report = run_check(db.engine, db.settings, store=False)
    assert report.total == len(utxs) and report.consistent == report.total, report.as_dict()


def test_the_emergency_rollback_says_what_restoring_the_columns_wrote(
    db: Database, tmp_path: Path
) -> None:
    """Out of a retired phase 4 it printed "replayed 1 change(s)" while 3 pending changes
    were marked replayed: restoring the columns had written the others to legacy
    (``pending_covered`` in --json only; exploratory restore test)."""
    made = cashouts_in_phase_4(db, 2)
    archived(db, tmp_path)
    try:
        retire_legacy_columns(db.engine, db.settings)
        adapter = DualWriteAdapter(db.engine, settings=db.settings)
        for utx in made:
            assert adapter.update_status(utx, "OTP_PENDING", "a", "t", force=True).overall_success
        born = adapter.create_transaction("WALLET_CASHOUT", 40, "3", "EUR")
        assert born.overall_success
        url = ["--database-url", db.url, "rollback", "--emergency", "--reason", "retire bug"]
        result = CliRunner().invoke(app, url)
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        with db.engine.connect() as conn:
            covered = conn.execute(
                sa.text(
                    f"SELECT count(*) FROM {db.table('unistatus_pending_legacy')} "
                    "WHERE replayed_at IS NOT NULL"
                )
            ).scalar_one()
        assert covered == 3
        assert "2 change(s) awaiting replay written to legacy by restoring" in text, text
    finally:
        undo_cleanup(db.engine, db.settings)
