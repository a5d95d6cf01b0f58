"""The operator's view of a config that maps REFUND_REQUESTED (a value the legacy
application added): `mapping` lists it, `tx update` writes it, the quarantine retry
migrates it once the config names it, `check` agrees; a bad config exits 2 at start."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from conftest import Database
from unistatus.cli import app
from unistatus.config import CONFIG_FILE_ENV
from unistatus.db.tables import legacy_metadata

runner = CliRunner()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = '[mapping.CASHOUT]\nREFUND_REQUESTED = "CANCELLED"\n'


def run(url: str | None, *args: str) -> Result:
    prefix = ["--database-url", url] if url else []
    return runner.invoke(app, [*prefix, *args], catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = CONFIG) -> None:
    path = tmp_path / "unistatus.toml"
    path.write_text(text)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))


def test_mapping_lists_and_validates_the_extra_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(tmp_path, monkeypatch)
    report = as_json(run(None, "mapping", "--validate", "--json"))
    assert report["ok"] is True and report["total_legacy"] == report["total_mapped"] == 39
    assert report["extra"] == [
        {"system": "CASHOUT", "legacy": "REFUND_REQUESTED", "unified": "CANCELLED"}
    ]
    text = run(None, "mapping", "--validate").stdout
    assert "extra: CASHOUT.REFUND_REQUESTED -> CANCELLED" in text
    rows = as_json(run(None, "mapping", "--system", "cashout", "--json"))["mappings"]
    assert len(rows) == 15
    assert rows[-1] == {
        "system": "CASHOUT",
        "legacy": "REFUND_REQUESTED",
        "unified": "CANCELLED",
        "origin": "extra",
    }
    assert "Forward mapping (39 legacy statuses, 1 from the config)" in run(None, "mapping").stdout


def test_tx_update_quarantine_retry_and_check(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = db.url
    # A row the legacy application wrote before anyone configured its new value.
    cashouts = legacy_metadata.tables["cashouts"]
    with db.engine.begin() as conn:
        conn.execute(
            cashouts.insert().values(
                id=500,
                user_id=3,
                amount=12,
                currency="USD",
                status="REFUND_REQUESTED",
                created_at=T0,
                updated_at=T0,
            )
        )
    backfill = as_json(run(url, "backfill", "--json"))
    assert backfill["quarantined"] == 1 and backfill["inserted"] == 0
    assert run(url, "check", "--json").exit_code == 1
    switched = run(url, "mode", "set", "dual_write_legacy_primary", "--reason", "phase 1")
    assert switched.exit_code == 0, switched.output

    _config(tmp_path, monkeypatch)
    retried = as_json(run(url, "backfill", "--retry-quarantine", "--json"))
    assert retried["migrated"] == 1 and retried["still_unmappable"] == 0
    created = as_json(
        run(url, "tx", "create", "--type", "cashout", "--user", "4", "--amount", "9",
            "--currency", "USD", "--json")
    )  # fmt: skip
    ref = f"cashout:{created['legacy_entity_id']}"
    updated = as_json(
        run(url, "tx", "update", ref, "REFUND_REQUESTED", "--reason", "asked", "--json")
    )
    assert (updated["status"], updated["legacy_status"]) == ("CANCELLED", "REFUND_REQUESTED")
    shown = as_json(run(url, "tx", "show", "cashout:500", "--json"))
    assert shown["status"] == "CANCELLED"
    check = run(url, "check", "--json")
    assert check.exit_code == 0, check.stdout
    assert json.loads(check.stdout)["consistent"] == 2


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[mapping.CASHOUT]\nREFUND_REQUESTED = "REFUNDED"\n', "unknown unified status 'REFUNDED'"),
        ('[mapping.CASHOUT]\nSUCCESS = "FAILED"\n', "already a legacy value of CASHOUT"),
        ('[mapping.CASHOUT]\nX = "CANCELLED"\nX = "FAILED"\n', "not valid TOML"),
        ('[mapping.CASHOUT]\nX = "CANCELLED"\n[mapping.cashouts]\nX = "CANCELLED"\n', "twice"),
        ('[mapping.CASHOUT]\nrefund_requested = "CANCELLED"\n', "is not upper case"),
        ('[mapping.PAYROLL]\nX = "CANCELLED"\n', "unknown legacy system 'PAYROLL'"),
    ],
)
@pytest.mark.parametrize("command", [["mapping"], ["mapping", "--validate"], ["check"]])
def test_a_bad_config_exits_2_with_one_line(
    sqlite_db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    toml: str,
    message: str,
    command: list[str],
) -> None:
    _config(tmp_path, monkeypatch, toml)
    result = run(sqlite_db.url, *command)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in result.output
    assert message in err
