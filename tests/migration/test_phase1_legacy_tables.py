"""The gate into phase 1 judges the legacy tables as every later command will: a table
each command refuses (an enum status lacking a value unistatus writes, an id of
another type) was let into dual write by `phase advance`, after which every write of
every system, and every rollback, refused; and an id not unique on its own (a table
partitioned by date, PRIMARY KEY (id, created_at)) let one status change write two
payments (found by a probe)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from test_legacy_status_types import enum_status

from unistatus.db.control import get_mode
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import GateError
from unistatus.migration import phases

M = DualWriteMode


def _refused_into_phase_1(db: Any) -> str:
    with pytest.raises(GateError) as info:
        phases.advance(db.engine, db.settings, actor="t", reason="start dual write")
    assert all(get_mode(db.engine, s) is M.LEGACY_ONLY for s in LegacySystemType)
    gate = next(
        g for g in phases.evaluate_gates(db.engine, db.settings, 1) if g.name == "legacy_tables"
    )
    assert not gate.passed
    return f"{info.value} {gate.detail}"


def test_an_enum_status_lacking_a_value_is_refused_into_phase_1(scratch_pg: Any) -> None:
    enum_status(scratch_pg, leave_out="FAILED")
    said = _refused_into_phase_1(scratch_pg)
    assert "cashout_state lacks 'FAILED'" in said, said


def test_an_id_not_unique_on_its_own_is_refused_into_phase_1(scratch_pg: Any) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts DROP CONSTRAINT cashouts_pkey")
        conn.exec_driver_sql("ALTER TABLE cashouts ADD PRIMARY KEY (id, created_at)")
    said = _refused_into_phase_1(db)
    assert "cashouts" in said and "not unique on its own" in said, said
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE UNIQUE INDEX cashouts_id_alone ON cashouts (id)")
    phases.advance(db.engine, db.settings, actor="t", reason="start dual write")
    assert get_mode(db.engine, LegacySystemType.CASHOUT) is M.DUAL_WRITE_LEGACY_PRIMARY


def test_the_reference_tables_pass_on_both_backends(db: Any) -> None:
    gate = next(
        g for g in phases.evaluate_gates(db.engine, db.settings, 1) if g.name == "legacy_tables"
    )
    assert gate.passed, gate.detail
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_a_case_insensitive_status_is_refused_into_phase_1(scratch_pg: Any) -> None:
    """The database's mapping took 'pending' for PENDING under it, the check said 100%,
    and the adapter refused every change of those rows (a probe)."""
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', "
            "deterministic = false)"
        )
        conn.exec_driver_sql(
            "ALTER TABLE cashouts ALTER COLUMN status TYPE varchar(64) COLLATE nocase"
        )
    said = _refused_into_phase_1(db)
    assert "non-deterministic collation nocase" in said, said


def test_a_status_column_too_short_for_a_status_is_refused_into_phase_1(db: Any) -> None:
    """Found only at the first write of a long status ("holds at most 12 characters")."""
    if db.backend == "sqlite":
        pytest.skip("SQLite keeps any length in a varchar(12)")
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE escrows ALTER COLUMN status TYPE varchar(12)")
    try:
        said = _refused_into_phase_1(db)
        assert "escrows.status holds at most 12 characters" in said, said
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE escrows ALTER COLUMN status TYPE varchar(64)")


def test_a_view_is_not_judged_for_a_key_it_cannot_have(scratch_pg: Any) -> None:
    """A view (its id unique in its base table) failed the gate: a view has no unique
    index, so only --force went on (a review)."""
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE VIEW cashouts_v AS SELECT * FROM cashouts")
    specs = dict(db.settings.legacy_tables)
    specs["CASHOUT"] = specs["CASHOUT"].model_copy(update={"table": "cashouts_v"})
    settings = db.settings.model_copy(update={"legacy_tables": specs})
    gate = next(
        g for g in phases.evaluate_gates(db.engine, settings, 1) if g.name == "legacy_tables"
    )
    assert gate.passed, gate.detail


def test_sqlite_main_is_a_schema_it_has(tmp_path: Any) -> None:
    """``schema = "main"`` named the file's own tables, and was refused with the others
    (a review)."""
    from unistatus.config import load_settings
    from unistatus.db import schema
    from unistatus.db.engine import create_engine
    from unistatus.db.legacy import resolve_legacy_tables

    url = f"sqlite:///{tmp_path / 'main.db'}"
    settings = load_settings(
        database_url=url, legacy_tables={"CASHOUT": {"table": "cashouts", "schema": "main"}}
    )
    engine = create_engine(url)
    try:
        schema.upgrade(engine, settings)
        assert resolve_legacy_tables(engine, settings)
    finally:
        engine.dispose()


@pytest.mark.parametrize("into", [2, 3, 4])
def test_a_legacy_table_the_settings_misname_fails_every_later_gate(db: Any, into: int) -> None:
    """A typo in the config (``table = "cashout"``): ``check`` and ``backfill`` refused
    it, but ``phase status`` said "ready" and ``phase advance`` went from 2 to 3 on
    reports about the right table (a probe). Every phase's gates judge the tables."""
    misnamed = db.settings.model_copy(
        update={
            "legacy_tables": {
                **db.settings.legacy_tables,
                "CASHOUT": db.settings.legacy_tables["CASHOUT"].model_copy(
                    update={"table": "cashout"}
                ),
            }
        }
    )
    gate = next(
        (g for g in phases.evaluate_gates(db.engine, misnamed, into) if g.name == "legacy_tables"),
        None,
    )
    assert gate is not None and not gate.passed, gate
    assert "cashout" in str(gate.detail), gate.detail
    right = next(
        g for g in phases.evaluate_gates(db.engine, db.settings, into) if g.name == "legacy_tables"
    )
    assert right.passed, right.detail
