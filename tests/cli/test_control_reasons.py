"""Every command that changes the mode, the phase or data needs a non-empty --reason,
recorded with the actor (issue 10, section 7).

``unistatus phase advance`` with no reason switched the live write mode. Now each of
``phase advance|rollback``, ``rollback --emergency``, ``retire legacy-columns
[--undo]``, ``backfill undo`` and ``repair`` (without ``--dry-run``) refuses a missing or
blank reason with exit 2 and changes nothing; the HTTP control routes answer 422.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from conftest import Database
from unistatus.api.service import create_app
from unistatus.backfill import run_backfill
from unistatus.cli import app
from unistatus.db.control import get_mode, history, set_mode
from unistatus.db.tables import escrows, status_history, unified_transactions
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration import phases, rollback

runner = CliRunner()
BLANK = ("", "   ")


def cli(db: Database, *args: str) -> Result:
    return runner.invoke(app, ["--database-url", db.url, *args], catch_exceptions=False)


def refused(db: Database, *args: str) -> None:
    """Without --reason, and with each blank one: exit 2 and a message naming --reason."""
    for extra in ((), *(("--reason", b) for b in BLANK)):
        result = cli(db, *args, *extra)
        assert result.exit_code == 2, (args, extra, result.output)
        assert "--reason" in result.output, result.output
        assert "Traceback" not in result.output


def _legacy_rows(db: Database, n: int) -> None:
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(escrows),
            [
                {
                    "user_id": 1,
                    "amount": 1,
                    "currency": "EUR",
                    "status": "ACTIVE",
                    "created_at": now,
                    "updated_at": now,
                }
                for _ in range(n)
            ],
        )


def test_phase_advance_and_rollback_need_a_reason(db: Database) -> None:
    refused(db, "phase", "advance")
    refused(db, "phase", "advance", "--force")
    assert phases.phase_status(db.engine, db.settings).phase == 0
    assert get_mode(db.engine) is DualWriteMode.LEGACY_ONLY and history(db.engine) == []

    done = cli(db, "phase", "advance", "--reason", "phase 1 go", "--actor", "alice")
    assert done.exit_code == 0, done.output
    logged = history(db.engine, "phase")[0]
    assert (logged.reason, logged.actor) == ("phase 1 go", "alice")

    refused(db, "phase", "rollback")
    refused(db, "rollback", "--emergency")
    assert phases.phase_status(db.engine, db.settings).phase == 1
    assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY

    back = cli(db, "rollback", "--emergency", "--reason", "drill", "--actor", "oncall")
    assert back.exit_code == 0, back.output
    logged = history(db.engine, "phase")[0]
    assert (logged.reason, logged.actor) == ("drill", "oncall")


def test_retire_and_its_undo_need_a_reason(db: Database) -> None:
    refused(db, "retire", "legacy-columns")
    refused(db, "retire", "legacy-columns", "--undo")
    assert history(db.engine) == []


def test_backfill_undo_needs_a_reason_and_has_a_dry_run(db: Database) -> None:
    _legacy_rows(db, 4)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    run_backfill(db.engine, db.settings)
    assert db.count("unified_transactions") == 4

    refused(db, "backfill", "undo")
    assert db.count("unified_transactions") == 4

    dry = cli(db, "backfill", "undo", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["removed"] == 4
    assert plan["systems"]["ESCROW"]["removed"] == 4
    assert db.count("unified_transactions") == 4  # nothing written
    human = cli(db, "backfill", "undo", "--dry-run")
    assert human.exit_code == 0 and "would remove" in human.stdout

    done = cli(db, "backfill", "undo", "--reason", "restart backfill", "--actor", "bob", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["removed"] == 4
    assert db.count("unified_transactions") == 0
    logged = history(db.engine, "backfill_undo")[0]
    assert (logged.reason, logged.actor) == ("restart backfill", "bob")
    assert logged.metadata and logged.metadata["removed"] == 4


def test_repair_needs_a_reason_unless_it_is_a_dry_run(db: Database) -> None:
    _legacy_rows(db, 2)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    refused(db, "repair", "--strategy", "legacy_wins")
    assert db.count("unified_transactions") == 0  # nothing repaired

    dry = cli(db, "repair", "--strategy", "legacy_wins", "--dry-run", "--json")
    assert dry.exit_code == 1, dry.output  # it would repair 2: nothing repaired
    assert json.loads(dry.stdout)["would_repair"] == 2 and db.count("unified_transactions") == 0

    done = cli(
        db, "repair", "--strategy", "legacy_wins", "--reason", "after incident 42",
        "--actor", "carol", "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["repaired"] == 2 and report["reason"] == "after incident 42"
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(status_history.c.reason, status_history.c.meta)).all()
    assert len(rows) == 2
    for reason, meta in rows:
        assert "after incident 42" in reason
        assert meta["actor"] == "carol" and meta["reason"] == "after incident 42"
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(unified_transactions)).scalar()


# --- HTTP -------------------------------------------------------------------------------

TOKEN = "t0ken-for-tests-0123456789"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/control/phase/advance", "/api/v1/control/phase/rollback", "/api/v1/control/rollback"],
)
def test_http_control_routes_refuse_a_missing_or_blank_reason(db: Database, path: str) -> None:
    settings = db.settings.model_copy(update={"admin_token": TOKEN})
    phases.advance(db.engine, db.settings, actor="t", reason="phase 1")
    before = len(history(db.engine))
    with TestClient(create_app(settings, db.engine)) as client:
        for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "  ", "force": True}):
            if "force" in body and not path.endswith("advance"):
                continue
            r = client.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 422, (body, r.text)
    assert len(history(db.engine)) == before
    assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY


LONG = "x" * 120_000
NUL = "ops\x00call"


@pytest.mark.parametrize("bad", [LONG, NUL], ids=["120k", "nul"])
def test_a_cli_reason_is_bounded_and_printable(db: Database, bad: str) -> None:
    """A 120k-character reason used to be stored; a NUL became a raw PostgreSQL error."""
    cli(db, "phase", "advance", "--reason", "go", "--actor", "alice")
    for args in (
        ("rollback", "--emergency"),
        ("phase", "rollback"),
        ("repair", "--strategy", "legacy_wins"),
    ):
        result = cli(db, *args, "--reason", bad)
        assert result.exit_code == 2, (args, result.output[:500])
        assert "reason" in result.output and "Traceback" not in result.output
    assert phases.phase_status(db.engine, db.settings).phase == 1
    # One control-log row per system (each has its own phase key), all "go".
    assert [c.reason for c in history(db.engine, "phase")] == ["go"] * 3


@pytest.mark.parametrize("bad", [LONG, NUL], ids=["120k", "nul"])
def test_library_entry_points_refuse_a_reason_past_its_bound(db: Database, bad: str) -> None:
    from unistatus.backfill.undo import undo
    from unistatus.errors import InputError
    from unistatus.migration.repair import run_repair
    from unistatus.migration.rollback import emergency_rollback, rollback_current_phase

    phases.advance(db.engine, db.settings, actor="alice", reason="go")
    calls = [
        lambda: rollback_current_phase(db.engine, db.settings, actor="a", reason=bad),
        lambda: emergency_rollback(db.engine, db.settings, actor="a", reason=bad),
        lambda: rollback.rollback_current_phase(db.engine, db.settings, actor="a", reason=bad),
        lambda: phases.advance(db.engine, db.settings, actor="a", reason=bad, force=True),
        lambda: run_repair(db.engine, db.settings, strategy="legacy_wins", reason=bad),
        lambda: undo(db.engine, db.settings, actor="a", reason=bad),
    ]
    for call in calls:
        with pytest.raises(InputError, match="reason"):
            call()
    assert phases.phase_status(db.engine, db.settings).phase == 1
    # One control-log row per system (each has its own phase key), all "go".
    assert [c.reason for c in history(db.engine, "phase")] == ["go"] * 3
