"""Phase progress bars say what was done, on SQLite and PostgreSQL.

Phase 1's bar stays empty until phase 1 is entered (the gates into it passing is not
work done), and phase 4's bar counts its three steps: unified-only, a verified archive,
the legacy status columns retired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from support.phases import to_phase
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.retire import retire_legacy_columns, undo_cleanup
from unistatus.observe.metrics import collect_snapshot
from unistatus.observe.terminal_dashboard import frame


def bars(db: Any) -> dict[int, Any]:
    snap = collect_snapshot(db.engine, db.settings)
    return {b["phase"]: b["percent"] for b in snap.phase_bars()}


def terminal(db: Any) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(frame(db.engine, db.settings))
    return console.export_text()


def test_nothing_is_done_at_phase_0(db: Any) -> None:
    assert bars(db) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}
    out = terminal(db)
    assert "100.0%" not in out
    to_phase(db.engine, 1)
    assert bars(db)[1] is not None


def test_phase_4_tracks_its_steps(db: Any, tmp_path: Path) -> None:
    to_phase(db.engine, 4)  # UNIFIED_ONLY: the first of three steps
    done = bars(db)
    assert done[1] == done[2] == done[3] == 100.0
    assert done[4] is not None and round(done[4], 1) == 33.3
    out = terminal(db)
    assert "unified-only: done" in out and "archive verified: not yet" in out
    export_archive(db.engine, db.settings, tmp_path / "archive")
    record_verified(db.engine, verify_archive(db.engine, tmp_path / "archive"), actor="test")
    assert round(bars(db)[4], 1) == 66.7
    try:
        retire_legacy_columns(db.engine, db.settings, actor="test")
        assert bars(db)[4] == 100.0
        assert "columns retired: done" in terminal(db)
    finally:
        undo_cleanup(db.engine, db.settings)
    assert round(bars(db)[4], 1) == 66.7


def test_systems_in_different_phases_are_said_so_with_each_systems_gates(sqlite_db: Any) -> None:
    """Cashouts and escrows in phase 1, exchanges in 0: /api/v1/status and both
    dashboards said "phase 0: Not started", and the gates were exchanges' alone (phase
    0's mapping), hiding the failing gates of the other two (exploratory review)."""
    from unistatus.domain.statuses import LegacySystemType as S

    db = sqlite_db
    to_phase(db.engine, 1, S.CASHOUT)
    to_phase(db.engine, 1, S.ESCROW)
    shown = collect_snapshot(db.engine, db.settings).as_dict()
    assert "different phases" in shown["phase_name"], shown["phase_name"]
    assert "exchange 0" in shown["phase_name"] and "cashout 1" in shown["phase_name"]
    gates = {g["name"] for g in shown["gates"]}
    assert any(n.startswith("cashout: ") for n in gates), gates
    assert any(n.startswith("exchange: ") for n in gates), gates
