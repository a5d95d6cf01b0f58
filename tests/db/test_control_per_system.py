"""The mode per legacy system: stored under ``mode.<SYSTEM>``, switched one system or
all at once (one control-log row per system changed), read in one query, refused per
system where leaving UNIFIED_ONLY would skip that system's replay."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import PG_IN_EVERY_LAYOUT, Database
from support.race import in_lockstep
from unistatus.adapter.core import DualWriteAdapter
from unistatus.db import mode_reads
from unistatus.db.control import get_mode, get_modes, history, set_mode
from unistatus.db.mode_reads import last_mode_change_at, read_mode, read_modes, read_value
from unistatus.db.mode_watcher import ModeWatcher
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.domain.statuses import LegacySystemType as S
from unistatus.domain.statuses import UnifiedTransactionType as T
from unistatus.errors import ModeError


def test_one_system_switches_and_the_others_stay(db: Database) -> None:
    changes = set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, system=S.ESCROW, reason="wk 2")
    assert [(c.key, c.old_value, c.new_value) for c in changes] == [
        ("mode.ESCROW", None, "DUAL_WRITE_LEGACY_PRIMARY")
    ]
    assert get_modes(db.engine) == {
        S.CASHOUT: M.LEGACY_ONLY,
        S.ESCROW: M.DUAL_WRITE_LEGACY_PRIMARY,
        S.EXCHANGE: M.LEGACY_ONLY,
    }
    assert get_mode(db.engine, S.ESCROW) is M.DUAL_WRITE_LEGACY_PRIMARY
    assert get_mode(db.engine, S.CASHOUT) is M.LEGACY_ONLY
    with pytest.raises(ModeError, match="different modes"):
        get_mode(db.engine)  # the global view has no one answer now
    with db.engine.connect() as conn:
        assert read_value(conn, mode_reads.MODE_KEY) is None  # the summary: absent
        assert last_mode_change_at(conn, S.ESCROW) is not None
        assert last_mode_change_at(conn, S.CASHOUT) is None

    # All systems: only the two that change are logged; the summary is back.
    changes = set_mode(db.engine, "dual_write_legacy_primary", reason="phase 1", actor="ops")
    assert sorted(c.key for c in changes) == ["mode.CASHOUT", "mode.EXCHANGE"]
    assert get_mode(db.engine) is M.DUAL_WRITE_LEGACY_PRIMARY
    with db.engine.connect() as conn:
        assert read_value(conn, mode_reads.MODE_KEY) == "DUAL_WRITE_LEGACY_PRIMARY"
        assert read_mode(conn, S.EXCHANGE) is M.DUAL_WRITE_LEGACY_PRIMARY
    assert len(history(db.engine, "mode")) == 3
    assert set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="again") == []
    assert len(history(db.engine, "mode")) == 3
    # The system's spellings of the CLI are accepted.
    set_mode(db.engine, M.LEGACY_ONLY, system="exchanges", reason="back")  # type: ignore[arg-type]
    assert get_mode(db.engine, S.EXCHANGE) is M.LEGACY_ONLY


def test_last_mode_change_at_follows_the_system(db: Database) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="all")
    with db.engine.connect() as conn:
        before = {s: last_mode_change_at(conn, s) for s in S}
    set_mode(db.engine, M.LEGACY_ONLY, system=S.CASHOUT, reason="cashouts back")
    with db.engine.connect() as conn:
        after = {s: last_mode_change_at(conn, s) for s in S}
    assert after[S.ESCROW] == before[S.ESCROW] and after[S.EXCHANGE] == before[S.EXCHANGE]
    cashout_before, cashout_after = before[S.CASHOUT], after[S.CASHOUT]
    assert cashout_before is not None and cashout_after is not None
    assert cashout_after > cashout_before


def test_the_watcher_reads_every_system_in_one_query(db: Database) -> None:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "unistatus_control" in statement:
            statements.append(statement)

    watcher = ModeWatcher(db.engine, interval=0.05)
    set_mode(db.engine, M.UNIFIED_ONLY, system=S.CASHOUT, reason="wk 3", force=True)
    sa.event.listen(db.engine, "before_cursor_execute", seen)
    try:
        assert watcher.modes() == {
            S.CASHOUT: M.UNIFIED_ONLY,
            S.ESCROW: M.LEGACY_ONLY,
            S.EXCHANGE: M.LEGACY_ONLY,
        }
        assert watcher.get(S.CASHOUT) is M.UNIFIED_ONLY
        assert watcher.get(S.ESCROW) is M.LEGACY_ONLY
        assert len(statements) == 1  # one query, cached for the interval
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", seen)
    with pytest.raises(ModeError, match="different modes"):
        watcher.get()
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, system=S.ESCROW, reason="wk 2")
    deadline = time.monotonic() + 2
    while watcher.get(S.ESCROW) is not M.DUAL_WRITE_LEGACY_PRIMARY:
        assert time.monotonic() < deadline, "the switch did not reach the watcher"
        time.sleep(0.01)
    assert watcher.refresh(S.CASHOUT) is M.UNIFIED_ONLY


def test_leaving_unified_only_is_refused_per_system(db: Database) -> None:
    """Cashouts have a change not replayed: leaving UNIFIED_ONLY is refused for cashouts
    (and for every system at once), not for escrows, whose changes are all in legacy."""
    set_mode(db.engine, M.UNIFIED_ONLY, reason="phase 4", force=True, settings=db.settings)
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    assert adapter.create_transaction(T.WALLET_CASHOUT, 7, Decimal("3.5"), "EUR").overall_success
    for system in (S.CASHOUT, None):
        with pytest.raises(ModeError, match=r"1 change.*CASHOUT"):
            set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, system=system, reason="by hand")
    set_mode(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, system=S.ESCROW, reason="escrows back")
    assert get_modes(db.engine) == {
        S.CASHOUT: M.UNIFIED_ONLY,
        S.ESCROW: M.DUAL_WRITE_UNIFIED_PRIMARY,
        S.EXCHANGE: M.UNIFIED_ONLY,
    }
    with db.engine.connect() as conn:
        assert read_modes(conn)[S.CASHOUT] is M.UNIFIED_ONLY


@PG_IN_EVERY_LAYOUT
def test_systems_switching_at_once_keep_the_summary_true(pg: Database) -> None:
    """Every system switches at the same moment, each under its own lock, round after
    round through every combination of two modes: no switch fails, and after each round
    the global key holds the mode they all are in, or is absent while they differ."""
    both = (M.LEGACY_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY)

    def switch(system: S, n: int) -> None:
        mode = both[(n >> list(S).index(system)) & 1]
        set_mode(pg.engine, mode, system=system, reason=f"round {n}")

    def check(n: int) -> None:
        with pg.engine.connect() as conn:
            modes, summary = read_modes(conn), read_value(conn, mode_reads.MODE_KEY)
        common = mode_reads.common_mode(modes)
        assert summary == (common.value if common else None), (n, modes)

    set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="start: the summary written")
    assert in_lockstep(switch, rounds=24, after_round=check) == []
