"""`unistatus phase ...` and `unistatus rollback --emergency` from the command line."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT, Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.cli import app
from unistatus.clock import utcnow
from unistatus.db.control import get_mode, history
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.migration import phases
from unistatus.migration.check import latest_report, run_check

runner = CliRunner()


ESCROW, EXCHANGE = LegacySystemType.ESCROW, LegacySystemType.EXCHANGE


def _run(db: Database, *args: str, columns: int | None = None) -> tuple[int, str]:
    env = {"COLUMNS": str(columns)} if columns else None
    result = runner.invoke(app, ["--database-url", db.url, *args], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def _gate(db: Database, name: str) -> phases.Gate:
    return next(g for g in phases.phase_status(db.engine, db.settings).gates if g.name == name)


def _dual_writes(db: Database, n: int) -> None:
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        for i in range(n):
            assert adapter.create_transaction("WALLET_CASHOUT", i + 1, Decimal("5"), "USD")


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


def test_check_since_phase_start_of_systems_named_judges_their_phases_only(
    db: Database,
) -> None:
    """Cashouts went ahead into phase 2; escrows and exchanges, both in phase 1, are
    checked together since phase 1 began for them (refused before: "the systems are in
    different phases", of a system not named; a probe)."""
    for system in LegacySystemType:
        assert _run(db, "phase", "advance", "--system", system.value, "--reason", "1")[0] == 0
    assert _run(db, "phase", "advance", "--system", "cashout", "--reason", "2", "--force")[0] == 0
    both = ["--system", "escrow", "--system", "exchange"]
    code, out = _run(db, "check", "--since", "phase-start", *both, "--json")
    assert code == 0, out
    entered = [phases.phase_started_at(db.engine, 1, s) for s in (ESCROW, EXCHANGE)]
    assert json.loads(out)["since"] == min(t for t in entered if t is not None).isoformat()
    code, out = _run(db, "check", "--since", "phase-start", "--system", "cashout", *both)
    assert code == 2 and "different phases" in out and "CASHOUT 2" in out, out


@IN_EVERY_LAYOUT
def test_check_since_phase_start_is_what_the_gate_into_phase_2_reads(db: Database) -> None:
    code, out = _run(db, "check", "--since", "phase-start")
    assert code == 2 and "phase-start" in out and "phase 0" in out  # never entered
    assert _run(db, "phase", "advance", "--reason", "phase 1")[0] == 0
    _dual_writes(db, 5)
    run_check(db.engine, db.settings, since=utcnow())  # covers too little
    gate = _gate(db, "new_transactions_consistent")
    assert not gate.passed and "`unistatus check --since phase-start`" in (gate.detail or "")

    code, out = _run(db, "check", "--since", "phase-start", "--json")
    assert code == 0, out
    report = json.loads(out)
    # When the first system entered phase 1: a check covering each system's gate.
    entered = [phases.phase_started_at(db.engine, 1, s) for s in LegacySystemType]
    first = min(t for t in entered if t is not None)
    assert report["since"] == first.isoformat()
    assert report["total"] == 5 and latest_report(db.engine).id == report["id"]
    gate = _gate(db, "new_transactions_consistent")
    assert gate.passed, gate


def test_the_gate_table_is_readable_at_80_columns(db: Database) -> None:
    """Every gate's name, value, threshold, result and whole detail at 80 columns."""
    _run(db, "phase", "advance", "--reason", "phase 1")
    _dual_writes(db, 3)
    run_check(db.engine, db.settings, since=utcnow())  # the gate names the command to run
    code, out = _run(db, "phase", "status", columns=80)
    assert code == 1
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80 and "\u2026" not in out, out  # no "..."
    flat = " ".join(out.split())
    for gate in phases.phase_status(db.engine, db.settings).gates:
        result = "pass" if gate.passed else "FAIL"
        row = [line.split() for line in lines if line.split()[:1] == [gate.name]]
        assert row == [[gate.name, *str(gate.value).split(), *str(gate.threshold).split(), result]]
        assert " ".join((gate.detail or "").split()) in flat, (gate.detail, out)
    assert "unistatus check --since phase-start" in flat


def test_a_reason_with_brackets_is_printed_as_it_is(db: Database) -> None:
    """The change is made; its report prints the reason and the actor as text (a `[/]`
    in a ticket reference made the command fail after the phase had changed)."""
    code, out = _run(
        db, "phase", "advance", "--reason", "INC [/] 12", "--actor", "[bold]ops", columns=200
    )
    assert code == 0, out
    assert "INC [/] 12" in out and "[bold]ops" in out
    assert phases.phase_status(db.engine, db.settings).phase == 1


def test_a_system_named_twice_is_refused_not_half_done(sqlite_db: Database) -> None:
    """``--system cashout --system escrow`` acted on escrow alone and said it was done (an
    emergency rollback of one of the two systems named). Each of these commands acts on
    one system, or on every system without the option: a repeat is refused, nothing done."""
    db = sqlite_db
    commands = [
        ["mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "t"],
        ["phase", "advance", "--reason", "t", "--force"],
        ["phase", "rollback", "--reason", "t"],
        ["phase", "status"],
        ["rollback", "--emergency", "--reason", "t"],
        ["mode", "get"],
        ["plan"],
    ]
    for command in commands:
        result = runner.invoke(
            app,
            ["--database-url", db.url, *command, "--system", "cashout", "--system", "escrow"],
        )
        assert result.exit_code == 2, (command, result.output)
        assert "--system" in result.stderr and "twice" in result.stderr, (command, result.stderr)
    assert {s: get_mode(db.engine, s) for s in LegacySystemType} == dict.fromkeys(
        LegacySystemType, DualWriteMode.LEGACY_ONLY
    )


def test_phase_status_shows_each_system_when_their_modes_differ_in_one_phase(
    sqlite_db: Database,
) -> None:
    """One system switched by hand (``mode set --system``) leaves every system in phase
    0 but the modes apart: ``phase status`` failed with exit 2 ("the systems are in
    different modes") instead of a line per system."""
    db = sqlite_db
    code, out = _run(
        db, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--system", "cashout", "--reason", "t"
    )
    assert code == 0, out
    code, out = _run(db, "phase", "status", "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert set(shown["systems"]) == {"CASHOUT", "ESCROW", "EXCHANGE"}, shown
    code, out = _run(db, "phase", "status")
    assert code == 0 and "CASHOUT" in out and "ESCROW" in out, out


def test_ctrl_c_of_a_rollback_or_a_retirement_says_what_is_kept(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C mid-replay left the mode and the pending changes as they were (right) but
    the command ended with exit 130 and not a word: an on-call operator was told
    nothing (exploratory review). One line now says what is kept and how to go on."""
    from unistatus.migration import retire, rollback  # noqa: PLC0415

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rollback, "emergency_rollback", interrupted)
    monkeypatch.setattr(rollback, "rollback_current_phase", interrupted)
    monkeypatch.setattr(retire, "retire_legacy_columns", interrupted)
    monkeypatch.setattr(retire, "undo_cleanup", interrupted)
    commands = [
        ["rollback", "--emergency", "--reason", "t"],
        ["phase", "rollback", "--reason", "t"],
        ["retire", "legacy-columns", "--reason", "t"],
        ["retire", "legacy-columns", "--undo", "--reason", "t"],
    ]
    for command in commands:
        result = runner.invoke(app, ["--database-url", sqlite_db.url, *command])
        assert result.exit_code == 130, (command, result.output)
        assert "interrupted:" in result.stderr and "run it again" in result.stderr, command


def test_an_emergency_rollback_of_systems_apart_says_where_each_came_from(
    sqlite_db: Database,
) -> None:
    """Systems in different phases and modes: the report said one "from" no system was
    in (phase 4 of one, the mode of another), and logged it (exploratory review)."""
    db = sqlite_db
    for args in (
        ["mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--system", "escrow", "--reason", "t"],
        ["phase", "advance", "--system", "escrow", "--reason", "t", "--force"],
    ):
        code, out = _run(db, *args)
        assert code == 0, out
    code, out = _run(db, "rollback", "--emergency", "--reason", "mixed", "--json")
    assert code == 0, out
    each = json.loads(out)["from_systems"]
    assert each["CASHOUT"] == {"phase": 0, "mode": "LEGACY_ONLY"}
    assert each["ESCROW"]["phase"] == 1
    logged = [h for h in history(db.engine) if h.key == "last_rollback"][-1]
    assert "ESCROW 1" in logged.new_value and "CASHOUT 0" in logged.new_value


def test_times_labelled_utc_are_in_utc_whatever_the_sessions_time_zone(pg: Database) -> None:
    """psycopg hands back aware times in the session's TimeZone; what is printed with a
    "UTC" label (`phase status`'s "since", `monitor`'s stamp) is converted to UTC."""
    phases.advance(pg.engine, pg.settings, actor="t", reason="phase 1")
    entered = phases.phase_started_at(pg.engine, 1)
    assert entered is not None
    new_york = Database(
        pg.backend, f"{pg.url}?options=-c%20TimeZone%3DAmerica/New_York", pg.engine, pg.settings
    )
    code, out = _run(new_york, "phase", "status", "--system", "cashout", columns=200)
    assert f"since {entered.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" in out, out
    code, out = _run(new_york, "monitor", "--once", columns=200)
    stamp = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", out)
    assert stamp is not None, out
    shown = datetime.fromisoformat(stamp.group(1)).replace(tzinfo=UTC)
    assert abs((utcnow() - shown).total_seconds()) < 600, out
