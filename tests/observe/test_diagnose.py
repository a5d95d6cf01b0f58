"""Diagnostics: every section present, secrets never written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT, Database
from support.roles import ALL_ON_PUBLIC, a_role_without_read_all_stats
from unistatus.adapter.core import DualWriteAdapter
from unistatus.cli import app
from unistatus.cli.context import _default
from unistatus.config import load_settings
from unistatus.db.engine import create_engine
from unistatus.migration import phases, rollback
from unistatus.migration.check import run_check
from unistatus.observe.diagnose import default_filename, generate_diagnostic, redact_settings
from unistatus.observe.stats import OperationStats

SECTIONS = {
    "generated_at",
    "versions",
    "database_role",
    "connection",
    "config",
    "control",
    "gates",
    "check_reports",
    "alerts",
    "repair_queue",
    "quarantine",
    "backfill",
    "pending_legacy_changes",
    "replay_conflicts",
    "operation_stats",
    "table_counts",
}


@IN_EVERY_LAYOUT
def test_diagnostic_has_every_section_and_no_secrets(db: Database) -> None:
    url = db.url.replace("postgres@", "postgres:pgsecret@") if db.backend == "postgres" else db.url
    settings = load_settings(
        database_url=url,
        admin_token="tok-very-secret",
        webhook_urls=["https://hooks.slack.com/services/T000/B000/hooksecret"],
    )
    phases.advance(db.engine, settings, actor="t")
    adapter = DualWriteAdapter(db.engine, settings=db.settings, record_stats=False)
    stats = OperationStats(db.engine, process_id="diag", start=False).attach(adapter)
    adapter.create_transaction("EXCHANGE", 1, "3", "USD")
    stats.flush()
    run_check(db.engine, settings)
    rollback.emergency_rollback(db.engine, settings, actor="oncall", reason="drill")

    report = generate_diagnostic(db.engine, settings)
    text = json.dumps(report, default=_default)
    assert SECTIONS <= report.keys()
    for secret in ("tok-very-secret", "hooksecret", "pgsecret", "T000"):
        assert secret not in text
    errors = {k for k, v in report.items() if isinstance(v, dict) and set(v) == {"error"}}
    assert not errors, {k: report[k] for k in errors}
    assert report["versions"]["database"] == db.engine.dialect.name
    assert report["versions"]["database_server"]
    assert report["config"]["admin_token"] == "***"
    assert report["config"]["webhook_urls"] == ["https://hooks.slack.com/***"]
    assert report["control"]["mode"] == "LEGACY_ONLY" and report["control"]["phase"] == 0
    assert report["control"]["history"]["phase"][0]["metadata"]["emergency"] is True
    assert report["gates"]["phase"] == 0 and report["gates"]["gates"]
    assert report["check_reports"][0]["total"] == 1
    assert report["operation_stats"]["last_hour"]["count"] == 1
    assert report["table_counts"]["unified_transactions"] == 1
    assert report["table_counts"]["exchanges"] == 1
    assert report["repair_queue"]["open"] == 0
    if db.backend == "postgres":  # the test's role is a superuser: it sees everything
        assert report["database_role"] == {"role": "postgres", "reads_all_activity": True}
        connection = report["connection"]
        assert connection["through_a_pooler"] is False
        assert connection["prepared_statements"] is True
        assert connection["write_transactions"] == "read committed"
        assert connection["installed_in"] == (
            db.settings.schema if db.settings.schema != "public" else "public"
        )
    else:
        assert report["database_role"] == {"role": None, "reads_all_activity": None}
        assert report["connection"] == {"database": "sqlite"}


@pytest.mark.postgres
def test_the_diagnostic_says_when_the_role_sees_other_sessions_in_part(pg: Database) -> None:
    """The first thing to look at when the backfill did not slow down beside traffic."""
    with a_role_without_read_all_stats(pg, ALL_ON_PUBLIC) as url:
        engine = create_engine(url)
        try:
            report = generate_diagnostic(engine, pg.settings)
        finally:
            engine.dispose()
    role = report["database_role"]
    assert role["reads_all_activity"] is False
    assert role["role"].startswith("unistatus_test_watcher_")


def test_redaction_without_secrets_configured(db: Database) -> None:
    cfg = redact_settings(db.settings)
    assert cfg["admin_token"] is None and cfg["webhook_urls"] == []
    assert default_filename().startswith("rollback_") and default_filename().endswith(".json")


def test_cli_diagnose_writes_a_file(sqlite_db: Database, tmp_path) -> None:
    out = tmp_path / "diag.json"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["--database-url", sqlite_db.url, "diagnose", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "diagnostic written" in result.output
    assert SECTIONS <= json.loads(out.read_text()).keys()
    bad = runner.invoke(
        app,
        ["--database-url", sqlite_db.url, "diagnose", "--out", str(tmp_path / "no/such/dir.json")],
    )
    assert bad.exit_code == 2 and "cannot write" in bad.output


def test_the_jq_example_of_the_help_finds_the_mode(sqlite_db: Database) -> None:
    """`unistatus diagnose --out - | jq <path>`, as the help shows it, finds a value."""
    runner = CliRunner()
    shown = runner.invoke(app, ["diagnose", "--help"], env={"COLUMNS": "200"})
    examples = [
        line.split("| jq ", 1)[1].strip() for line in shown.stdout.splitlines() if "| jq " in line
    ]
    assert examples, shown.stdout
    r = runner.invoke(
        app, ["--database-url", sqlite_db.url, "diagnose", "--out", "-"], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    value = json.loads(r.stdout)
    for key in examples[0].strip(".").split("."):
        assert isinstance(value, dict) and key in value, (examples[0], key)
        value = value[key]
    assert value == "LEGACY_ONLY"


def test_the_diagnostic_sees_control_rows_that_disagree_with_their_history(db: Database) -> None:
    """A data-only restore lost the control rows: diagnose said LEGACY_ONLY, phase 0 next
    to a history ending in DUAL_WRITE_LEGACY_PRIMARY and did not say they disagree, nor
    that the changes made in UNIFIED_ONLY were never replayed (exploratory restore
    test)."""
    import sqlalchemy as sa

    from support.phases import to_phase
    from unistatus.db.tables import migration_control

    to_phase(db.engine, 1)
    assert generate_diagnostic(db.engine, db.settings)["control"]["disagrees_with_history"] == []
    with db.engine.begin() as conn:
        conn.execute(sa.delete(migration_control))
    doc = generate_diagnostic(db.engine, db.settings)
    found = {
        (d["system"], d["key"], d["control"], d["newest_history"])
        for d in doc["control"]["disagrees_with_history"]
    }
    assert ("ESCROW", "mode", "LEGACY_ONLY", "DUAL_WRITE_LEGACY_PRIMARY") in found, found
    assert ("ESCROW", "phase", "0", "1") in found, found
    assert doc["pending_legacy_changes"]["unreplayed_outside_unified_only"] == {}


def test_the_schema_revisions_are_named_for_what_they_are(db: Database) -> None:
    """It printed ``schema_head: "0006"`` beside ``schema_revision: "0021"``, which read
    as if the database were ahead of the head (0006 is the retire branch's head)."""
    from unistatus.db import schema

    versions = generate_diagnostic(db.engine, db.settings)["versions"]
    assert "schema_head" not in versions, versions
    assert versions["schema_revision"] == schema.INSTALL_REVISION
    assert versions["schema_install_head"] == schema.INSTALL_REVISION
    assert versions["schema_retire_head"] == schema.RETIRE_REVISION
