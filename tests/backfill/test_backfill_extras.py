"""A legacy value the application added later (REFUND_REQUESTED), mapped by the config:
the set-based backfill, its worker processes, the quarantine retry, check and repair all
treat it as the config says, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.backfill_data import unified_rows
from unistatus.backfill import quarantine_count, retry_quarantine, run_backfill
from unistatus.config import CONFIG_FILE_ENV, Settings, load_settings
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_quarantine as Q
from unistatus.domain.mapping import register_extra_statuses
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair
from unistatus.sim.seed import seed_legacy

N = 300
REFUNDS = 7
C = LegacySystemType.CASHOUT
CONFIG = '[mapping.CASHOUT]\nREFUND_REQUESTED = "CANCELLED"\n'


def _settings(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The database's settings, with the config file that maps REFUND_REQUESTED."""
    path = tmp_path / "unistatus.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    return load_settings(database_url=db.url)


def _seed_with_refunds(db: Database) -> list[int]:
    """N seeded rows; the legacy application marks REFUNDS cancelled cashouts refunded."""
    seed_legacy(db.engine, db.settings, N, seed=3)
    lt = resolve_legacy_tables(db.engine, db.settings)[C]
    assert lt.status is not None
    with db.engine.begin() as conn:
        ids = list(
            conn.execute(
                sa.select(lt.id).where(lt.status == "CANCELLED").order_by(lt.id).limit(REFUNDS)
            ).scalars()
        )
        conn.execute(
            sa.update(lt.table).where(lt.id.in_(ids)).values({lt.status.key: "REFUND_REQUESTED"})
        )
    assert len(ids) == REFUNDS
    return ids


def _refund_rows(db: Database) -> list[dict[str, Any]]:
    return [
        u
        for (system, _), u in unified_rows(db.engine).items()
        if system == "CASHOUT" and u["legacy_status"] == "REFUND_REQUESTED"
    ]


def _assert_refunds_cancelled_and_all_consistent(db: Database, settings: Settings) -> None:
    refunds = _refund_rows(db)
    assert len(refunds) == REFUNDS
    assert {u["status"] for u in refunds} == {"CANCELLED"}
    report = run_check(db.engine, settings, examples=5)
    assert report.total == N and report.consistent == N, report.as_dict()
    assert report.inconsistencies["unmappable_legacy"] == 0


def test_backfill_maps_the_configured_value_and_check_agrees(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_with_refunds(db)
    settings = _settings(db, tmp_path, monkeypatch)
    report = run_backfill(db.engine, settings, batch_size=64).as_dict()
    assert report["inserted"] == N and report["quarantined"] == 0
    assert quarantine_count(db.engine, unresolved=False) == 0
    _assert_refunds_cancelled_and_all_consistent(db, settings)


@pytest.mark.postgres
def test_backfill_worker_processes_map_it_too(pg: Database) -> None:
    """Workers are spawned processes: they get the value from the settings they are
    given (no config file here), not from the parent's registration."""
    _seed_with_refunds(pg)
    settings = load_settings(
        database_url=pg.url, mapping={"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}}
    )
    report = run_backfill(pg.engine, settings, batch_size=32, workers=2).as_dict()
    assert report["workers"] == 2
    assert report["inserted"] == N and report["quarantined"] == 0
    _assert_refunds_cancelled_and_all_consistent(pg, settings)


@pytest.mark.postgres
def test_backfill_worker_processes_map_a_value_registered_without_settings(
    pg: Database,
) -> None:
    """A library user registers the value in code (register_extra_statuses), with no
    mapping in the settings: the spawned workers map it as one process would."""
    _seed_with_refunds(pg)
    register_extra_statuses({"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}})
    report = run_backfill(pg.engine, pg.settings, batch_size=32, workers=2).as_dict()
    assert report["workers"] == 2
    assert report["inserted"] == N and report["quarantined"] == 0
    _assert_refunds_cancelled_and_all_consistent(pg, pg.settings)


def test_quarantine_retry_migrates_the_value_once_the_config_maps_it(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _seed_with_refunds(db)
    # Before the config knows it: set aside as unknown, and check says so.
    report = run_backfill(db.engine, db.settings, batch_size=64).as_dict()
    assert report["inserted"] == N - REFUNDS and report["quarantined"] == REFUNDS
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(Q.c.legacy_id, Q.c.raw_status, Q.c.reason)).all()
    assert sorted(rows) == [(i, "REFUND_REQUESTED", "unknown_status") for i in ids]
    before = run_check(db.engine, db.settings, examples=0)
    assert before.inconsistencies["unmappable_legacy"] == REFUNDS

    settings = _settings(db, tmp_path, monkeypatch)
    result = retry_quarantine(db.engine, settings)
    assert result["migrated"] == result["inserted"] == REFUNDS
    assert result["still_unmappable"] == 0 == quarantine_count(db.engine)
    _assert_refunds_cancelled_and_all_consistent(db, settings)


def test_repair_restores_a_damaged_row_from_the_configured_value(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _seed_with_refunds(db)
    settings = _settings(db, tmp_path, monkeypatch)
    run_backfill(db.engine, settings, batch_size=64)
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(U)
            .where(U.c.legacy_system == "CASHOUT", U.c.legacy_id == ids[0])
            .values(status="PENDING")
        )
    damaged = run_check(db.engine, settings, examples=0)
    assert damaged.inconsistencies["status_mismatch"] == 1
    report = run_repair(db.engine, settings, strategy="legacy_wins", actor="test", reason="t")
    assert report.repaired == 1 and report.failed == 0
    _assert_refunds_cancelled_and_all_consistent(db, settings)
