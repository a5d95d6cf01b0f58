"""`--from-phase N`: a phase step an automation can retry without moving two phases.

`phase advance` and `phase rollback` move one step from wherever the phase is: a step
retried, or run twice at once, moved two. Given the phase it expects to leave, a step
is refused (PhaseMovedError, exit 2, nothing changed) unless the phase is that one,
checked in the transaction that changes it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import Database
from support.race import at_once
from unistatus import PhaseMovedError
from unistatus.api.service import create_app
from unistatus.cli import app
from unistatus.db.control import get_mode, history
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration import phases
from unistatus.migration import rollback as rollback_module
from unistatus.migration.phases import advance
from unistatus.migration.rollback import emergency_rollback, rollback_current_phase

runner = CliRunner()


def _phase(db: Database) -> int:
    return phases.phase_status(db.engine, db.settings).phase


def _to(db: Database, phase: int) -> None:
    while _phase(db) < phase:
        advance(db.engine, db.settings, actor="t", reason="setup", force=True)


def _rollbacks(db: Database) -> int:
    return len(history(db.engine, phases.ROLLBACK_KEY))


def test_a_repeated_rollback_from_the_same_phase_is_refused(db: Database) -> None:
    _to(db, 3)
    first = rollback_current_phase(db.engine, db.settings, actor="t", reason="a", from_phase=3)
    assert (first.from_phase, first.to_phase) == (3, 2)
    with pytest.raises(PhaseMovedError, match="phase 2, not 3") as refused:
        rollback_current_phase(db.engine, db.settings, actor="t", reason="b", from_phase=3)
    assert (refused.value.expected, refused.value.actual) == (3, 2)
    assert _phase(db) == 2 and _rollbacks(db) == 1


def test_a_repeated_advance_from_the_same_phase_is_refused(db: Database) -> None:
    advance(db.engine, db.settings, actor="t", reason="a", force=True, from_phase=0)
    with pytest.raises(PhaseMovedError):
        advance(db.engine, db.settings, actor="t", reason="b", force=True, from_phase=0)
    assert _phase(db) == 1


def test_an_advance_after_an_emergency_rollback_is_refused(db: Database) -> None:
    """The tester's race, in its losing order: dual-write must stay off."""
    _to(db, 3)
    emergency_rollback(db.engine, db.settings, actor="t", reason="incident")
    with pytest.raises(PhaseMovedError):
        advance(db.engine, db.settings, actor="t", reason="go", force=True, from_phase=3)
    assert _phase(db) == 0 and get_mode(db.engine) is DualWriteMode.LEGACY_ONLY


def test_the_phase_is_compared_in_the_transaction_that_changes_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emergency rollback commits after the advance's first look, before its lock."""
    _to(db, 3)
    real = phases.phase_status

    def then_an_emergency(*args: Any, **kwargs: Any) -> Any:
        status = real(*args, **kwargs)
        emergency_rollback(db.engine, db.settings, actor="t", reason="incident")
        return status

    monkeypatch.setattr(phases, "phase_status", then_an_emergency)
    with pytest.raises(PhaseMovedError):
        advance(db.engine, db.settings, actor="t", reason="go", force=True, from_phase=3)
    assert _phase(db) == 0 and get_mode(db.engine) is DualWriteMode.LEGACY_ONLY


def test_a_rollback_that_ran_meanwhile_is_named(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _to(db, 3)
    real = rollback_module._switch
    ran: list[object] = []

    def other_first(*args: Any, **kwargs: Any) -> Any:
        if not ran:
            ran.append("the other")
            rollback_current_phase(db.engine, db.settings, actor="t", reason="a")
        return real(*args, **kwargs)

    monkeypatch.setattr(rollback_module, "_switch", other_first)
    with pytest.raises(PhaseMovedError):
        rollback_current_phase(db.engine, db.settings, actor="t", reason="b", from_phase=3)
    assert _phase(db) == 2 and _rollbacks(db) == 1


def test_two_rollbacks_at_once_move_one_phase(db: Database) -> None:
    _to(db, 3)
    out = at_once(
        lambda r: rollback_current_phase(db.engine, db.settings, actor="t", reason=r, from_phase=3),
        "a",
        "b",
    )
    assert sorted(type(o).__name__ for o in out) == ["PhaseChange", "PhaseMovedError"], out
    assert _phase(db) == 2 and _rollbacks(db) == 1


def _cli(db: Database, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--database-url", db.url, *args], catch_exceptions=False)
    return result.exit_code, result.stdout if "--json" in args else result.output


def test_cli(sqlite_db: Database) -> None:
    db = sqlite_db
    code, out = _cli(db, "phase", "advance", "--force", "--reason", "go", "--from-phase", "1")
    assert code == 2 and "phase 0, not 1" in out
    code, out = _cli(db, "phase", "advance", "--force", "--reason", "go", "--from-phase", "0")
    assert code == 0
    code, out = _cli(db, "phase", "rollback", "--reason", "b", "--from-phase", "2", "--json")
    said = json.loads(out)
    assert code == 2 and said["error"] == "PhaseMovedError" and said["exit_code"] == 2
    assert _phase(db) == 1
    code, out = _cli(db, "phase", "rollback", "--reason", "b", "--from-phase", "1", "--json")
    assert code == 0 and json.loads(out)["from_phase"] == 1
    for command in ("advance", "rollback"):
        code, out = _cli(db, "phase", command, "--help")
        assert "--from-phase" in out


def test_api(sqlite_db: Database) -> None:
    db = sqlite_db
    settings = db.settings.model_copy(update={"admin_token": "t" * 32})
    headers = {"Authorization": "Bearer " + "t" * 32}
    with TestClient(create_app(settings, db.engine)) as c:
        body = {"reason": "go", "force": True, "from_phase": 1}
        r = c.post("/api/v1/control/phase/advance", json=body, headers=headers)
        assert r.status_code == 409 and "phase 0, not 1" in r.json()["detail"], r.text
        body["from_phase"] = 0
        assert c.post("/api/v1/control/phase/advance", json=body, headers=headers).is_success
        body = {"reason": "b", "from_phase": 0}
        r = c.post("/api/v1/control/phase/rollback", json=body, headers=headers)
        assert r.status_code == 409, r.text
    assert _phase(db) == 1
