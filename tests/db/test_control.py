"""The control state: mode switches are logged, need a reason, and never skip a replay."""

from __future__ import annotations

from decimal import Decimal

import pytest
from typer.testing import CliRunner

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.cli import app
from unistatus.db.control import get_mode, history, set_mode
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.domain.statuses import UnifiedTransactionType as T
from unistatus.errors import InputError, ModeError


def test_mode_switch_is_logged_with_actor_and_reason(db: Database) -> None:
    assert get_mode(db.engine) is M.LEGACY_ONLY
    set_mode(db.engine, "dual_write_legacy_primary", reason="phase 1", actor="ops")
    assert get_mode(db.engine) is M.DUAL_WRITE_LEGACY_PRIMARY
    changes = history(db.engine, "mode")  # one row per system
    assert sorted(c.key for c in changes) == ["mode.CASHOUT", "mode.ESCROW", "mode.EXCHANGE"]
    for change in changes:
        assert (change.old_value, change.new_value) == (None, "DUAL_WRITE_LEGACY_PRIMARY")
        assert (change.actor, change.reason) == ("ops", "phase 1")


@pytest.mark.parametrize("reason", ["", "   "])
def test_mode_switch_needs_a_reason(db: Database, reason: str) -> None:
    with pytest.raises(InputError, match="reason"):
        set_mode(db.engine, M.UNIFIED_ONLY, reason=reason)
    assert get_mode(db.engine) is M.LEGACY_ONLY
    assert history(db.engine, "mode") == []


@pytest.mark.parametrize(
    ("reason", "actor", "refused"),
    [
        ("x" * 2000, "ops", "reason is too long"),
        ("ok\x1b[2Jcleared", "ops", "reason"),
        ("ok", "a" * 200, "actor is too long"),
        ("ok", "  ", "actor is required"),
    ],
    ids=["long_reason", "escape_in_reason", "long_actor", "blank_actor"],
)
def test_mode_switch_checks_its_reason_and_actor_as_phase_changes_do(
    db: Database, reason: str, actor: str, refused: str
) -> None:
    """What the control log records is checked as `phase advance` checks it (the
    runbook's "every change has a reason"): the library, and `mode set` exits 2."""
    with pytest.raises(InputError, match=refused):
        set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason=reason, actor=actor)
    done = CliRunner().invoke(
        app,
        ["--database-url", db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY"]
        + ["--system", "cashout", "--reason", reason, "--actor", actor],
    )
    assert done.exit_code == 2, done.output
    assert get_mode(db.engine) is M.LEGACY_ONLY
    assert history(db.engine, "mode") == []


def test_set_mode_refuses_to_skip_the_replay(db: Database) -> None:
    from unistatus.migration.replay import replay_pending

    set_mode(db.engine, M.UNIFIED_ONLY, reason="phase 4")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    assert adapter.create_transaction(T.ESCROW, 7, Decimal("3.5"), "EUR").overall_success
    with pytest.raises(ModeError, match="1 change"):
        set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="by hand")
    assert get_mode(db.engine) is M.UNIFIED_ONLY
    replay_pending(db.engine, db.settings, actor="t", reason="replay")
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="replayed, now safe")
    assert get_mode(db.engine) is M.DUAL_WRITE_LEGACY_PRIMARY


@pytest.mark.postgres
def test_a_mode_switch_on_an_autocommit_engine_is_one_transaction(pg: Database) -> None:
    """An application's engine in AUTOCOMMIT (``execution_options(isolation_level=
    "AUTOCOMMIT")``) handed to the library: its write transactions were no transactions
    (each statement its own, the mode lock gone with its statement), and the switch
    failed on its savepoint. They are READ COMMITTED transactions whatever the engine's
    level."""
    autocommit = pg.engine.execution_options(isolation_level="AUTOCOMMIT")
    set_mode(autocommit, M.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t", force=True)
    assert get_mode(pg.engine) is M.DUAL_WRITE_LEGACY_PRIMARY
    logged = history(pg.engine, "mode")[0]
    assert (logged.new_value, logged.reason) == ("DUAL_WRITE_LEGACY_PRIMARY", "t")
