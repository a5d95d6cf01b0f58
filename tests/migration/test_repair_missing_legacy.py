"""`unistatus repair` creates the legacy row a refused create left missing.

A create acknowledged in DUAL_WRITE_UNIFIED_PRIMARY under ``primary_wins`` while the
database refused its legacy INSERT is queued (``missing_legacy``). Once the refusal is
fixed, repair creates that legacy row (any strategy: there is no legacy side to win)
from the ``legacy_values`` the create kept and unified's current status, as a rollback's
replay does, links it and closes the queue rows; ``--dry-run`` only says so. Legacy
refusing it again is a failure for that entity (its queue rows stay open), never a
repair, and the run goes on. Only in the dual modes: UNIFIED_ONLY keeps legacy frozen.
Once linked, a queue row naming the transaction by its UTX id only (queued before the
link, or by a repair racing the one that made it) is judged with its legacy row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Database
from support.adapters import snapshot
from support.legacy_columns import legacy_columns
from support.missing_legacy import (
    MARKED,
    open_queue,
    refused_creates,
    rows,
    unified,
)
from support.phases import to_phase
from support.refusing import refusing_inserts
from unistatus.clock import utcnow
from unistatus.db.tables import repair_queue
from unistatus.errors import RepairRunningError
from unistatus.migration import repair_entity
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair
from unistatus.migration.rollback import emergency_rollback

KEPT = {"destination": "iban-77"}


@pytest.fixture
def app_db(db: Database) -> Iterator[Database]:
    """cashouts with a required column of the application's own."""
    with legacy_columns(db, {"destination": "VARCHAR(64) NOT NULL"}):
        yield db


def legacy(db: Database, legacy_id: int) -> tuple[Any, ...]:
    (row,) = rows(
        db, "SELECT user_id, destination, status FROM cashouts WHERE id = :i", i=legacy_id
    )
    return tuple(row)


def test_repair_creates_the_legacy_row_and_a_dry_run_only_says_so(app_db: Database) -> None:
    db = app_db
    a, _, (utx,) = refused_creates(db, legacy_values=KEPT)
    before = snapshot(db)
    dry = run_repair(db.engine, db.settings, strategy="legacy_wins", dry_run=True)
    assert (dry.repaired, dry.failed, dry.skipped) == (1, 0, {})
    assert dry.repaired_kinds == {"missing_legacy": 1}
    assert [x["action"] for x in dry.actions] == ["create_legacy"]
    assert snapshot(db) == before

    done = run_repair(db.engine, db.settings, strategy="legacy_wins", reason="INC-9")
    assert (done.repaired, done.failed, done.skipped, done.queue_resolved) == (1, 0, {}, 1)
    after = unified(db, utx)
    assert after.legacy_id is not None and after.legacy_status == "PENDING"
    assert legacy(db, after.legacy_id) == (MARKED, "iban-77", "PENDING")
    assert open_queue(db) == []
    (audit,) = rows(
        db,
        "SELECT triggered_by, legacy_id, from_legacy_status, to_legacy_status, reason "
        "FROM unified_status_history WHERE transaction_id = :e AND triggered_by = 'repair'",
        e=utx,
    )
    assert tuple(audit)[:4] == ("repair", after.legacy_id, None, "PENDING")
    assert "missing_legacy" in audit.reason and "INC-9" in audit.reason
    report = run_check(db.engine, db.settings)
    assert report.consistent == report.total == 2
    # Linked: the next change writes both sides.
    r = a.update_status(utx, "PROCESSING", "sent", "app")
    assert r.overall_success and r.secondary_success and not r.has_inconsistency
    assert legacy(db, after.legacy_id)[2] == "EXECUTING"


def test_repair_writes_the_newest_acknowledged_status(app_db: Database) -> None:
    db = app_db
    a, _, (utx,) = refused_creates(db, legacy_values=KEPT)
    for status in ("PROCESSING", "SUCCESS"):
        assert a.update_status(utx, status, "go", "app").has_inconsistency
    done = run_repair(db.engine, db.settings, strategy="unified_wins", reason="INC-9")
    assert (done.repaired, done.failed, done.queue_resolved) == (1, 0, 3)
    after = unified(db, utx)
    assert (after.status, after.legacy_status) == ("SUCCESS", "SUCCESS")
    assert legacy(db, after.legacy_id) == (MARKED, "iban-77", "SUCCESS")
    assert open_queue(db) == []
    report = run_check(db.engine, db.settings)
    assert report.consistent == report.total == 2


def test_legacy_refusing_again_is_a_failure_and_the_run_goes_on(db: Database) -> None:
    _, _, (refused, other) = refused_creates(db, MARKED, MARKED + 1)
    with refusing_inserts(db, "cashouts", MARKED) as trigger:
        done = run_repair(db.engine, db.settings, strategy="unified_wins", reason="INC-9")
    assert (done.repaired, done.failed, done.skipped) == (1, 1, {})
    assert done.repaired_kinds == {"missing_legacy": 1} and done.queue_resolved == 1
    assert len(done.errors) == 1 and refused in done.errors[0] and trigger in done.errors[0]
    assert unified(db, refused).legacy_id is None
    assert unified(db, other).legacy_id is not None
    assert [tuple(q) for q in open_queue(db)] == [(refused, None)]
    report = run_check(db.engine, db.settings)
    assert report.inconsistencies["missing_legacy"] == 1
    assert report.consistent == 2 < report.total


def test_a_refusal_for_want_of_privilege_is_that_entitys_failure(pg: Database) -> None:
    """PostgreSQL: legacy refusing the row with SQLSTATE 42501 (insufficient_privilege,
    as a row-level security policy or an application's trigger may) is one entity's
    failure too, not the database refusing every write: the run goes on."""
    db = pg
    _, _, (refused, other) = refused_creates(db, MARKED, MARKED + 1)
    with refusing_inserts(db, "cashouts", MARKED, errcode="insufficient_privilege") as trigger:
        done = run_repair(db.engine, db.settings, strategy="unified_wins", reason="INC-9")
    assert (done.repaired, done.failed, done.skipped) == (1, 1, {})
    assert len(done.errors) == 1 and refused in done.errors[0] and trigger in done.errors[0]
    assert unified(db, refused).legacy_id is None
    assert unified(db, other).legacy_id is not None
    assert [tuple(q) for q in open_queue(db)] == [(refused, None)]


def test_unified_only_keeps_legacy_frozen_and_the_row_queued(db: Database) -> None:
    _, _, (utx,) = refused_creates(db)
    to_phase(db.engine, 4)  # as `phase advance --force` would
    before = snapshot(db)
    done = run_repair(db.engine, db.settings, strategy="unified_wins", reason="INC-9")
    assert (done.repaired, done.already_consistent, done.failed) == (0, 0, 0)
    assert done.skipped == {"legacy_frozen": 1}
    assert snapshot(db) == before
    assert [tuple(q) for q in open_queue(db)] == [(utx, None)]
    # Still queued, so the rollback creates it: never closed as consistent, never lost.
    out = emergency_rollback(db.engine, db.settings, actor="oncall", reason="back")
    assert (out["replay"]["legacy_created"], out["conflicts"]) == (1, 0)
    assert unified(db, utx).legacy_id is not None and open_queue(db) == []


def test_a_queue_row_by_utx_id_only_is_judged_with_the_legacy_row_made_since(
    db: Database,
) -> None:
    """A queue row naming the transaction by its UTX id only, still open after its legacy
    row was made and linked: closed as already consistent, not skipped as an orphan."""
    _, _, (utx,) = refused_creates(db)
    done = run_repair(db.engine, db.settings, strategy="unified_wins", reason="INC-9")
    assert (done.repaired, done.queue_resolved) == (1, 1)
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(repair_queue).values(
                transaction_id=utx,
                legacy_system="CASHOUT",
                source="dual_write",
                error="secondary write failed: queued before the link",
                created_at=utcnow(),
            )
        )
    again = run_repair(db.engine, db.settings, strategy="legacy_wins", reason="INC-10")
    assert (again.repaired, again.already_consistent, again.skipped) == (0, 1, {})
    assert open_queue(db) == []


def test_two_repairs_at_once(pg: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a second repair, started while the first creates a missing legacy
    row, is refused at once (one repair of a system at a time, migration/repair_claim):
    it used to read the same open queue row and wait for the unified row the first one
    linked. The first makes the legacy row once, no orphan_unified alarm."""
    db = pg
    _, _, (utx,) = refused_creates(db)
    create = repair_entity.create_legacy_rows
    refused: list[RepairRunningError] = []

    def with_a_second_repair(conn: sa.Connection, *args: Any, **kw: Any) -> Any:
        made = create(conn, *args, **kw)
        with pytest.raises(RepairRunningError) as second:
            run_repair(db.engine, db.settings, strategy="unified_wins", reason="INC-10")
        refused.append(second.value)
        return made

    monkeypatch.setattr(repair_entity, "create_legacy_rows", with_a_second_repair)
    first = run_repair(db.engine, db.settings, strategy="unified_wins", reason="INC-9")
    assert refused, "the repair created no legacy row"
    assert (first.repaired, first.failed, first.skipped) == (1, 0, {})
    assert unified(db, utx).legacy_id is not None and open_queue(db) == []
    assert len(rows(db, "SELECT id FROM cashouts WHERE user_id = :u", u=MARKED)) == 1
