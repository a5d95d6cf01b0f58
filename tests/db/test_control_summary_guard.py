"""An older unistatus still running after `init` upgraded the database (a rolling
deploy) writes the one global ``mode`` / ``phase`` key its version knows. Since
revisions 0015 and 0017 each system has its own key and the global one is a summary
unistatus keeps (the value every system has, absent while they differ): such a write
said "emergency rollback: done" while every new adapter went on writing as before, and an
old `phase advance` split the adapters between two modes (exploratory upgrade test). The
database refuses a summary that disagrees with the systems' own keys, whoever writes it;
one that agrees, and its removal, are the new version's own writes."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from support.phases import to_phase
from unistatus.db.control import get_mode, set_mode
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.domain.statuses import LegacySystemType as S
from unistatus.migration.phases import read_phase


def _write_summary_as_an_old_version(db: Any, key: str, value: str) -> None:
    control = db.table("unistatus_control")
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {control} SET value = :v WHERE key = :k"
                if db.scalar(f"SELECT count(*) FROM {control} WHERE key = '{key}'")
                else f"INSERT INTO {control} (key, value, updated_at, updated_by) "
                "VALUES (:k, :v, CURRENT_TIMESTAMP, 'old')"
            ),
            {"k": key, "v": value},
        )


def test_a_summary_that_disagrees_with_the_systems_is_refused(db: Any) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t", force=True)
    with pytest.raises(sa.exc.DBAPIError, match="newer unistatus"):
        _write_summary_as_an_old_version(db, "mode", M.LEGACY_ONLY.value)
    assert {get_mode(db.engine, s) for s in S} == {M.DUAL_WRITE_LEGACY_PRIMARY}
    to_phase(db.engine, 1)
    with pytest.raises(sa.exc.DBAPIError, match="newer unistatus"):
        _write_summary_as_an_old_version(db, "phase", "3")
    assert {read_phase_of(db, s) for s in S} == {1}


def read_phase_of(db: Any, system: S) -> int:
    with db.engine.connect() as conn:
        return read_phase(conn, system)


def test_unistatus_keeps_writing_its_summary_and_each_system(db: Any) -> None:
    set_mode(db.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t", force=True)
    set_mode(db.engine, M.DUAL_WRITE_UNIFIED_PRIMARY, system=S.ESCROW, reason="t", actor="t")
    assert get_mode(db.engine, S.ESCROW) is M.DUAL_WRITE_UNIFIED_PRIMARY
    set_mode(db.engine, M.LEGACY_ONLY, reason="t", actor="t", force=True)
    assert {get_mode(db.engine, s) for s in S} == {M.LEGACY_ONLY}
    # A summary equal to every system's is no change: an old version may write it.
    _write_summary_as_an_old_version(db, "mode", M.LEGACY_ONLY.value)
