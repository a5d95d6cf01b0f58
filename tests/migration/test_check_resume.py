"""`unistatus check` resumable and bounded: positions per key range, --resume after a
SIGKILL, --max-duration, the stored report's ``complete``, and --out / repair --from.

The kill is real: a child process runs the check and is killed with SIGKILL once the
stored position shows where it is (its range callback blocks on stdin after a known
range; on PostgreSQL also while it waits, mid-range, on a lock the test holds, seen in
``pg_locks``). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from support.check_data import damage, populate
from unistatus.cli import app
from unistatus.config import LegacyTableSpec
from unistatus.db.tables import status_history
from unistatus.db.tables_check import check_runs
from unistatus.errors import ConfigError, InputError
from unistatus.migration.check import latest_report, run_check
from unistatus.migration.gates import gate_check
from unistatus.migration.repair import run_repair

N = 120
CHUNK = 10
CHILD = textwrap.dedent(
    """
    import sys
    from unistatus.config import DEFAULT_SCHEMA, load_settings
    from unistatus.db.engine import create_engine
    from unistatus.migration.check import run_check

    url, pause_at, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    settings = load_settings(database_url=url, schema=DEFAULT_SCHEMA)
    engine = create_engine(url)

    def on_range(system, pos):
        if system.value == "ESCROW" and pos.ranges == pause_at:
            print("paused", flush=True)
            sys.stdin.readline()

    run_check(engine, settings, chunk=CHUNK, examples=3, out=out, on_range=on_range)
    print("finished", flush=True)
    """
).replace("CHUNK", str(CHUNK))


def _cli(db: Any, *args: str) -> Any:
    return CliRunner().invoke(app, ["--database-url", db.url, *args], catch_exceptions=False)


def _counts(report: Any) -> tuple[Any, ...]:
    per = {
        s: (i["total"], i["consistent"], i["inconsistencies"]) for s, i in report.per_system.items()
    }
    return report.total, report.consistent, report.inconsistencies, per


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _stored_ranges(db: Any) -> dict[str, int]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(check_runs.c.system, check_runs.c.ranges).where(
                check_runs.c.finished_at.is_(None)
            )
        ).all()
    return {r.system: int(r.ranges) for r in rows}


def _waiting_on_lock(db: Any, pid: int) -> bool:
    with db.engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE NOT l.granted AND a.application_name <> 'x' AND a.pid <> :me"
                    " AND a.backend_type = 'client backend' AND a.query ILIKE '%check_runs%'"
                ),
                {"me": conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()},
            ).scalar_one()
        )


@pytest.mark.parametrize("mid_range", [False, True], ids=["between_ranges", "mid_range"])
def test_a_run_killed_with_sigkill_resumes_without_skipping_or_double_counting(
    db: Any, tmp_path: Path, mid_range: bool
) -> None:
    if mid_range and db.backend != "postgres":
        pytest.skip("the mid-range kill waits in pg_locks (PostgreSQL)")
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    whole_out = tmp_path / "whole.jsonl"
    whole = run_check(db.engine, db.settings, chunk=CHUNK, examples=3, out=whole_out)
    assert whole.complete and whole.inconsistent > 0

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = tmp_path / "killed.jsonl"
    child = subprocess.Popen(
        [sys.executable, str(script), db.url, "4", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "paused"
        # The position the child committed is the one the test sees.
        assert _stored_ranges(db)["ESCROW"] == 4
        lock = None
        if mid_range:
            # Hold the runs table: the child counts its next range, then waits to commit.
            lock = db.engine.connect()
            lock.begin()
            lock.exec_driver_sql(f"LOCK TABLE {db.table('unistatus_check_runs')} IN SHARE MODE")
            child.stdin.write("go\n")
            child.stdin.flush()
            deadline = time.monotonic() + 30
            while not _waiting_on_lock(db, child.pid):
                assert time.monotonic() < deadline, "the child never waited on the lock"
                time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        if lock is not None:
            lock.rollback()
            lock.close()
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert _stored_ranges(db)["ESCROW"] == 4  # the range in flight was not committed
    assert latest_report(db.engine).id == whole.id  # a killed run stores no report

    resumed = run_check(db.engine, db.settings, resume=True)
    assert resumed.complete and resumed.run != whole.run
    assert _counts(resumed) == _counts(whole)
    assert sorted(_lines(out)) == sorted(_lines(whole_out))  # every line once
    assert len(_lines(out)) == whole.inconsistent
    with pytest.raises(InputError, match="no interrupted check run"):
        run_check(db.engine, db.settings, resume=True)


def test_max_duration_stops_cleanly_stores_an_incomplete_report_and_resumes(db: Any) -> None:
    populate(db.engine, db.settings, N)
    whole = run_check(db.engine, db.settings, chunk=CHUNK)
    stopped = _cli(db, "check", "--max-duration", "0.000001s")
    assert stopped.exit_code == 3, stopped.output
    assert "not a full check (complete: false)" in stopped.output
    assert "cashout 0%" in stopped.output and "--resume" in stopped.output
    report = latest_report(db.engine)
    assert report is not None and not report.complete and report.total == 0
    assert report.per_system["CASHOUT"]["percent"] == 0.0
    # A gate never takes it for a full check: it reads the complete one before it.
    assert latest_report(db.engine, scope="all", complete=True).id == whole.id
    with db.engine.begin() as conn:
        conn.execute(
            sa.delete(sa.table("unistatus_check_reports")).where(sa.column("id") == whole.id)
        )
    gate = gate_check(
        db.engine, "full", after=None, covering_since=None, require_full=True, need_rows=False
    )
    assert not gate.passed and "no complete check report" in str(gate.detail)

    resumed = _cli(db, "check", "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    data = json.loads(resumed.output)
    assert data["complete"] is True and data["total"] == whole.total
    assert data["per_system"]["EXCHANGE"]["percent"] == 100.0
    gate = gate_check(
        db.engine, "full", after=None, covering_since=None, require_full=True, need_rows=False
    )
    assert gate.passed, gate


def test_out_lists_every_mismatch_and_repair_from_repairs_exactly_that_list(
    db: Any, tmp_path: Path
) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    out = tmp_path / "mismatches.jsonl"
    result = _cli(db, "check", "--examples", "1", "--out", str(out))
    assert result.exit_code == 1, result.output
    report = latest_report(db.engine)
    records = [json.loads(line) for line in _lines(out)]
    assert len(records) == report.inconsistent  # every one, not only the examples
    fields = {
        "legacy_status",
        "unified_status",
        "fields",
        "legacy_updated_at",
        "unified_updated_at",
    }
    assert all(fields <= set(r) for r in records)
    mismatch = next(r for r in records if "field_mismatch" in r["kinds"])
    assert mismatch["fields"] and {"field", "legacy", "unified"} == set(mismatch["fields"][0])

    # Only the cashouts' lines: repair touches those and nothing else.
    mine = tmp_path / "cashouts.jsonl"
    mine.write_text("".join(line + "\n" for line in _lines(out) if '"CASHOUT"' in line))
    dry = _cli(
        db, "repair", "--from", str(mine), "--strategy", "legacy_wins", "--dry-run", "--json"
    )
    assert dry.exit_code == 1, dry.output  # orphans and unmappable rows are left
    planned = json.loads(dry.output)
    assert planned["dry_run"] and planned["would_repair"] > 0
    assert planned["repair_queue"]["seen"] == 0
    assert db.count("unified_status_history") == 0
    done = _cli(
        db, "repair", "--from", str(mine), "--strategy", "legacy_wins", "--reason", "t", "--json"
    )
    assert json.loads(done.output)["repaired"] == planned["would_repair"]
    after = run_check(db.engine, db.settings)
    left = {k: v for k, v in after.per_system["CASHOUT"]["inconsistencies"].items() if v}
    assert set(left) <= {"orphan_unified", "unmappable_legacy", "missing_unified"}
    assert after.per_system["ESCROW"] == report.per_system["ESCROW"] | {
        "started_at": after.per_system["ESCROW"]["started_at"]
    }


@pytest.mark.parametrize(
    "line, why",
    [
        ("{not json", "not JSON"),
        ('{"system": "PAYPAL", "legacy_id": 1}', "unknown legacy system"),
        ('{"system": "CASHOUT", "legacy_id": "7"}', "legacy_id must be an integer"),
        ('{"system": "CASHOUT"}', "neither legacy_id nor transaction_id"),
        # Beyond a BIGINT: SQLite crashed mid-run (OverflowError) after line 1 was
        # repaired, PostgreSQL counted it failed; an id below 1 names no row.
        ('{"system": "CASHOUT", "legacy_id": 9223372036854775808}', "legacy_id out of range"),
        ('{"system": "CASHOUT", "legacy_id": 0}', "legacy_id out of range"),
        # A system or legacy id the UTX id contradicts: the line names two entities
        # (taken for an orphan before, nothing repaired).
        (
            '{"system": "CASHOUT", "transaction_id": "UTX200000000000003"}',
            "transaction_id UTX200000000000003 is escrow:3, not a CASHOUT id",
        ),
        (
            '{"system": "ESCROW", "legacy_id": 4, "transaction_id": "UTX200000000000003"}',
            "legacy_id 4 disagrees with transaction_id UTX200000000000003 (escrow:3)",
        ),
        (
            '{"system": "CASHOUT", "transaction_id": "UTX12"}',
            "transaction_id 'UTX12' is not a UTX id",
        ),
        (
            '{"system": "CASHOUT", "transaction_id": "UTX100000000000000"}',
            "transaction_id 'UTX100000000000000' is not a UTX id",
        ),
    ],
)
def test_repair_from_refuses_a_malformed_file_naming_the_line_and_writes_nothing(
    db: Any, tmp_path: Path, line: str, why: str
) -> None:
    populate(db.engine, db.settings, 10)
    damage(db.engine, db.settings, 10)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"system": "CASHOUT", "legacy_id": 2}\n' + line + "\n")
    result = _cli(db, "repair", "--from", str(bad), "--strategy", "legacy_wins", "--reason", "t")
    assert result.exit_code == 2, result.output
    assert f"bad.jsonl:2: {why}" in " ".join(result.output.split())
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(status_history)).scalar() == 0
    with pytest.raises(InputError, match=":2:"):
        run_repair(db.engine, db.settings, strategy="legacy_wins", dry_run=True, from_file=bad)


def test_repair_from_a_line_naming_only_the_transaction_id_repairs_its_entity(
    db: Any, tmp_path: Path
) -> None:
    """A line naming its entity by transaction_id alone was taken for an orphan
    (skipped, orphan_unified) and the mismatch left as it was: the legacy id is the
    one the UTX id was derived from."""
    populate(db.engine, db.settings, 10)
    damage(db.engine, db.settings, 10)
    out = tmp_path / "m.jsonl"
    before = run_check(db.engine, db.settings, out=out)
    record = next(
        r
        for r in map(json.loads, _lines(out))
        if r["system"] == "ESCROW" and "status_mismatch" in r["kinds"]
    )
    listed = tmp_path / "by_utx.jsonl"
    listed.write_text(
        json.dumps({"system": "ESCROW", "transaction_id": record["transaction_id"]}) + "\n"
    )
    result = _cli(
        db, "repair", "--from", str(listed), "--strategy", "legacy_wins", "--reason", "t", "--json"
    )
    data = json.loads(result.stdout)
    assert (data["repaired"], data["skipped"]) == (1, {}), result.output
    assert result.exit_code == 0, result.output
    after = run_check(db.engine, db.settings)
    mismatches = after.per_system["ESCROW"]["inconsistencies"]["status_mismatch"]
    assert mismatches == before.per_system["ESCROW"]["inconsistencies"]["status_mismatch"] - 1


def test_repair_from_a_line_with_the_transaction_id_and_no_system_repairs_its_entity(
    db: Any, tmp_path: Path
) -> None:
    """docs/repair.md: "a line may name its entity by transaction_id alone"; such a
    line was refused ("no 'system'", exit 2) though its UTX id says the system."""
    populate(db.engine, db.settings, 10)
    damage(db.engine, db.settings, 10)
    out = tmp_path / "m.jsonl"
    run_check(db.engine, db.settings, out=out)
    record = next(
        r
        for r in map(json.loads, _lines(out))
        if r["system"] == "EXCHANGE" and "status_mismatch" in r["kinds"]
    )
    listed = tmp_path / "utx_only.jsonl"
    listed.write_text(json.dumps({"transaction_id": record["transaction_id"]}) + "\n")
    result = _cli(
        db, "repair", "--from", str(listed), "--strategy", "legacy_wins", "--reason", "t", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["repaired"], data["skipped"]) == (1, {}), result.output
    assert data["actions"][0]["system"] == "EXCHANGE"


def test_repair_from_counts_entities_that_exist_nowhere_as_not_found(
    db: Any, tmp_path: Path
) -> None:
    """A line naming an entity neither side holds (stale ids, a file from another
    database) was counted "already consistent", exit 0: it looked repaired."""
    populate(db.engine, db.settings, 10)
    listed = tmp_path / "other.jsonl"
    listed.write_text(
        '{"system": "CASHOUT", "legacy_id": 99999999}\n{"system": "CASHOUT", "legacy_id": 1}\n'
    )
    result = _cli(
        db, "repair", "--from", str(listed), "--strategy", "legacy_wins", "--dry-run", "--json"
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert (data["not_found"], data["already_consistent"]) == (1, 1)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = _cli(db, "repair", "--from", str(empty), "--strategy", "legacy_wins", "--dry-run")
    assert result.exit_code == 0 and "lists no entity" in " ".join(result.output.split())


def test_a_run_another_process_walks_is_not_resumed_twice(db: Any) -> None:
    """Two `check --resume` at once both walked the same run: ranges counted twice and
    its --out file's lines doubled. While one process holds the run, a resume of it is
    refused before anything is counted; once it lets go, the resume goes on."""
    from unistatus.migration.check_claim import claim_run
    from unistatus.migration.check_runs import latest_unfinished

    populate(db.engine, db.settings, N)
    whole = run_check(db.engine, db.settings, chunk=CHUNK, store=False)
    stopped = run_check(db.engine, db.settings, chunk=CHUNK, max_duration=0.000001)
    assert not stopped.complete
    with db.engine.connect() as conn:
        name = latest_unfinished(conn)
    assert name is not None
    with claim_run(db.engine, name):  # another process walks it
        with pytest.raises(InputError, match="being walked by another process"):
            run_check(db.engine, db.settings, resume=True)
        busy = _cli(db, "check", "--resume")
        assert busy.exit_code == 2 and "another process" in busy.output, busy.output
    resumed = run_check(db.engine, db.settings, resume=True)
    assert resumed.complete and resumed.total == whole.total


class _Stop(Exception):
    """Stands for a kill: the run stops after a committed range, its report unstored."""


def _interrupted(db: Any, out: Path) -> str:
    """A run with --out stopped after ESCROW's 4th range (every cashout line written);
    its name. The whole run's counts are those of a fresh check."""

    def stop(system: Any, pos: Any) -> None:
        if system.value == "ESCROW" and pos.ranges == 4:
            raise _Stop

    with pytest.raises(_Stop):
        run_check(db.engine, db.settings, chunk=CHUNK, examples=3, out=out, on_range=stop)
    from unistatus.migration.check_runs import latest_unfinished

    with db.engine.connect() as conn:
        name = latest_unfinished(conn)
    assert name is not None and _stored_ranges(db)["ESCROW"] == 4
    return name


def test_resume_refuses_an_out_file_moved_or_cut_short_and_goes_on_once_it_is_back(
    db: Any, tmp_path: Path
) -> None:
    """A resume after the --out file was moved made a new one, filled with NUL bytes up
    to the committed size: the committed ranges' lines lost, `repair --from` then
    failing with "not JSON", and the report complete. Refused now, nothing changed."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    whole_out = tmp_path / "whole.jsonl"
    whole = run_check(db.engine, db.settings, chunk=CHUNK, examples=3, out=whole_out)
    out, away = tmp_path / "m.jsonl", tmp_path / "moved.jsonl"
    _interrupted(db, out)
    written = out.read_bytes()
    assert written and b"\0" not in written

    out.rename(away)
    with pytest.raises(InputError, match=r"--out .*m\.jsonl.* (gone|missing|no such)"):
        run_check(db.engine, db.settings, resume=True)
    assert not out.exists() and _stored_ranges(db)["ESCROW"] == 4
    refused = _cli(db, "check", "--resume")
    assert refused.exit_code == 2 and "--out" in refused.output, refused.output
    assert not out.exists()

    out.write_bytes(written[: len(written) // 2])  # a copy cut short
    with pytest.raises(InputError, match=r"--out .*m\.jsonl.* shorter"):
        run_check(db.engine, db.settings, resume=True)
    assert out.read_bytes() == written[: len(written) // 2]
    assert _stored_ranges(db)["ESCROW"] == 4

    away.replace(out)  # back where it was: the run goes on
    resumed = run_check(db.engine, db.settings, resume=True)
    assert resumed.complete and _counts(resumed) == _counts(whole)
    assert sorted(_lines(out)) == sorted(_lines(whole_out))


def test_a_new_run_whose_out_cannot_be_opened_stores_nothing_and_resume_keeps_the_earlier(
    db: Any, tmp_path: Path
) -> None:
    """`check --out` into a missing directory failed (exit 2) after storing its run:
    every later `check --resume` took that run and failed with the same error, and the
    interrupted run before it could never be resumed. The file is opened first now."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    whole_out = tmp_path / "whole.jsonl"
    whole = run_check(db.engine, db.settings, chunk=CHUNK, examples=3, out=whole_out)
    out = tmp_path / "m.jsonl"
    name = _interrupted(db, out)
    with db.engine.connect() as conn:
        runs_before = conn.execute(sa.select(sa.func.count()).select_from(check_runs)).scalar()

    failed = _cli(db, "check", "--out", str(tmp_path / "no" / "such" / "dir" / "m.jsonl"))
    assert failed.exit_code == 2 and "--out" in failed.output, failed.output

    resumed = run_check(db.engine, db.settings, resume=True)
    assert resumed.complete and resumed.run == name
    with db.engine.connect() as conn:  # the failed run left no row
        assert conn.execute(sa.select(sa.func.count()).select_from(check_runs)).scalar() == (
            runs_before
        )
    assert _counts(resumed) == _counts(whole)
    assert sorted(_lines(out)) == sorted(_lines(whole_out))


def test_a_new_run_whose_legacy_tables_cannot_be_read_stores_nothing(
    db: Any, tmp_path: Path
) -> None:
    """A check whose configured legacy table is missing fails (a ConfigError) before it
    reads anything: it leaves no run behind for --resume to take instead of the run
    interrupted before it."""
    populate(db.engine, db.settings, N)
    name = _interrupted(db, tmp_path / "m.jsonl")
    wrong = db.settings.model_copy(
        update={
            "legacy_tables": {
                **db.settings.legacy_tables,
                "ESCROW": LegacyTableSpec(table="no_such_escrows"),
            }
        }
    )
    with pytest.raises(ConfigError):
        run_check(db.engine, wrong, chunk=CHUNK)
    resumed = run_check(db.engine, db.settings, resume=True)
    assert resumed.complete and resumed.run == name


@pytest.mark.parametrize(
    "option", [["--system", "escrow"], ["--examples", "0"]], ids=["system", "examples"]
)
def test_resume_refuses_the_options_of_a_new_run_as_it_refuses_since_and_out(
    db: Any, tmp_path: Path, option: list[str]
) -> None:
    """`check --resume --system escrow` or `--examples 0` ignored the option silently
    (the run went on with its own), while --since and --out were refused."""
    populate(db.engine, db.settings, N)
    _interrupted(db, tmp_path / "m.jsonl")
    refused = _cli(db, "check", "--resume", *option)
    assert refused.exit_code == 2, refused.output
    assert "a resumed run keeps its own" in " ".join(refused.output.split())
    assert _stored_ranges(db)["ESCROW"] == 4
    with pytest.raises(InputError, match="a resumed run keeps its own"):
        run_check(db.engine, db.settings, resume=True, examples=0)
    assert run_check(db.engine, db.settings, resume=True).complete


def _mismatch_file(db: Any, tmp_path: Path) -> Path:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    out = tmp_path / "mismatches.jsonl"
    assert _cli(db, "check", "--out", str(out)).exit_code == 1
    cashouts = tmp_path / "cashouts.jsonl"
    cashouts.write_text("".join(line + "\n" for line in _lines(out) if '"CASHOUT"' in line))
    return cashouts


def test_repair_from_a_pipe_repairs_what_the_pipe_lists(db: Any, tmp_path: Path) -> None:
    """The file was read twice (validated, then acted on): from a pipe the second read
    found nothing, "would repair 0 entities ... lists no entity", exit 0 (a probe)."""
    import os
    import threading

    listed = _mismatch_file(db, tmp_path)
    from_file = run_repair(
        db.engine, db.settings, strategy="legacy_wins", dry_run=True, from_file=listed
    )
    assert from_file.repaired > 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(listed.read_bytes()), daemon=True)
    feeder.start()
    got: list[Any] = []
    repair = threading.Thread(
        target=lambda: got.append(
            run_repair(db.engine, db.settings, strategy="legacy_wins", dry_run=True, from_file=fifo)
        ),
        daemon=True,
    )
    repair.start()
    repair.join(timeout=60)
    if repair.is_alive():  # it opened the pipe again, for a writer that never comes
        fifo.write_bytes(b"")
        repair.join(timeout=30)
        pytest.fail("repair --from a pipe read it twice: its second read found no writer")
    assert got and got[0].repaired == from_file.repaired


def test_repair_from_acts_on_the_file_it_validated(db: Any, tmp_path: Path) -> None:
    """A line appended to the file while the repair ran: validated, then read again to
    act on, the file refused at that line after 3,000 repairs had committed, saying
    nothing of them (a probe). The file is read once: what was validated is repaired."""
    from unistatus.migration import repair as repair_module

    listed = _mismatch_file(db, tmp_path)
    before = listed.read_text()
    real = repair_module._Repairer.entity
    calls = 0

    def entity_then_append(self: Any, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            with listed.open("a") as f:
                f.write("garbage\n")
        real(self, *args)

    repair_module._Repairer.entity = entity_then_append  # type: ignore[method-assign]
    try:
        report = run_repair(
            db.engine, db.settings, strategy="legacy_wins", reason="t", from_file=listed
        )
    finally:
        repair_module._Repairer.entity = real  # type: ignore[method-assign]
    assert listed.read_text() == before + "garbage\n"
    assert report.repaired > 0 and calls == len(_lines(tmp_path / "cashouts.jsonl")) - 1


def test_repair_from_names_the_line_of_a_byte_that_is_no_utf8(db: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"system": "CASHOUT", "legacy_id": 2}\n{"system": "CASH\xffOUT"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: not UTF-8 text"):
        run_repair(db.engine, db.settings, strategy="legacy_wins", dry_run=True, from_file=bad)


def test_repair_from_with_another_system_says_it_lists_none_of_that_system(
    db: Any, tmp_path: Path
) -> None:
    """It said the file "lists no entity" of a file of 40 lines, all of other systems."""
    listed = _mismatch_file(db, tmp_path)
    result = _cli(
        db, "repair", "--from", str(listed), "--system", "exchange", "--strategy",
        "legacy_wins", "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "lists no entity of exchange: nothing to repair" in " ".join(result.output.split())


@pytest.mark.parametrize("out", ["/dev/null", "-"])
def test_check_out_refuses_what_is_no_regular_file(db: Any, out: str) -> None:
    """A FIFO got every line, then the run failed "Invalid argument" (fsync), and a run
    stored with /dev/null as its file failed each --resume; "-" made a file named "-"
    (a probe)."""
    populate(db.engine, db.settings, 10)
    result = _cli(db, "check", "--out", out)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert ("not a regular file" if out != "-" else "not stdout") in said, said
    assert _stored_ranges(db) == {}


def test_an_interrupted_repair_from_a_file_says_the_command_to_go_on_with(
    db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said `unistatus repair --from FILE`: without --system (every system's lines
    repaired), --strategy or --reason, the path unquoted (a review)."""
    from unistatus.migration import repair as repair_module

    listed = tmp_path / "my mismatches.jsonl"
    listed.write_text('{"system": "CASHOUT", "legacy_id": 1}\n')
    report = run_repair(db.engine, db.settings, strategy="legacy_wins", dry_run=True)

    def interrupted(*_: Any, **__: Any) -> Any:
        raise repair_module.RepairInterrupted(report)

    monkeypatch.setattr(repair_module, "run_repair", interrupted)
    result = _cli(
        db, "repair", "--from", str(listed), "--system", "cashout", "--strategy",
        "legacy_wins", "--limit", "100", "--actor", "alice", "--reason", "[hotfix] INC 42",
    )  # fmt: skip
    assert result.exit_code == 130, result.output
    said = " ".join(result.output.split())
    # Shown as it is, not read as markup ("[hotfix]" vanished: a second review).
    assert (
        f"unistatus repair --strategy legacy_wins --from '{listed}' --system cashout "
        "--limit 100 --actor alice --reason '[hotfix] INC 42'"
    ) in said, said


@pytest.mark.parametrize("given", ["inf", "1e400", "infs", "nan"])
def test_max_duration_refuses_an_infinite_or_no_number(given: str) -> None:
    """ "inf" and 1e400 were taken as no bound at all ("nan" was refused: a probe)."""
    from unistatus.migration.check_times import parse_duration

    with pytest.raises(InputError, match="give a duration like 90s"):
        parse_duration(given)
