"""Issue 10, section 1: a replay never overwrites a legacy status it did not expect.

The repro: a cashout paid out (SUCCESS) while legacy-only, unified left at PROCESSING,
UNIFIED_ONLY entered by force, a late FAILED written there, then the emergency
rollback. The replay must keep legacy SUCCESS and leave the FAILED as a conflict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console
from typer.testing import CliRunner, Result

from conftest import Database
from unistatus.cli import app
from unistatus.db.control import get_mode, history, set_mode
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.errors import ModeError
from unistatus.migration.check import run_check
from unistatus.migration.phases import evaluate_gates
from unistatus.migration.repair import run_repair

runner = CliRunner()


def run(db: Database, *args: str) -> Result:
    return runner.invoke(app, ["--database-url", db.url, *args], catch_exceptions=False)


def ok(db: Database, *args: str) -> Result:
    result = run(db, *args)
    assert result.exit_code == 0, (args, result.output)
    return result


def legacy_status(db: Database) -> str:
    with db.engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT status FROM cashouts WHERE id = 1")).scalar_one())


def stale_unified_only(db: Database) -> None:
    """The issue's repro up to the late FAILED written in UNIFIED_ONLY."""
    ok(db, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "a")
    ok(
        db,
        "tx",
        "create",
        "--type",
        "cashout",
        "--user",
        "7",
        "--amount",
        "500",
        "--currency",
        "USD",
    )
    ok(db, "tx", "update", "cashout:1", "PROCESSING", "--reason", "sent")
    ok(db, "mode", "set", "LEGACY_ONLY", "--reason", "incident")
    ok(db, "tx", "update", "cashout:1", "SUCCESS", "--reason", "payout confirmed")
    ok(db, "mode", "set", "UNIFIED_ONLY", "--reason", "oops", "--force")
    ok(db, "tx", "update", "cashout:1", "FAILED", "--reason", "late")


def test_replay_keeps_a_paid_out_success_and_lists_the_conflict(db: Database) -> None:
    stale_unified_only(db)
    rolled = json.loads(ok(db, "rollback", "--emergency", "--reason", "back", "--json").stdout)
    assert legacy_status(db) == "SUCCESS"
    assert rolled["replay"]["conflicts"] == 1
    listing = run(db, "rollback", "conflicts", "--json")
    assert listing.exit_code == 1  # open conflicts: like `check`, 1 = look at this
    listed = json.loads(listing.stdout)
    assert listed["open"] == 1
    [conflict] = listed["conflicts"]
    assert conflict["legacy_expected"] == "EXECUTING"  # cashout PROCESSING in legacy
    assert conflict["legacy_actual"] == "SUCCESS"
    assert conflict["replay_status"] == "FAILED"
    assert conflict["resolved_at"] is None


def test_mode_set_into_unified_reads_is_refused_while_unified_is_stale(db: Database) -> None:
    ok(db, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "a")
    ok(
        db,
        "tx",
        "create",
        "--type",
        "cashout",
        "--user",
        "7",
        "--amount",
        "500",
        "--currency",
        "USD",
    )
    ok(db, "mode", "set", "LEGACY_ONLY", "--reason", "incident")
    ok(db, "tx", "update", "cashout:1", "PROCESSING", "--reason", "sent")
    for mode in ("UNIFIED_ONLY", "DUAL_WRITE_UNIFIED_PRIMARY"):
        refused = run(db, "mode", "set", mode, "--reason", "oops")
        assert refused.exit_code == 2, refused.output
        err = refused.stderr.strip()
        assert "unified may be stale" in err and "CASHOUT 1" in err, err
        assert "phase advance" in err and "--force" in err, err
    assert json.loads(ok(db, "mode", "get", "--json").stdout)["mode"] == "LEGACY_ONLY"
    # Back in dual write, the legacy-only write is still not in unified: still refused.
    ok(db, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "resume")
    assert run(db, "mode", "set", "UNIFIED_ONLY", "--reason", "oops").exit_code == 2
    # Forced: allowed, says what it risks, and the control log keeps what was stale.
    forced = ok(db, "mode", "set", "UNIFIED_ONLY", "--reason", "approved", "--force")
    assert "forced over stale unified" in forced.stdout and "CASHOUT 1" in forced.stdout
    latest = history(db.engine, "mode", limit=1)[0]
    assert latest.new_value == "UNIFIED_ONLY" and latest.metadata is not None
    assert latest.metadata["forced_over_stale_unified"]["rows"] == {"CASHOUT": 1}


def test_mode_set_into_unified_reads_passes_once_repaired_and_checked(db: Database) -> None:
    ok(db, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "a")
    ok(
        db,
        "tx",
        "create",
        "--type",
        "cashout",
        "--user",
        "7",
        "--amount",
        "500",
        "--currency",
        "USD",
    )
    ok(db, "mode", "set", "LEGACY_ONLY", "--reason", "incident")
    ok(db, "tx", "update", "cashout:1", "PROCESSING", "--reason", "sent")
    ok(db, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "resume")
    assert run(db, "mode", "set", "DUAL_WRITE_UNIFIED_PRIMARY", "--reason", "x").exit_code == 2
    run_repair(db.engine, db.settings, strategy="legacy_wins")
    assert run(db, "check").exit_code == 0
    ok(db, "mode", "set", "DUAL_WRITE_UNIFIED_PRIMARY", "--reason", "verified")


@pytest.mark.parametrize("decision", ["--keep-legacy", "--apply"])
def test_a_conflict_is_resolved_with_a_reason(db: Database, decision: str) -> None:
    stale_unified_only(db)
    ok(db, "rollback", "--emergency", "--reason", "back")
    [conflict] = json.loads(run(db, "rollback", "conflicts", "--json").stdout)["conflicts"]
    no_reason = run(db, "rollback", "resolve", str(conflict["id"]), decision, "--reason", " ")
    assert no_reason.exit_code == 2 and "reason" in no_reason.stderr
    both = run(
        db, "rollback", "resolve", str(conflict["id"]), "--keep-legacy", "--apply", "--reason", "x"
    )
    assert both.exit_code == 2
    done = json.loads(
        ok(
            db,
            "rollback",
            "resolve",
            str(conflict["id"]),
            decision,
            "--reason",
            "ops call",
            "--actor",
            "alice",
            "--json",
        ).stdout
    )
    assert done["resolution"] == decision.strip("-").replace("-", "_")
    assert done["resolved_by"] == "alice" and done["resolution_reason"] == "ops call"
    assert legacy_status(db) == ("SUCCESS" if decision == "--keep-legacy" else "FAILED")
    assert json.loads(ok(db, "rollback", "conflicts", "--json").stdout)["open"] == 0
    # Kept legacy: unified follows it in the same decision, no repair strategy involved.
    assert run_check(db.engine, db.settings).is_consistent
    again = run(db, "rollback", "resolve", str(conflict["id"]), decision, "--reason", "x")
    assert again.exit_code == 2 and "already resolved" in again.stderr


@pytest.mark.parametrize("strategy", ["newest_wins", "unified_wins"])
def test_repair_leaves_a_transaction_with_an_open_conflict_alone(
    db: Database, strategy: str
) -> None:
    """Unified holds the late FAILED and is the newer side: a repair that let unified win
    would overwrite the paid-out SUCCESS the replay kept. Open conflicts are the
    operator's decision, never a repair strategy's."""
    stale_unified_only(db)
    ok(db, "rollback", "--emergency", "--reason", "back")
    result = run(db, "repair", "--strategy", strategy, "--reason", "tidy", "--json")
    assert result.exit_code == 1, result.output  # 1: something is left to look at
    repaired = json.loads(result.stdout)
    assert legacy_status(db) == "SUCCESS"
    assert repaired["skipped"] == {"replay_conflict": 1}, repaired
    assert json.loads(run(db, "rollback", "conflicts", "--json").stdout)["open"] == 1
    # ...and no phase leads back to unified reads while it is open.
    for into in (3, 4):
        [gate] = [
            g for g in evaluate_gates(db.engine, db.settings, into) if g.name.startswith("replay")
        ]
        assert gate.name == "replay_conflicts_open" and gate.value == 1 and not gate.passed


def test_apply_refuses_when_legacy_moved_since(db: Database) -> None:
    stale_unified_only(db)
    ok(db, "rollback", "--emergency", "--reason", "back")
    [conflict] = json.loads(run(db, "rollback", "conflicts", "--json").stdout)["conflicts"]
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cashouts SET status = 'COMPLETED' WHERE id = 1"))
    refused = run(db, "rollback", "resolve", str(conflict["id"]), "--apply", "--reason", "x")
    assert refused.exit_code == 2 and "changed since" in refused.stderr
    assert legacy_status(db) == "COMPLETED"
    assert json.loads(run(db, "rollback", "conflicts", "--json").stdout)["open"] == 1


def test_conflicts_show_in_diagnose_status_and_dashboard(db: Database) -> None:
    from unistatus.observe.metrics import collect_snapshot
    from unistatus.observe.terminal_dashboard import frame

    stale_unified_only(db)
    ok(db, "rollback", "--emergency", "--reason", "back")
    report = json.loads(ok(db, "diagnose", "--out", "-").stdout)
    assert report["replay_conflicts"]["open"] == 1
    assert report["replay_conflicts"]["conflicts"][0]["legacy_actual"] == "SUCCESS"
    snap = collect_snapshot(db.engine, db.settings)
    assert snap.as_dict()["data_quality"]["replay_conflicts"] == 1
    console = Console(width=140, record=True, color_system=None)
    console.print(frame(db.engine, db.settings))
    text = console.export_text()
    assert "replay conflicts" in text and "1 open" in text


def test_an_open_conflict_fires_an_alert_and_is_a_metric_until_resolved(db: Database) -> None:
    """Changes the replay kept aside wait for an operator: the monitor says so (a
    warning, like the quarantine), and /metrics carries the count for Prometheus."""
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from unistatus.api.service import create_app
    from unistatus.observe import alerts
    from unistatus.observe.notify import Notifier

    def alert() -> Any:
        monitor = alerts.Monitor(db.engine, db.settings, notifier=Notifier(), verify_rows=0)
        return {s.name: s for s in monitor.evaluate()}["replay_conflicts_open"]

    def metric() -> float:
        with TestClient(create_app(db.settings, db.engine)) as client:
            text = client.get("/metrics").text
        [value] = [
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "unistatus_replay_conflicts_open"
        ]
        return float(value)

    assert alert().state == "resolved" and metric() == 0.0
    stale_unified_only(db)
    ok(db, "rollback", "--emergency", "--reason", "back")
    firing = alert()
    assert firing.firing and firing.level == "warning" and firing.value == 1.0
    assert "unistatus rollback conflicts" in firing.message
    assert metric() == 1.0
    [conflict] = json.loads(run(db, "rollback", "conflicts", "--json").stdout)["conflicts"]
    ok(db, "rollback", "resolve", str(conflict["id"]), "--keep-legacy", "--reason", "ops call")
    assert alert().state == "resolved" and metric() == 0.0


def _legacy_only_write(db: Database) -> None:
    """A transaction in dual write, then a change made while only legacy was written."""
    ok(db, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "a")
    ok(
        db,
        "tx",
        "create",
        "--type",
        "cashout",
        "--user",
        "7",
        "--amount",
        "500",
        "--currency",
        "USD",
    )
    ok(db, "mode", "set", "LEGACY_ONLY", "--reason", "incident")
    ok(db, "tx", "update", "cashout:1", "PROCESSING", "--reason", "sent")


def test_the_library_refuses_too_unless_forced(db: Database) -> None:
    _legacy_only_write(db)
    with pytest.raises(ModeError, match="unified may be stale"):
        set_mode(db.engine, M.UNIFIED_ONLY, reason="lib", settings=db.settings)
    assert get_mode(db.engine) is M.LEGACY_ONLY
    [change, *_] = set_mode(
        db.engine, M.UNIFIED_ONLY, reason="lib", force=True, settings=db.settings
    )
    assert change.metadata and change.metadata["forced_over_stale_unified"]["rows"] == {
        "CASHOUT": 1
    }


def test_the_api_refuses_with_409_unless_forced(db: Database) -> None:
    from fastapi.testclient import TestClient

    from unistatus.api.service import create_app

    _legacy_only_write(db)
    token = "admin-token-for-this-test"
    app = create_app(db.settings.model_copy(update={"admin_token": token}), db.engine)
    headers = {"Authorization": f"Bearer {token}"}
    body: dict[str, object] = {"mode": "DUAL_WRITE_UNIFIED_PRIMARY", "reason": "api"}
    with TestClient(app) as client:
        r = client.put("/api/v1/control/mode", json=body, headers=headers)
        assert r.status_code == 409 and "unified may be stale" in r.json()["detail"], r.text
        assert get_mode(db.engine) is M.LEGACY_ONLY
        r = client.put("/api/v1/control/mode", json={**body, "force": True}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["metadata"]["forced_over_stale_unified"]["rows"] == {"CASHOUT": 1}
    assert get_mode(db.engine) is M.DUAL_WRITE_UNIFIED_PRIMARY


def test_a_vanished_legacy_row_is_a_conflict_not_an_error(db: Database) -> None:
    from unistatus.migration.rollback import emergency_rollback

    stale_unified_only(db)
    with db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM cashouts WHERE id = 1"))
    result = emergency_rollback(db.engine, db.settings, actor="t", reason="back")
    assert result["conflicts"] == 1
    [conflict] = json.loads(run(db, "rollback", "conflicts", "--json").stdout)["conflicts"]
    assert conflict["cause"] == "legacy_missing" and conflict["legacy_actual"] is None


def test_keep_legacy_closes_a_conflict_whose_legacy_row_is_gone(db: Database) -> None:
    """Legacy row deleted on purpose: --apply has nothing to write, and --keep-legacy
    accepts that it is gone. The unified row is kept as it is (an orphan, as repair
    leaves it under legacy_wins: a money record `check` reports for an operator) and its
    history records the decision; the conflict, its exit code and alert are closed."""
    from unistatus.db.tables import status_history, unified_transactions

    stale_unified_only(db)
    with db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM cashouts WHERE id = 1"))
    ok(db, "rollback", "--emergency", "--reason", "drill")
    [conflict] = json.loads(run(db, "rollback", "conflicts", "--json").stdout)["conflicts"]
    assert conflict["cause"] == "legacy_missing"
    conflict_id = str(conflict["id"])
    applied = run(db, "rollback", "resolve", conflict_id, "--apply", "--reason", "x")
    assert applied.exit_code == 2 and "the legacy row is gone" in applied.stderr
    U, H = unified_transactions, status_history
    tx = conflict["transaction_id"]

    def unified() -> Any:
        with db.engine.connect() as conn:
            return conn.execute(sa.select(U).where(U.c.id == tx)).one()._asdict()

    before = unified()
    kept = run(
        db,
        "rollback",
        "resolve",
        conflict_id,
        "--keep-legacy",
        "--reason",
        "deleted on purpose",
        "--actor",
        "alice",
    )
    assert kept.exit_code == 0, kept.output
    assert "gone" in kept.stdout and "orphan" in kept.stdout, kept.stdout
    assert json.loads(ok(db, "rollback", "conflicts", "--json").stdout)["open"] == 0
    assert unified() == before  # kept, untouched
    with db.engine.connect() as conn:
        last = conn.execute(
            sa.select(H).where(H.c.transaction_id == tx).order_by(H.c.id.desc()).limit(1)
        ).one()
    assert last.from_status == last.to_status == before["status"]
    assert last.to_legacy_status is None and "deleted on purpose" in last.reason
    assert last.meta["replay_conflict"] == conflict["id"]
    assert last.meta["actor"] == "alice" and last.meta["resolution"] == "keep_legacy"
    report = run_check(db.engine, db.settings)
    assert report.inconsistencies["orphan_unified"] == 1


@pytest.fixture
def conflicts_table_gone(pg: Database) -> Iterator[Database]:
    """The fault: the replay conflicts table is missing (a raw ProgrammingError on
    PostgreSQL, which is not an OperationalError)."""
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE unistatus_replay_conflicts RENAME TO _conflicts_away")
    try:
        yield pg
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE _conflicts_away RENAME TO unistatus_replay_conflicts")


def test_conflict_reads_and_resolve_fail_as_storage_errors(conflicts_table_gone: Database) -> None:
    from unistatus.errors import StorageError
    from unistatus.migration.replay_conflicts import (
        get_conflict,
        list_conflicts,
        open_conflict_count,
    )
    from unistatus.migration.replay_resolve import resolve

    db = conflicts_table_gone
    calls = [
        lambda: list_conflicts(db.engine),
        lambda: open_conflict_count(db.engine),
        lambda: get_conflict(db.engine, 1),
        lambda: resolve(db.engine, db.settings, 1, action="apply", actor="a", reason="x"),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="UndefinedTable") as caught:
            call()
        assert "[SQL" not in str(caught.value)


def test_an_emergency_rollback_that_cannot_record_a_conflict_is_a_storage_error(
    pg: Database,
) -> None:
    from unistatus.errors import StorageError
    from unistatus.migration.rollback import emergency_rollback

    stale_unified_only(pg)
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE unistatus_replay_conflicts RENAME TO _conflicts_away")
    try:
        with pytest.raises(StorageError, match="nothing of the unfinished round") as caught:
            emergency_rollback(pg.engine, pg.settings, actor="oncall", reason="back")
        assert "[SQL" not in str(caught.value)
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE _conflicts_away RENAME TO unistatus_replay_conflicts")
    assert get_mode(pg.engine) is M.UNIFIED_ONLY and legacy_status(pg) == "SUCCESS"


def test_a_failed_backfill_pause_is_one_redacted_line_in_the_notes(pg: Database) -> None:
    """The switch is done when the pause fails: the note says why in one line, with no
    SQL, no parameters and no password."""
    from unistatus.migration.rollback import emergency_rollback

    ok(pg, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "a")
    with pg.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION _no_pause() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.key = 'backfill.paused' THEN RAISE EXCEPTION "
            "'pause refused (host=db password=hunter2)' USING DETAIL = 'second line'; END IF; "
            "RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER _no_pause BEFORE INSERT OR UPDATE ON unistatus_control "
            "FOR EACH ROW EXECUTE FUNCTION _no_pause()"
        )
    try:
        done = emergency_rollback(pg.engine, pg.settings, actor="oncall", reason="back")
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER _no_pause ON unistatus_control")
            conn.exec_driver_sql("DROP FUNCTION _no_pause()")
    assert get_mode(pg.engine) is M.LEGACY_ONLY
    [note] = [n for n in done["notes"] if "pause" in n]
    assert note.startswith("could not pause the backfill: ") and "pause refused" in note
    assert "\n" not in note and "[SQL" not in note and "hunter2" not in note, note


def test_an_actor_past_its_bound_is_refused_not_truncated(db: Database) -> None:
    from unistatus.errors import InputError
    from unistatus.migration.replay_resolve import resolve
    from unistatus.migration.rollback import emergency_rollback

    stale_unified_only(db)
    with pytest.raises(InputError, match="actor"):
        emergency_rollback(db.engine, db.settings, actor="a" * 129, reason="back")
    assert get_mode(db.engine) is M.UNIFIED_ONLY
    ok(db, "rollback", "--emergency", "--reason", "back")
    [conflict] = json.loads(run(db, "rollback", "conflicts", "--json").stdout)["conflicts"]
    with pytest.raises(InputError, match="actor"):
        resolve(db.engine, db.settings, conflict["id"], action="apply", actor="b" * 129, reason="x")
    assert json.loads(run(db, "rollback", "conflicts", "--json").stdout)["open"] == 1
