"""Retirement is exactly reversible: a stale ``legacy_status`` is found, repaired, and
blocks the drop (issue 10, section 6).

A legacy-only change that keeps the unified status (exchange CREATED -> RATE_LOCKED)
leaves ``unified_transactions.legacy_status`` behind the legacy row. ``retire`` then
``--undo`` refilled the column from that stale image and lost the change. The repro
runs through the CLI on SQLite, as the issue found it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from conftest import Database
from unistatus.cli import app
from unistatus.db import schema
from unistatus.db.control import write_mode
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.tables import exchanges, unified_transactions
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import GateError
from unistatus.migration.retire import retire_legacy_columns, undo_cleanup

runner = CliRunner()


def cli(url: str, *args: str, code: int = 0) -> Result:
    result = runner.invoke(app, ["--database-url", url, *args], catch_exceptions=False)
    assert result.exit_code == code, (args, result.output)
    return result


def force_mode(url: str, mode: DualWriteMode) -> None:
    """Set the mode as a hand switch does, below every command-level guard.

    ``mode set`` into a unified-read mode is being gated separately (issue 10, section
    1); this test is about what retirement does with whatever the mode is.
    """
    engine = create_engine(url)
    try:
        ops = ops_for(engine)
        with ops.write_transaction() as conn:
            ops.mode_exclusive_lock(conn)
            write_mode(conn, mode, actor="test", reason="test: set by hand")
    finally:
        engine.dispose()


def exchange_status(url: str, legacy_id: int) -> tuple[str, str | None]:
    """(legacy status, unified legacy_status) of one exchange."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            legacy = conn.execute(
                sa.select(exchanges.c.status).where(exchanges.c.id == legacy_id)
            ).scalar_one()
            image = conn.execute(
                sa.select(unified_transactions.c.legacy_status).where(
                    unified_transactions.c.legacy_system == "EXCHANGE",
                    unified_transactions.c.legacy_id == legacy_id,
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return legacy, image


def drifted_exchange(tmp_path: Path) -> tuple[str, int]:
    """The issue's steps up to the drift: an exchange RATE_LOCKED in legacy only."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    cli(url, "init", "--demo-data", "30")
    cli(url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "phase 1")
    cli(url, "backfill", "--json")
    created = json.loads(
        cli(
            url,
            "tx",
            "create",
            "--type",
            "exchange",
            "--user",
            "7",
            "--amount",
            "10",
            "--currency",
            "USD",
            "--json",
        ).stdout
    )
    legacy_id = int(created["legacy_entity_id"])
    cli(url, "mode", "set", "LEGACY_ONLY", "--reason", "incident")
    cli(url, "tx", "update", f"exchange:{legacy_id}", "RATE_LOCKED", "--reason", "rate locked")
    cli(url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "incident over")
    assert exchange_status(url, legacy_id) == ("RATE_LOCKED", "CREATED")
    return url, legacy_id


def freeze_and_archive(url: str, tmp_path: Path, name: str) -> Path:
    force_mode(url, DualWriteMode.UNIFIED_ONLY)
    out = tmp_path / name
    cli(url, "archive", "export", "--out", str(out))
    cli(url, "archive", "verify", str(out))
    return out


def test_check_reports_the_drift_and_repair_fixes_it_then_retire_undo_is_exact(
    tmp_path: Path,
) -> None:
    url, legacy_id = drifted_exchange(tmp_path)

    # check: its own kind, counted, listed, stored, and not consistent.
    checked = cli(url, "check", "--json", code=1)
    report = json.loads(checked.stdout)
    assert report["inconsistencies"]["legacy_status_drift"] == 1
    assert report["per_system"]["EXCHANGE"]["inconsistencies"]["legacy_status_drift"] == 1
    assert report["consistent"] == report["total"] - 1
    (example,) = [e for e in report["examples"] if e["legacy_id"] == legacy_id]
    assert example["kinds"] == ["legacy_status_drift"]
    (detail,) = example["details"]
    assert detail["legacy_value"] == "RATE_LOCKED" and detail["unified_value"] == "CREATED"
    human = cli(url, "check", code=1).stdout
    assert "legacy_status_drift" in human

    # repair sets legacy_status from the legacy row, whatever the strategy.
    repaired = json.loads(
        cli(url, "repair", "--strategy", "unified_wins", "--reason", "drift", "--json").stdout
    )
    assert repaired["repaired_kinds"] == {"legacy_status_drift": 1}
    assert exchange_status(url, legacy_id) == ("RATE_LOCKED", "RATE_LOCKED")
    assert json.loads(cli(url, "check", "--json").stdout)["inconsistent"] == 0

    archive = freeze_and_archive(url, tmp_path, "archive")
    cli(url, "retire", "legacy-columns", "--reason", "phase 4 cleanup")
    cli(url, "retire", "legacy-columns", "--undo", "--reason", "drill")
    assert exchange_status(url, legacy_id) == ("RATE_LOCKED", "RATE_LOCKED")
    assert json.loads(cli(url, "archive", "verify", str(archive), "--json").stdout)["ok"]


def test_retire_refuses_while_a_legacy_status_drifts(tmp_path: Path) -> None:
    url, legacy_id = drifted_exchange(tmp_path)
    archive = freeze_and_archive(url, tmp_path, "archive")

    refused = cli(url, "retire", "legacy-columns", "--reason", "phase 4 cleanup", code=2)
    assert "1 row(s) of exchanges" in refused.stderr
    assert "legacy_status" in refused.stderr and "repair" in refused.stderr
    assert exchange_status(url, legacy_id) == ("RATE_LOCKED", "CREATED")  # nothing changed

    # Still in UNIFIED_ONLY: repair may fix this one kind (legacy is frozen and current).
    checked = json.loads(cli(url, "check", "--json", code=1).stdout)
    assert checked["inconsistencies"]["legacy_status_drift"] == 1
    cli(url, "repair", "--strategy", "unified_wins", "--reason", "drift before retire")
    assert exchange_status(url, legacy_id) == ("RATE_LOCKED", "RATE_LOCKED")
    cli(url, "retire", "legacy-columns", "--reason", "phase 4 cleanup")
    cli(url, "retire", "legacy-columns", "--undo", "--reason", "drill")
    assert exchange_status(url, legacy_id) == ("RATE_LOCKED", "RATE_LOCKED")
    assert json.loads(cli(url, "archive", "verify", str(archive), "--json").stdout)["ok"]


def test_the_revision_itself_refuses_a_drift_under_the_mode_lock(
    db: Database, tmp_path: Path
) -> None:
    """A direct ``alembic upgrade`` (revision 0006) re-checks the drift in its transaction."""
    from unistatus.adapter.core import DualWriteAdapter
    from unistatus.db.control import set_mode
    from unistatus.migration.archive import export_archive, record_verified, verify_archive

    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    created = adapter.create_transaction("EXCHANGE", 7, "10", "USD")
    assert created.overall_success
    with db.engine.begin() as conn:
        # The stale image, as a legacy-only change leaves it.
        conn.execute(sa.update(exchanges).values(status="RATE_LOCKED"))
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="t", force=True)
    out = tmp_path / "a"
    export_archive(db.engine, db.settings, out)
    record_verified(db.engine, verify_archive(db.engine, out), actor="t")
    try:
        with pytest.raises(GateError, match="legacy_status"):
            schema.upgrade(db.engine, db.settings, schema.RETIRE_REVISION)
        with pytest.raises(GateError, match="legacy_status"):
            retire_legacy_columns(db.engine, db.settings, actor="t", reason="t")
        assert schema.current_revision(db.engine) == schema.INSTALL_REVISION
    finally:
        undo_cleanup(db.engine, db.settings, actor="t", reason="cleanup")


def test_a_drift_made_while_retire_waits_for_the_mode_lock_is_caught_under_it(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-check passes; the drift commits while the revision waits for the exclusive
    mode lock; the revision's own check (under that lock) refuses the drop."""
    import threading

    from unistatus.adapter.core import DualWriteAdapter
    from unistatus.db import mode_lock_wait
    from unistatus.db.control import set_mode
    from unistatus.db.mode_lock_keys import MODE_LOCK_KEY
    from unistatus.migration.archive import export_archive, record_verified, verify_archive

    db = pg
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    created = DualWriteAdapter(db.engine, settings=db.settings).create_transaction(
        "EXCHANGE", 7, "10", "USD"
    )
    assert created.overall_success
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="t", force=True)
    out = tmp_path / "a"
    export_archive(db.engine, db.settings, out)
    record_verified(db.engine, verify_archive(db.engine, out), actor="t")

    # The revision waits for the mode lock once it reads who holds it. Whether it then
    # queues or, the writer's transaction open for LONG_SECONDS by then (a loaded
    # machine), looks again without queueing, it waits: watched here, not through
    # pg_blocking_pids, which sees only the first.
    waiting = threading.Event()
    reads_holders = mode_lock_wait.lock_holders

    def lock_holders(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        waiting.set()
        return reads_holders(*args, **kwargs)

    monkeypatch.setattr(mode_lock_wait, "lock_holders", lock_holders)
    outcome: list[BaseException | dict[str, object]] = []

    def retire() -> None:
        try:
            outcome.append(retire_legacy_columns(db.engine, db.settings, actor="t", reason="t"))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    thread = threading.Thread(target=retire)
    try:
        with db.engine.connect() as blocker, blocker.begin():
            # An in-flight writer holds the mode lock shared and changes legacy.
            blocker.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(MODE_LOCK_KEY)))
            blocker.execute(sa.update(exchanges).values(status="RATE_LOCKED"))
            thread.start()
            assert waiting.wait(30), outcome  # past the pre-check, the drift unseen
        thread.join(60)  # the drift committed: the revision takes the lock and checks
        assert not thread.is_alive()
    finally:
        # Never undone before the retirement is over: a drop after the undo would leave
        # the columns dropped for the tests that come next.
        if thread.ident is not None:
            thread.join()
        undo_cleanup(db.engine, db.settings, actor="t", reason="cleanup")
    (result,) = outcome
    assert isinstance(result, GateError), result
    assert "revision 0006 refused" in str(result) and "legacy_status" in str(result)
    assert schema.current_revision(db.engine) == schema.INSTALL_REVISION
