"""`unistatus phase ...` and `unistatus rollback --emergency` from the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT, Database
from unistatus.cli import app
from unistatus.db.control import get_mode, history
from unistatus.domain.statuses import DualWriteMode

runner = CliRunner()


def _run(db: Database, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--database-url", db.url, *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_phase_status_json_and_table(db: Database) -> None:
    code, out = _run(db, "phase", "status", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["phase"] == 0 and data["mode"] == "LEGACY_ONLY"
    assert data["gates"][0].keys() >= {"name", "value", "threshold", "passed"}
    code, out = _run(db, "phase", "status")
    assert code == 0 and "mapping_validation" in out and "pass" in out


@IN_EVERY_LAYOUT
def test_phase_advance_gated_forced_and_rollback(db: Database) -> None:
    assert _run(db, "phase", "advance", "--actor", "alice", "--reason", "phase 1")[0] == 0
    code, out = _run(db, "phase", "status")
    assert code == 1 and "FAIL" in out and "error_rate" in out  # not ready: exit 1
    code, out = _run(db, "phase", "advance", "--reason", "try")
    assert code == 2 and "gate(s) failing" in out and "FAIL" in out
    code, out = _run(db, "phase", "advance", "--force")
    assert code == 2 and "--reason" in out  # required: a usage error
    code, out = _run(db, "phase", "advance", "--force", "--reason", "drill", "--json")
    assert code == 0
    change = json.loads(out)
    assert change["to_phase"] == 2 and "error_rate" in change["forced"]
    assert history(db.engine, "phase")[0].reason == "drill"
    code, out = _run(db, "phase", "rollback", "--reason", "backfill too slow")
    assert code == 0 and "backfill undo" in out
    assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY


def test_rollback_requires_emergency_flag(db: Database) -> None:
    _run(db, "phase", "advance", "--reason", "phase 1")
    code, out = _run(db, "rollback")
    assert code == 2 and "--emergency" in out and "phase rollback" in out
    assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY  # nothing done
    code, out = _run(db, "rollback", "--emergency", "--reason", "drill", "--json")
    assert code == 0 and json.loads(out)["to_mode"] == "LEGACY_ONLY"
    assert get_mode(db.engine) is DualWriteMode.LEGACY_ONLY
