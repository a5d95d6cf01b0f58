"""`unistatus capture enable|disable|status`: output, JSON and exit codes."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from conftest import Database
from support.capture_data import raw, writer_name
from unistatus.cli import app
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode

runner = CliRunner()


def run(db: Database, *args: str) -> Result:
    return runner.invoke(app, ["--database-url", db.url, "capture", *args], catch_exceptions=False)


def test_help_teaches_with_examples() -> None:
    for command in ("enable", "disable", "status"):
        text = runner.invoke(app, ["capture", command, "--help"]).stdout
        assert "Examples" in text and "unistatus capture" in text


def test_enable_status_disable(db: Database) -> None:
    try:
        enabled = json.loads(run(db, "enable", "--actor", "alice", "--json").stdout)
        assert enabled["enabled"] and enabled["ok"] and enabled["writers"] == []
        set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
        raw(
            db,
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, updated_at)"
            " VALUES (1, 7, 1, 'USD', 'PENDING', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        )
        shown = run(db, "status")
        assert shown.exit_code == 0, shown.output
        assert writer_name(db) in shown.stdout and "CASHOUT: 1 write(s)" in shown.stdout
        status = json.loads(run(db, "status", "--json").stdout)
        (writer,) = status["writers"]
        assert (writer["writer"], writer["system"], writer["writes"]) == (
            writer_name(db),
            "CASHOUT",
            1,
        )
        # A trigger dropped by hand: status says so and exits 1.
        name = status["triggers"][0]["name"]
        table = status["triggers"][0]["table"]
        with db.engine.begin() as conn:
            on = f" ON {table}" if db.backend == "postgres" else ""
            conn.execute(sa.text(f"DROP TRIGGER {name}{on}"))
        broken = run(db, "status")
        assert broken.exit_code == 1 and "missing" in broken.stderr
    finally:
        disabled = run(db, "disable", "--reason", "done", "--json")
    assert disabled.exit_code == 0
    out = json.loads(disabled.stdout)
    assert not out["enabled"] and out["ok"] and out["triggers"] == []
    assert run(db, "status").exit_code == 0


@pytest.mark.postgres
def test_status_shows_a_writers_name_as_it_is(pg: Database) -> None:
    """A bypass writer names itself (application_name is any client's to set): `[/]` or
    `[bold]` in it is text in `capture status`, never Rich markup that breaks it."""
    name = "cron [/] [bold]job"
    writer = sa.create_engine(pg.url, connect_args={"application_name": name})
    try:
        assert run(pg, "enable", "--actor", "alice").exit_code == 0
        set_mode(pg.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
        with writer.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
                "updated_at) VALUES (1, 7, 1, 'USD', 'PENDING', now(), now())"
            )
        shown = runner.invoke(app, ["--database-url", pg.url, "capture", "status"])
        assert shown.exit_code == 0, shown.output
        assert f"bypass:{name}/" in shown.stdout, shown.stdout
    finally:
        writer.dispose()
        run(pg, "disable", "--reason", "done")


@pytest.mark.postgres
def test_monitor_shows_a_writers_name_as_text(pg: Database) -> None:
    """A bypass write to frozen legacy fires an alert naming the writer: `monitor`'s
    table read its message as Rich markup, and a client named '[/]' stopped the monitor
    (exit 2, MarkupError) at every start while the writer was in the window (a probe)."""
    from unistatus.domain.statuses import LegacySystemType  # noqa: PLC0415

    name = "cron [/] job"
    writer = sa.create_engine(pg.url, connect_args={"application_name": name})
    try:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
                "updated_at) VALUES (1, 7, 1, 'USD', 'PENDING', now(), now())"
            )
        assert run(pg, "enable", "--actor", "alice").exit_code == 0
        cashout = LegacySystemType.CASHOUT
        set_mode(pg.engine, DualWriteMode.UNIFIED_ONLY, reason="t", system=cashout, force=True)
        with writer.begin() as conn:
            conn.exec_driver_sql("UPDATE cashouts SET amount = amount + 1 WHERE id = 1")
        shown = runner.invoke(app, ["--database-url", pg.url, "monitor", "--once"])
        assert shown.exit_code in (0, 1), shown.output
        assert f"bypass:{name}/" in " ".join(shown.stdout.split()), shown.stdout
    finally:
        writer.dispose()
        run(pg, "disable", "--reason", "done")
