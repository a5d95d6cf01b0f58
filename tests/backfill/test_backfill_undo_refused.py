"""`backfill undo` is the clean-up of rolling back from phase 2, where legacy is the
authoritative side: it deleted the backfilled unified rows in any mode, the
authoritative ones of a system in DUAL_WRITE_UNIFIED_PRIMARY or UNIFIED_ONLY too (a
hurried operator's `backfill undo` in phase 4, after `retire legacy-columns`, left
499,999 transactions with their status nowhere but the archive; found by a probe).
Refused now, nothing deleted, for a system whose mode reads unified; a mode switch
cannot slip between its batches."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from unistatus.backfill import run_backfill, undo
from unistatus.cli import app
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import ModeError
from unistatus.sim.seed import seed_legacy

READS_UNIFIED = [DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, DualWriteMode.UNIFIED_ONLY]


def _backfilled(db: Any) -> int:
    seed_legacy(db.engine, db.settings, 300, seed=1)
    run_backfill(db.engine, db.settings, batch_size=100)
    return int(db.count("unified_transactions"))


@pytest.mark.parametrize("mode", READS_UNIFIED, ids=lambda m: m.value)
def test_undo_is_refused_where_unified_is_authoritative(db: Any, mode: DualWriteMode) -> None:
    copied = _backfilled(db)
    set_mode(db.engine, mode, reason="test", force=True)
    for dry_run in (True, False):
        with pytest.raises(ModeError, match=f"cashout is in {mode.value}.*authoritative"):
            undo(db.engine, db.settings, dry_run=dry_run, actor="ops", reason="cleanup")
    assert db.count("unified_transactions") == copied


def test_one_system_in_unified_primary_refuses_only_itself(db: Any) -> None:
    copied = _backfilled(db)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    set_mode(
        db.engine,
        DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY,
        system=LegacySystemType.CASHOUT,
        reason="test",
        force=True,
    )
    with pytest.raises(ModeError, match="cashout is in DUAL_WRITE_UNIFIED_PRIMARY"):
        undo(db.engine, db.settings, actor="ops", reason="cleanup")
    assert db.count("unified_transactions") == copied
    done = undo(db.engine, db.settings, systems=[LegacySystemType.ESCROW], actor="ops", reason="x")
    assert done["removed"] == 100
    assert db.count("unified_transactions") == copied - 100


def test_the_command_says_so_exit_2(db: Any) -> None:
    copied = _backfilled(db)
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="test", force=True)
    args = ["--database-url", db.url, "backfill", "undo", "--reason", "cleanup", "--json"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, done.output
    said = json.loads(done.stdout)
    assert said["error"] == "ModeError" and "phase rollback" in said["detail"], said
    assert db.count("unified_transactions") == copied


def test_a_switch_between_two_batches_stops_it_saying_what_was_deleted(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A switch into unified primary landing between two batches stopped the undo with
    "nothing was deleted" after batches had been, the backfill's progress left complete
    (a second review). The count is said, and the system's progress reset: a backfill
    copies the deleted rows again."""
    import importlib

    from unistatus.backfill import progress

    undo_module = importlib.import_module("unistatus.backfill.undo")

    copied = _backfilled(db)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 2")
    monkeypatch.setattr(undo_module, "DELETE_BATCH", 40)
    reads = {"n": 0}
    real = undo_module.read_mode

    def switched_after_the_first_batch(conn: Any, system: Any = None) -> DualWriteMode:
        reads["n"] += 1
        if system is LegacySystemType.CASHOUT and reads["n"] > 4:
            return DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY  # the switch, as read
        return real(conn, system)

    monkeypatch.setattr(undo_module, "read_mode", switched_after_the_first_batch)
    with pytest.raises(ModeError, match=r"40 backfilled rows were deleted before it"):
        undo(db.engine, db.settings, actor="ops", reason="cleanup")
    assert db.count("unified_transactions") == copied - 40
    assert progress(db.engine, db.settings)["CASHOUT"]["state"] == "not_started"
