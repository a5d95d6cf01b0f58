"""Capture triggers an earlier release installed are not trusted with a mode that writes
unified: an upgrade leaves them as they were (``init`` warns), and the triggers of a
release before per-system modes read the one global mode, which a switch of one system
no longer keeps. A gate into phases 1 to 3 and ``mode set`` (CLI and API) refuse until
``capture enable`` generates them again; a switch to LEGACY_ONLY (a rollback) never is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import Database
from support.capture_data import captured, outdate_capture
from unistatus.api.service import create_app
from unistatus.cli import app
from unistatus.db.control import get_mode, set_mode
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration import capture
from unistatus.migration.phases import phase_status

ADMIN = "admin-token-0123456789"
CASHOUT = LegacySystemType.CASHOUT


@pytest.fixture
def outdated(db: Database) -> Iterator[Database]:
    with captured(db):
        outdate_capture(db)
        assert capture.status(db.engine, db.settings).sql_changed
        yield db


def _gate(db: Database) -> dict[str, object]:
    gates = {g.name: g for g in phase_status(db.engine, db.settings).gates}
    return gates["capture_current"].as_dict()


def test_a_gate_refuses_the_next_phase_until_capture_is_enabled_again(outdated: Database) -> None:
    gate = _gate(outdated)
    assert gate["passed"] is False
    assert "unistatus capture enable" in str(gate["detail"])
    assert "earlier unistatus" in str(gate["detail"])
    capture.enable(outdated.engine, outdated.settings, actor="test", reason="this release's")
    assert _gate(outdated)["passed"] is True
    # Into phase 2 as well (phase 1 entered, dual writes on).
    set_mode(outdated.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="t", actor="t")
    outdate_capture(outdated)
    assert _gate(outdated)["passed"] is False


def test_no_gate_of_the_capture_where_it_is_not_enabled(db: Database) -> None:
    names = {g.name for g in phase_status(db.engine, db.settings).gates}
    assert "capture_current" not in names


def test_mode_set_refuses_a_mode_that_writes_unified_and_leaves_legacy_only_free(
    outdated: Database,
) -> None:
    runner = CliRunner()
    base = ["--database-url", outdated.url]
    refused = runner.invoke(
        app,
        [*base, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--system", "cashout", "--reason", "x"],
    )
    assert refused.exit_code != 0, refused.output
    said = " ".join(refused.output.split())
    assert "unistatus capture enable" in said and "nothing changed" in said, said
    assert get_mode(outdated.engine, CASHOUT) is M.LEGACY_ONLY
    # --force goes through, and the log says over what.
    forced = runner.invoke(
        app,
        [*base, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--system", "cashout"]
        + ["--reason", "INC-9", "--force", "--json"],
    )
    assert forced.exit_code == 0, forced.output
    assert get_mode(outdated.engine, CASHOUT) is M.DUAL_WRITE_LEGACY_PRIMARY
    assert "forced_over_stale_capture" in json.loads(forced.stdout)["metadata"]
    # Back to LEGACY_ONLY (a rollback) is never held up by the capture.
    back = runner.invoke(app, [*base, "mode", "set", "LEGACY_ONLY", "--reason", "back"])
    assert back.exit_code == 0, back.output
    assert get_mode(outdated.engine, CASHOUT) is M.LEGACY_ONLY


def test_the_api_refuses_it_alike(outdated: Database) -> None:
    settings = outdated.settings.model_copy(update={"admin_token": ADMIN})
    client = TestClient(create_app(settings, outdated.engine))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    body = {"mode": "DUAL_WRITE_LEGACY_PRIMARY", "system": "CASHOUT", "reason": "x"}
    r = client.put("/api/v1/control/mode", json=body, headers=headers)
    assert r.status_code == 409, r.text
    assert "unistatus capture enable" in r.json()["detail"]
    assert get_mode(outdated.engine, CASHOUT) is M.LEGACY_ONLY
    r = client.put("/api/v1/control/mode", json={**body, "force": True}, headers=headers)
    assert r.status_code == 200, r.text
    assert get_mode(outdated.engine, CASHOUT) is M.DUAL_WRITE_LEGACY_PRIMARY
