"""The CLI as an operator uses it: output, JSON shapes and exit codes (0 / 1 / 2)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from support.refusing import by_a_rule, refuse
from unistatus import DualWriteAdapter
from unistatus.cli import app
from unistatus.db import schema
from unistatus.db.control import set_mode
from unistatus.domain import mapping
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.retire import retire_legacy_columns, undo_cleanup

runner = CliRunner()


def run(url: str | None, *args: str) -> Result:
    prefix = ["--database-url", url] if url else []
    return runner.invoke(app, [*prefix, *args], catch_exceptions=False)


def as_json(result: Result) -> object:
    return json.loads(result.stdout)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert err.startswith("error:") and "\n" not in err, err
    return err


def test_help_teaches_with_examples() -> None:
    result = run(None, "--help")
    assert result.exit_code == 0
    for command in ("init", "mapping", "mode", "tx", "demo"):
        assert command in result.stdout
    for args in (["tx", "update", "--help"], ["init", "--help"], ["demo", "--help"]):
        text = run(None, *args).stdout
        assert "Examples" in text and "unistatus " in text


def test_init_is_idempotent_and_seeds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = as_json(run(url, "init", "--json"))
    second = as_json(run(url, "init", "--json"))
    rev = schema.INSTALL_REVISION  # what init installs (retirement's revision comes later)
    # "schema": where unistatus's tables are (the setting; SQLite: always the default).
    base = {
        "revision": rev,
        "schema": "public",
        "seeded": {},
        "detail": None,
        "capture_outdated": False,
        "legacy_tables_problem": None,
    }
    assert first == {**base, "previous_revision": None, "upgraded": True}
    assert second == {**base, "previous_revision": rev, "upgraded": False}
    seeded = run(url, "init", "--demo-data", "90")
    assert seeded.exit_code == 0
    assert "already at revision" in seeded.stdout and "30 cashout" in seeded.stdout


def test_init_on_a_database_whose_cashouts_table_is_another_one_warns(tmp_path: Path) -> None:
    """A database that already has a ``cashouts`` table of something else (the wrong
    database, or another application's): init created the other tables beside it, said
    nothing, and the problem showed only at the gate into phase 1 and at `check` (a
    probe). It still installs (the table is the application's), and says what is wrong."""
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE cashouts (id INTEGER PRIMARY KEY, foo TEXT)")
    url = f"sqlite:///{path}"
    said = run(url, "init")
    assert said.exit_code == 0, said.output
    assert "warning:" in said.stderr and "cashouts" in said.stderr, said.stderr
    out = as_json(run(url, "init", "--json"))
    assert isinstance(out, dict) and "cashouts" in str(out["legacy_tables_problem"]), out


def test_init_on_both_backends(db) -> None:  # type: ignore[no-untyped-def]
    out = as_json(run(db.url, "init", "--demo-data", "30", "--json"))
    assert out["upgraded"] is False and out["revision"] == schema.current_revision(db.engine)
    assert out["seeded"] == {"CASHOUT": 10, "ESCROW": 10, "EXCHANGE": 10}
    assert db.count("escrows") == 10


def test_init_with_demo_data_run_again_seeds_nothing_more(db) -> None:  # type: ignore[no-untyped-def]
    """`init` is safe to re-run, and so is `init --demo-data N`: the second run added N
    rows again (667 per table became 1,334). Demo rows go into empty legacy tables only."""
    assert as_json(run(db.url, "init", "--demo-data", "30", "--json"))["seeded"]["ESCROW"] == 10
    again = as_json(run(db.url, "init", "--demo-data", "30", "--json"))
    assert again["seeded"] == {} and "already hold rows" in again["detail"], again
    assert db.count("escrows") == 10 and db.count("cashouts") == 10
    said = run(db.url, "init", "--demo-data", "30")
    assert said.exit_code == 0 and "not seeded" in said.stdout, said.stdout
    assert "empty" in run(None, "init", "--help").stdout


@pytest.mark.parametrize("seed", ["-1", "-3", "2147483648", "99999999999999999999"])
def test_init_refuses_a_seed_out_of_range(db, seed: str) -> None:  # type: ignore[no-untyped-def]
    err = one_line_error(run(db.url, "init", "--demo-data", "30", "--seed", seed))
    assert "seed" in err and "2147483647" in err
    assert db.count("cashouts") == 0


def test_init_accepts_the_largest_seed(db) -> None:  # type: ignore[no-untyped-def]
    out = as_json(run(db.url, "init", "--demo-data", "30", "--seed", "2147483647", "--json"))
    assert out["seeded"] == {"CASHOUT": 10, "ESCROW": 10, "EXCHANGE": 10}


def test_the_mapping_help_shows_the_config_section_in_brackets() -> None:
    for args in (["mapping", "--help"], ["--help"]):
        shown = runner.invoke(app, args, env={"COLUMNS": "400"}, catch_exceptions=False)
        assert shown.exit_code == 0
        assert "[mapping.CASHOUT]" in shown.stdout, shown.stdout


def test_mapping_validate_refuses_an_unknown_system() -> None:
    err = one_line_error(run(None, "mapping", "--validate", "--system", "bogus"))
    assert "bogus" in err


def test_mapping_takes_system_all_as_the_other_commands_do() -> None:
    every = run(None, "mapping", "--json")
    shown = run(None, "mapping", "--system", "all", "--json")
    assert shown.exit_code == 0, shown.output
    assert as_json(shown) == as_json(every)
    assert run(None, "mapping", "--validate", "--system", "all").exit_code == 0


def test_mapping_table_and_json() -> None:
    text = run(None, "mapping").stdout
    assert "Forward mapping (38 legacy statuses)" in text
    assert "USER_CONFIRM_PENDING" in text and "RATE_LOCKED" in text
    data = as_json(run(None, "mapping", "--json"))
    assert isinstance(data, dict)
    assert len(data["mappings"]) == 38
    assert set(data["types"]) == {"WALLET_CASHOUT", "ESCROW", "EXCHANGE"}
    escrow = data["types"]["ESCROW"]
    assert escrow["reverse"]["RELEASE_PENDING"] == "ACTIVE"
    assert "OTP_PENDING" not in escrow["valid_statuses"]
    only = as_json(run(None, "mapping", "--system", "escrows", "--json"))
    assert isinstance(only, dict) and len(only["mappings"]) == 13
    one_line_error(run(None, "mapping", "--system", "payroll"))


def test_mapping_validate_shape_and_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(None, "mapping", "--validate", "--json")
    assert result.exit_code == 0
    report = as_json(result)
    assert isinstance(report, dict)
    assert report["ok"] is True and report["coverage"] == 1.0 and report["problems"] == []
    assert report["total_legacy"] == report["total_mapped"] == 38
    assert report["legacy"]["ESCROW"] == {"statuses": 13, "mapped": 13}
    assert report["unified_reachable"] == report["unified_total"] == 16
    # Break the mapping data itself: validation must fail with exit code 1.
    monkeypatch.delitem(mapping._FORWARD_STR[LegacySystemType.CASHOUT], "COMPLETED")
    broken = run(None, "mapping", "--validate")
    assert broken.exit_code == 1
    assert (
        "INVALID" in broken.stdout and "CASHOUT.COMPLETED has no unified mapping" in broken.stdout
    )


def test_mode_get_and_set(db) -> None:  # type: ignore[no-untyped-def]
    def every(mode: str) -> dict[str, object]:
        return {"mode": mode, "systems": dict.fromkeys(("CASHOUT", "ESCROW", "EXCHANGE"), mode)}

    assert as_json(run(db.url, "mode", "get", "--json")) == every("LEGACY_ONLY")
    switched = run(db.url, "mode", "set", "dual_write_legacy_primary", "--reason", "start")
    assert switched.exit_code == 0 and "DUAL_WRITE_LEGACY_PRIMARY" in switched.stdout
    assert as_json(run(db.url, "mode", "get", "--json")) == every("DUAL_WRITE_LEGACY_PRIMARY")
    err = one_line_error(run(db.url, "mode", "set", "HALF_AND_HALF", "--reason", "x"))
    assert "unknown mode 'HALF_AND_HALF'" in err
    assert as_json(run(db.url, "mode", "get", "--json")) == every("DUAL_WRITE_LEGACY_PRIMARY")


def test_tx_create_update_show(db) -> None:  # type: ignore[no-untyped-def]
    run(db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "test")
    created = run(
        db.url, "tx", "create", "--type", "WALLET_CASHOUT", "--user", "42",
        "--amount", "150.25", "--currency", "USD", "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    result = as_json(created)
    assert isinstance(result, dict) and result["overall_success"] is True
    utx = result["entity_id"]
    assert utx.startswith("UTX1") and result["status"] == "PENDING"

    ref = f"cashout:{result['legacy_entity_id']}"
    updated = run(db.url, "tx", "update", ref, "OTP_PENDING", "--reason", "otp sent", "--by", "bob")
    assert updated.exit_code == 0 and "OTP_PENDING" in updated.stdout
    legacy_value = run(db.url, "tx", "update", utx, "USER_CONFIRM_PENDING", "--reason", "confirm")
    assert legacy_value.exit_code == 0 and "AWAITING_APPROVAL" in legacy_value.stdout

    shown = as_json(run(db.url, "tx", "show", utx, "--json"))
    assert isinstance(shown, dict)
    assert shown["status"] == "AWAITING_APPROVAL" and shown["source"] == "legacy"
    assert shown["legacy_status"] == "USER_CONFIRM_PENDING"
    assert shown["consistent"] is True and shown["inconsistencies"] == []
    assert [h["to_status"] for h in shown["history"]] == [
        "AWAITING_APPROVAL",
        "OTP_PENDING",
        "PENDING",
    ]
    assert shown["history"][1]["triggered_by"] == "bob"
    text = run(db.url, "tx", "show", ref).stdout
    assert "both sides agree" in text and "recent history" in text

    # A change the rules forbid: exit 2, one line, nothing written.
    history_before = db.count("unified_status_history")
    err = one_line_error(run(db.url, "tx", "update", utx, "SUCCESS", "--reason", "skip"))
    assert "cannot go from AWAITING_APPROVAL to SUCCESS" in err
    assert db.count("unified_status_history") == history_before
    # ... unless forced, which is recorded as an override.
    forced = run(db.url, "tx", "update", utx, "SUCCESS", "--reason", "INC-1", "--force", "--json")
    assert forced.exit_code == 0
    last = as_json(run(db.url, "tx", "show", utx, "--json"))
    assert isinstance(last, dict) and last["history"][0]["override"] is True


def test_tx_show_prints_what_is_stored_as_it_is(db) -> None:  # type: ignore[no-untyped-def]
    """A reason, a name or a legacy value is shown literally, never read as Rich markup:
    a forced change keeps its [override] mark in the table, `[bold]` stays text, and a
    stray `[/]` does not make the transaction impossible to show."""
    run(db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "test")
    created = as_json(
        run(db.url, "tx", "create", "--type", "cashout", "--user", "42",
            "--amount", "150.00", "--currency", "USD", "--json")
    )  # fmt: skip
    assert isinstance(created, dict)
    ref = f"cashout:{created['legacy_entity_id']}"
    forced = run(db.url, "tx", "update", ref, "SUCCESS", "--reason", "ops fix INC-12",
                 "--by", "[bold]alice", "--force")  # fmt: skip
    assert forced.exit_code == 0, forced.output
    again = run(db.url, "tx", "update", ref, "FAILED", "--reason", "see [/] ticket", "--force")
    assert again.exit_code == 0, again.output
    shown = CliRunner().invoke(
        app, ["--database-url", db.url, "tx", "show", ref], env={"COLUMNS": "250"}
    )
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.stdout.split())
    assert "[override]" in flat and "see [/] ticket" in flat and "[bold]alice" in flat, flat


def test_tx_show_never_sends_a_stored_control_character_to_the_terminal(db) -> None:  # type: ignore[no-untyped-def]
    """A legacy value a raw writer stored with an escape sequence (``\\x1b[31m``) or a
    carriage return reached the operator's terminal as it was, recolouring or
    overwriting the line (an auditor); an unmappable value read "status: None". Shown
    escaped, as `check` shows one."""
    run(db.url, "init", "--demo-data", "3")
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE cashouts SET status = 'RED' || char(27) || '[0m' || char(13) WHERE id = 1"
            if db.engine.dialect.name == "sqlite"
            else "UPDATE cashouts SET status = 'RED' || chr(27) || '[0m' || chr(13) WHERE id = 1"
        )
    shown = run(db.url, "tx", "show", "cashout:1")
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.stdout and "\r" not in shown.stdout, repr(shown.stdout)
    assert "'RED\\x1b[0m\\r'" in shown.stdout, shown.stdout
    assert "status: None" not in shown.stdout, shown.stdout


def test_tx_update_in_legacy_only_says_its_reason_is_recorded_nowhere(db) -> None:  # type: ignore[no-untyped-def]
    """The help promised "recorded in the history" (and --force "an audited admin
    override"); LEGACY_ONLY writes the legacy row only, so the reason, the author and the
    override were recorded nowhere, silently (an auditor). It says so, on stderr."""
    run(db.url, "init", "--demo-data", "3")
    changed = CliRunner().invoke(
        app,
        ["--database-url", db.url, "tx", "update", "cashout:1", "FAILED", "--reason",
         "forced reversal INC-7", "--by", "mallory", "--force"],
    )  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert "not recorded" in changed.stderr and "LEGACY_ONLY" in changed.stderr, changed.stderr
    assert db.count("unified_status_history") == 0
    update_help = run(None, "tx", "update", "--help").stdout
    assert "LEGACY_ONLY" in " ".join(update_help.split()), update_help


def test_tx_update_says_what_the_database_refused_as_text(db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The database refuses the unified side of `tx update`: under strict nothing is
    written (exit 2, `error: write failed: ...`; SQLite's refusing trigger is a rule of
    the application's: `error: ... refused by a rule ...`); under primary_wins the change stands
    (exit 0) and `warning: ... (queued for repair)` says why. Each on one line, the
    database's message as text: the refused row it quotes holds a caller's metadata,
    whose "[/]" must not turn either into "unexpected MarkupError" (nor the write that
    stood into exit 2). The log (stderr) has the message in full."""
    run(db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "test")
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        created = adapter.create_transaction(
            "WALLET_CASHOUT", 42, "5", "USD", metadata={"note": "see [/] ticket"}
        )
    ref = f"cashout:{created.legacy_entity_id}"
    with refuse(db, "unified_transactions", "PROCESSING") as constraint:
        monkeypatch.setenv("UNISTATUS_FALLBACK", "strict")
        failed = run(db.url, "tx", "update", ref, "PROCESSING", "--reason", "sent")
        monkeypatch.setenv("UNISTATUS_FALLBACK", "primary_wins")
        stood = run(db.url, "tx", "update", ref, "PROCESSING", "--reason", "sent")
    assert failed.exit_code == 2, failed.output
    said = failed.stderr.strip().splitlines()[-1]
    # SQLite's trigger is a rule of the application's to unistatus: refused, not failed.
    how = "refused by a rule" if by_a_rule(db, "unified_transactions") else "write failed: "
    assert said.startswith("error: ") and how in said and constraint in said, failed.output
    assert stood.exit_code == 0 and "updated" in stood.stdout, stood.output
    (said,) = [line for line in stood.stderr.splitlines() if line.startswith("warning:")]
    assert constraint in said and said.endswith("(queued for repair)"), stood.output
    assert "MarkupError" not in failed.output + stood.output


def test_tx_show_marks_a_change_legacy_refused(db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """primary_wins, unified primary, legacy refuses the change (an application's
    trigger): the change stands, and `tx show` says of its history row that legacy
    refused it and it is queued for repair (JSON: its flag), not that legacy took it."""
    run(db.url, "mode", "set", "DUAL_WRITE_UNIFIED_PRIMARY", "--reason", "test")
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        created = adapter.create_transaction("WALLET_CASHOUT", 42, "5", "USD")
    ref = f"cashout:{created.legacy_entity_id}"
    monkeypatch.setenv("UNISTATUS_FALLBACK", "primary_wins")
    with refuse(db, "cashouts", "EXECUTING"):
        stood = run(db.url, "tx", "update", ref, "PROCESSING", "--reason", "repro", "--by", "u2")
    assert stood.exit_code == 0 and "queued for repair" in stood.stderr, stood.output
    shown = as_json(run(db.url, "tx", "show", ref, "--json"))
    assert isinstance(shown, dict)
    last, first = shown["history"]
    assert (last["to_legacy_status"], last["flag"]) == ("EXECUTING", "legacy_refused"), last
    assert first["flag"] is None
    text = CliRunner().invoke(
        app, ["--database-url", db.url, "tx", "show", ref], env={"COLUMNS": "250"}
    )
    assert text.exit_code == 0, text.output
    flat = " ".join(text.stdout.split())
    assert "PENDING -> EXECUTING refused (queued for repair)" in flat, flat


def test_repair_says_what_the_database_refused_as_text(db) -> None:  # type: ignore[no-untyped-def]
    """A repair the database refuses is listed under the report as text: the refused row
    it quotes holds a caller's metadata, whose "[/]" must not turn the report into
    "unexpected MarkupError" (exit 2, after the repair ran and the rest was written)."""
    run(db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "test")
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        created = adapter.create_transaction(
            "WALLET_CASHOUT", 42, "5", "USD", metadata={"note": "see [/] ticket"}
        )
    with db.engine.begin() as conn:  # legacy moves on behind the adapter's back
        conn.exec_driver_sql(
            f"UPDATE cashouts SET status = 'OTP_PENDING' WHERE id = {created.legacy_entity_id}"
        )
    target = mapping.LegacyStatusMapper().to_unified(LegacySystemType.CASHOUT, "OTP_PENDING")
    with refuse(db, "unified_transactions", target.value) as constraint:
        done = run(db.url, "repair", "--strategy", "legacy_wins", "--reason", "INC-7")
    assert "MarkupError" not in done.output, done.output
    assert done.exit_code == 1, done.output  # an entity failed
    assert constraint in done.stdout and "[/]" not in done.stdout.replace("see [/] ticket", "")


def test_tx_update_needs_a_reason_that_says_something(db) -> None:  # type: ignore[no-untyped-def]
    """`--reason ""` is no reason: refused as every command that changes data refuses
    it (exit 2), nothing written; the help's example names the id `tx create` printed."""
    run(db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "test")
    created = run(db.url, "tx", "create", "--type", "cashout", "--user", "42",
                  "--amount", "150.00", "--currency", "USD")  # fmt: skip
    assert "(cashout:1)" in created.stdout, created.stdout
    before = db.count("unified_status_history")
    for blank in ("", "   "):
        refused = run(db.url, "tx", "update", "cashout:1", "OTP_PENDING", "--reason", blank)
        assert refused.exit_code == 2 and "--reason" in refused.output, refused.output
    assert db.count("unified_status_history") == before
    helped = " ".join(run(None, "tx", "--help").stdout.split())
    assert "tx update cashout:1 OTP_PENDING" in helped, helped


def test_tx_bad_input_is_one_line_exit_2_and_writes_nothing(db) -> None:  # type: ignore[no-untyped-def]
    run(db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "test")
    ok = as_json(
        run(db.url, "tx", "create", "--type", "escrow", "--user", "1", "--amount", "10",
            "--currency", "EUR", "--json")
    )  # fmt: skip
    assert isinstance(ok, dict)
    utx = ok["entity_id"]
    cases = {
        ("tx", "update", utx, "pending", "--reason", "r"): "'pending' is not valid for ESCROW",
        ("tx", "update", utx, "OTP_PENDING", "--reason", "r"): "not valid for ESCROW",
        ("tx", "update", "UTX12", "FAILED", "--reason", "r"): "malformed id 'UTX12'",
        ("tx", "show", "escrow:999999"): "no transaction escrow:999999",
        ("tx", "create", "--type", "loan", "--user", "1", "--amount", "1", "--currency", "USD"): (
            "unknown transaction type 'loan'"
        ),
        ("tx", "create", "--type", "escrow", "--user", "1", "--amount", "1.5x",
         "--currency", "USD"): "is not a decimal number",
        ("tx", "create", "--type", "escrow", "--user", "1", "--amount", "5",
         "--currency", "usd"): "currency must be an upper-case code",
    }  # fmt: skip
    for args, message in cases.items():
        assert message in one_line_error(run(db.url, *args)), args
    assert db.count("escrows") == 1 and db.count("unified_transactions") == 1
    assert db.count("unified_status_history") == 1


def test_unreachable_database_is_one_line_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    one_line_error(run(url, "mode", "get"))
    err = one_line_error(run("mysql://nobody@nowhere/db", "mode", "get"))
    assert "unsupported database" in err


def test_demo_command_exits_0(tmp_path: Path) -> None:
    result = run(None, "demo", "--rows", "150", "--seconds", "0.5", "--threads", "2", "--json")
    assert result.exit_code == 0, result.output
    report = as_json(result)
    assert isinstance(report, dict) and report["ok"] is True
    assert [s["ok"] for s in report["steps"]] == [True] * len(report["steps"])


def test_demo_command_fails_with_exit_1_on_a_bad_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    result = run(url, "demo", "--rows", "10", "--seconds", "0.2")
    assert result.exit_code == 1
    assert "FAILED" in result.stdout


def test_mode_set_and_get_per_system(db) -> None:  # type: ignore[no-untyped-def]
    switched = run(
        db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--system", "Escrow", "--reason", "wk2"
    )
    assert switched.exit_code == 0, switched.output
    assert "mode ESCROW: LEGACY_ONLY -> DUAL_WRITE_LEGACY_PRIMARY" in switched.stdout
    shown = run(db.url, "mode", "get")
    assert shown.exit_code == 0
    lines = [line.split() for line in shown.stdout.strip().splitlines()]
    assert lines == [
        ["mixed"],
        ["CASHOUT", "LEGACY_ONLY"],
        ["ESCROW", "DUAL_WRITE_LEGACY_PRIMARY"],
        ["EXCHANGE", "LEGACY_ONLY"],
    ]
    assert as_json(run(db.url, "mode", "get", "--json")) == {
        "mode": "mixed",
        "systems": {
            "CASHOUT": "LEGACY_ONLY",
            "ESCROW": "DUAL_WRITE_LEGACY_PRIMARY",
            "EXCHANGE": "LEGACY_ONLY",
        },
    }
    assert as_json(run(db.url, "mode", "get", "--system", "escrow", "--json")) == {
        "mode": "DUAL_WRITE_LEGACY_PRIMARY",
        "systems": {"ESCROW": "DUAL_WRITE_LEGACY_PRIMARY"},
    }
    again = as_json(
        run(db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "all", "--json")
    )
    assert isinstance(again, dict)
    assert (
        again["systems_changed"] == ["CASHOUT", "EXCHANGE"] and again["old_value"] == "LEGACY_ONLY"
    )
    assert run(db.url, "mode", "get").stdout.strip() == "DUAL_WRITE_LEGACY_PRIMARY"
    # Set again: nothing changed, and the mode before was that mode (not null).
    same = as_json(
        run(db.url, "mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "again", "--json")
    )
    assert isinstance(same, dict)
    assert same["systems_changed"] == [] and same["changes"] == []
    assert same["old_value"] == same["new_value"] == "DUAL_WRITE_LEGACY_PRIMARY", same
    err = one_line_error(
        run(db.url, "mode", "set", "LEGACY_ONLY", "--system", "bank", "--reason", "x")
    )
    assert "unknown legacy system 'bank'" in err


def test_init_after_the_columns_are_retired_warns_of_nothing(db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The tables' judgement wants the status columns a retirement dropped: `init` run
    again in phase 4 warned "cashouts.status is needed and was dropped" (a review)."""
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="by hand")
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    record_verified(db.engine, verify_archive(db.engine, out), actor="test")
    retire_legacy_columns(db.engine, db.settings)
    try:
        said = run(db.url, "init", "--json")
        assert said.exit_code == 0, said.output
        assert "warning" not in said.stderr, said.stderr
        assert as_json(said)["legacy_tables_problem"] is None  # type: ignore[index]
    finally:
        undo_cleanup(db.engine, db.settings)
