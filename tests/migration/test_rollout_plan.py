"""`unistatus plan`: the phases ahead measured now, estimates from this database, and
nothing written (compared row by row, and on a database that refuses every write)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT, Database
from support.adapters import TABLES, adapter_in
from support.capture_data import captured
from support.phases import to_phase
from unistatus.backfill import run_backfill
from unistatus.cli import app
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.migration.archive import export_archive
from unistatus.migration.replay import pending_count
from unistatus.migration.rollback import emergency_rollback
from unistatus.migration.rollout_figures import cost_from, grown_cost
from unistatus.migration.rollout_plan import PLAN_FORMAT, rollout_plan
from unistatus.sim.seed import seed_legacy


def everything(db: Database) -> dict[str, Any]:
    """Every row of every table (operation statistics included), and on PostgreSQL
    every sequence's position: what "writes nothing" is compared on."""
    out: dict[str, Any] = {}
    with db.engine.connect() as conn:
        for name in [*TABLES, "unistatus_operation_stats"]:
            rows = conn.execute(sa.text(f"SELECT * FROM {db.table(name)}")).all()
            out[name] = sorted(repr(tuple(r)) for r in rows)
        if db.backend == "postgres":
            seqs = conn.execute(
                sa.text("SELECT schemaname, sequencename, last_value FROM pg_sequences")
            ).all()
            out["sequences"] = sorted(repr(tuple(r)) for r in seqs)
    return out


def read_only(db: Database) -> Iterator[sa.Engine]:
    """The same database through connections that refuse any write."""
    if db.backend == "postgres":
        engine = create_engine(
            db.url,
            schema=db.settings.schema,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
    else:
        engine = create_engine(db.url)

        @sa.event.listens_for(engine, "connect")
        def _query_only(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA query_only=ON")

    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def ro_engine(db: Database) -> Iterator[sa.Engine]:
    yield from read_only(db)


def test_read_only_engine_refuses_writes(db: Database, ro_engine: sa.Engine) -> None:
    """The fixture proves what it is used for: a write through it fails."""
    with pytest.raises(sa.exc.DBAPIError), ro_engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {db.table('unistatus_control')}"))


@IN_EVERY_LAYOUT
def test_gates_counts_and_rollbacks_read_only(db: Database, ro_engine: sa.Engine) -> None:
    """Without samples the whole plan runs on a database that refuses every write."""
    seed_legacy(db.engine, db.settings, 90)
    plan = rollout_plan(ro_engine, db.settings, sample_rows=0)
    assert plan.phase == 0 and [p.phase for p in plan.phases] == [1, 2, 3, 4]
    assert plan.phases[0].next and plan.phases[0].ready  # the mapping gate passes
    assert {g.name for g in plan.phases[2].gates} >= {"full_check_consistent", "quarantine"}
    assert all(f.legacy_rows == 30 and f.missing_unified == 30 for f in plan.figures.values())
    assert plan.estimate_seconds == 0.0 and "rates not measured" in plan.notes[-1]
    assert plan.phases[3].wait_seconds == db.settings.soak_seconds  # the soak is ahead
    # In phase 3 only the check is ahead: its sample only reads.
    to_phase(db.engine, 3)
    plan = rollout_plan(ro_engine, db.settings, sample_rows=10)
    assert [p.phase for p in plan.phases] == [4]
    soak = db.settings.soak_seconds  # unified primary since to_phase: nearly all of it left
    assert soak - 60 < plan.phases[0].wait_seconds < soak
    # The check's sample grows past the 10 rows asked while its fixed part outweighs them.
    assert all(f.check and 10 <= f.check.sample_rows <= 30 for f in plan.figures.values())


@IN_EVERY_LAYOUT
def test_samples_write_nothing(db: Database) -> None:
    """The backfill's statement runs on a sample and is rolled back: every row of every
    table (and every sequence) is as it was."""
    seed_legacy(db.engine, db.settings, 300)
    run_backfill(db.engine, db.settings, systems=[LegacySystemType.ESCROW])
    before = everything(db)
    plan = rollout_plan(db.engine, db.settings, sample_rows=50)
    assert everything(db) == before
    escrow, cashout = plan.figures[LegacySystemType.ESCROW], plan.figures[LegacySystemType.CASHOUT]
    assert escrow.missing_unified == 0 and escrow.backfill_seconds() == 0.0
    assert cashout.missing_unified == 100
    assert cashout.backfill and cashout.backfill.sample_rows == 50 and cashout.check
    assert plan.summary()["changed"] == 0


@IN_EVERY_LAYOUT
def test_nothing_written_with_capture_enabled(db: Database, ro_engine: sa.Engine) -> None:
    """With the capture's triggers on, the rolled-back sample leaves no captured change,
    and the bypass gate (which reads the capture's state) reads only."""
    seed_legacy(db.engine, db.settings, 60)
    to_phase(db.engine, 1)
    with captured(db):
        before = everything(db)
        plan = rollout_plan(db.engine, db.settings, sample_rows=10)
        assert everything(db) == before
        assert all(f.backfill for f in plan.figures.values())
        to_phase(db.engine, 3)
        plan = rollout_plan(ro_engine, db.settings, sample_rows=10)
        gates = {g.name: g for g in plan.phases[0].gates}
        assert "capture not enabled" not in str(gates["no_bypass_writes_in_soak"].value)


def test_estimates_come_from_this_database(db: Database) -> None:
    """Ten times the rows, a bigger estimate: rows counted here, costs timed here."""
    seed_legacy(db.engine, db.settings, 300)
    small = rollout_plan(db.engine, db.settings, sample_rows=100)
    seed_legacy(db.engine, db.settings, 2700)
    big = rollout_plan(db.engine, db.settings, sample_rows=100)
    for plan, rows in ((small, 100), (big, 1000)):
        for f in plan.figures.values():
            assert f.legacy_rows == rows and f.missing_unified == rows
            assert f.backfill and f.check and f.backfill.per_row_seconds > 0
            assert f.backfill.rows_per_statement == 1000
            assert f.backfill_seconds() == pytest.approx(
                f.backfill.fixed_seconds + rows * f.backfill.per_row_seconds
            )
            assert f.check_seconds() == pytest.approx(
                f.check.fixed_seconds + rows * f.check.per_row_seconds
            )
    backfill = {p.phase: p for p in big.phases}[3].steps[0]
    assert backfill.command == "unistatus backfill"
    assert backfill.estimate_seconds == pytest.approx(
        sum(f.backfill_seconds() or 0 for f in big.figures.values())
    )
    assert big.estimate_seconds > small.estimate_seconds


def test_replay_size_is_what_a_rollback_replays(db: Database) -> None:
    """In phase 4 the plan counts the changes a rollback would replay (per system too),
    and the emergency rollback then replays exactly that many."""
    adapter = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    ids = {
        t: [adapter.create_transaction(t, 1, "5", "USD").entity_id for _ in range(2)]
        for t in ("WALLET_CASHOUT", "ESCROW")
    }
    adapter = adapter_in(db, DualWriteMode.UNIFIED_ONLY)
    to_phase(db.engine, 4)
    for entity in ids["ESCROW"]:
        assert (
            entity and adapter.update_status(entity, "PENDING_SELLER", "t", "test").overall_success
        )
    cashout = ids["WALLET_CASHOUT"][0]
    assert cashout and adapter.update_status(cashout, "OTP_PENDING", "t", "test").overall_success
    plan = rollout_plan(db.engine, db.settings)
    assert plan.phases == [] and plan.emergency.replay["changes"] == pending_count(db.engine) == 3
    assert plan.emergency.replay["transactions"] == 3
    escrow = rollout_plan(db.engine, db.settings, system="escrow", sample_rows=0)
    assert escrow.emergency.replay["changes"] == 2
    assert escrow.figures.keys() == {LegacySystemType.ESCROW}
    done = emergency_rollback(db.engine, db.settings, actor="test", reason="drill")
    assert done["replay"]["replayed"] == 3


def test_cli_plan(sqlite_db: Database) -> None:
    db = sqlite_db
    runner = CliRunner()
    seed_legacy(db.engine, db.settings, 30)
    base = ["--database-url", db.url, "plan"]
    text = runner.invoke(app, base, catch_exceptions=False)
    assert text.exit_code == 0, text.output
    assert "phase 3 (unified primary)" in text.output
    assert "$ unistatus backfill" in text.output and "Nothing was changed." in text.output
    out = runner.invoke(app, [*base, "--system", "Escrow", "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["format"] == PLAN_FORMAT and data["system"] == "ESCROW"
    assert set(data) >= {"phase", "mode", "systems", "phases", "emergency_rollback", "summary"}
    assert list(data["systems"]) == ["ESCROW"]
    step = data["phases"][2]["steps"][0]
    assert step["command"] == "unistatus backfill --system escrow"
    assert set(data["phases"][0]["rollback"]["replay"]) >= {"changes", "transactions"}
    # The rollbacks a plan of one system shows are that system's.
    into_2 = data["phases"][1]["rollback"]
    assert into_2["command"] == 'unistatus phase rollback --system escrow --reason "TEXT"'
    assert "pause the backfill workers of ESCROW" in into_2["actions"][0]
    assert data["emergency_rollback"]["command"].startswith(
        "unistatus rollback --emergency --system escrow"
    )
    bad = runner.invoke(app, [*base, "--system", "bonds"])
    assert bad.exit_code == 2 and "unknown legacy system" in bad.output
    helped = runner.invoke(app, ["plan", "--help"])
    assert helped.exit_code == 0 and "unistatus plan --system cashout" in helped.output


def test_cost_separates_the_fixed_part() -> None:
    """Two sizes give a fixed cost per statement and a cost per row; the estimate charges
    the fixed part once per statement of the real command."""
    cost = cost_from((500, 0.105), (2000, 0.120), 100_000)
    assert cost is not None
    assert cost.per_row_seconds == pytest.approx(0.00001)
    assert cost.fixed_seconds == pytest.approx(0.1)
    assert cost.seconds(600_000) == pytest.approx(6 * 0.1 + 6.0)
    assert cost_from((0, 0.0), (0, 0.0), 1000) is None


def test_the_checks_cost_grows_its_sample_until_the_rows_outweigh_the_fixed_part() -> None:
    """A statement whose fixed part (30 ms: on a big table the check's statement reads
    for its range whatever its size) hides its cost per row (0.5 us) in a small sample:
    with timing noise the two sizes did not separate, everything was charged per row,
    and 1M rows were estimated at 15 s instead of 0.6 (exploratory review: 57 s for a
    check that took 4). The sample grows until its rows cost as much as the fixed part."""
    calls: list[int] = []

    def run(rows: int) -> int:
        calls.append(rows)
        noise = 0.002 if rows == 500 else 0.0  # the quarter sample slower: noise
        time.sleep(0.030 + rows * 0.5e-6 + noise)
        return rows

    cost = grown_cost(run, 2000, 250_000, limit=1_000_000)
    assert cost is not None
    truth = 4 * 0.030 + 1_000_000 * 0.5e-6
    assert cost.seconds(1_000_000) == pytest.approx(truth, rel=0.5)
    assert max(calls) <= 1_000_000


def test_archive_export_is_estimated_from_a_sample(db: Database, tmp_path: Any) -> None:
    """A plan that covers retirement times the archive export on a sample (nothing
    written: test_samples_write_nothing runs it too); its size is near the real export's."""
    seed_legacy(db.engine, db.settings, 600)
    plan = rollout_plan(db.engine, db.settings, sample_rows=100)
    for f in plan.figures.values():
        assert f.legacy_rows == 200
        assert f.archive and f.archive.sample_rows == 100 and f.archive.per_row_seconds > 0
        assert f.archive.rows_per_statement == 200  # one statement per table, as exported
        assert f.archive_seconds() == pytest.approx(
            f.archive.fixed_seconds + 200 * f.archive.per_row_seconds
        )
        assert f.as_dict()["archive"]["rows"] == 200
    export = {p.phase: p for p in plan.phases}[4].steps[3]
    assert export.command == "unistatus archive export --out DIR"
    assert export.estimate_seconds == pytest.approx(
        sum(f.archive_seconds() or 0 for f in plan.figures.values())
    )
    assert "600 legacy row(s), about" in export.why
    estimated = sum(f.archive_bytes() or 0 for f in plan.figures.values())
    manifest = export_archive(db.engine, db.settings, tmp_path / "archive")
    written = sum((tmp_path / "archive" / t.file).stat().st_size for t in manifest.tables)
    assert 0.5 * written < estimated < 2 * written

    unmeasured = rollout_plan(db.engine, db.settings, sample_rows=0)
    assert all(f.archive is None for f in unmeasured.figures.values())
    export = {p.phase: p for p in unmeasured.phases}[4].steps[3]
    assert export.estimate_seconds is None
    assert export.why.endswith("600 legacy row(s); size and time not measured")
    # In phase 4 retirement is no longer ahead: nothing archived is sampled.
    to_phase(db.engine, 4)
    assert all(f.archive is None for f in rollout_plan(db.engine, db.settings).figures.values())


def test_replay_time_comes_from_an_earlier_rollback_or_is_not_measured(db: Database) -> None:
    """Without an earlier replay the plan says the replay time is not measured; after a
    rollback that replayed changes, its rate gives the time."""
    adapter = adapter_in(db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    ids = [adapter.create_transaction("ESCROW", 1, "5", "USD").entity_id for _ in range(4)]
    adapter = adapter_in(db, DualWriteMode.UNIFIED_ONLY)
    to_phase(db.engine, 4)
    for entity in ids[:3]:
        assert entity and adapter.update_status(entity, "PENDING_SELLER", "t", "t").overall_success
    plan = rollout_plan(db.engine, db.settings, sample_rows=0)
    estimate = plan.emergency.estimate
    assert estimate["changes"] == 3 and estimate["measured"] is False
    assert estimate["estimate_seconds"] is None and estimate["rate"] is None
    assert any("replay time not measured" in note for note in plan.notes)
    runner = CliRunner()
    text = runner.invoke(app, ["--database-url", db.url, "plan", "--sample-rows", "0"])
    assert "replay: 3 change(s) to legacy, time not measured" in text.output

    done = emergency_rollback(db.engine, db.settings, actor="test", reason="drill")
    replayed, ms = done["replay"]["replayed"], done["replay"]["duration_ms"]
    assert replayed == 3 and ms > 0
    adapter = adapter_in(db, DualWriteMode.UNIFIED_ONLY)
    to_phase(db.engine, 4)
    assert adapter.update_status(ids[3], "PENDING_SELLER", "t", "t").overall_success
    estimate = rollout_plan(db.engine, db.settings, sample_rows=0).emergency.estimate
    assert estimate["measured"] is True and estimate["changes"] == 1
    assert estimate["rate"]["rollbacks"] == 1 and estimate["rate"]["changes"] == 3
    assert estimate["estimate_seconds"] == pytest.approx(ms / 1000 / 3, abs=1e-3)  # rounded
    data = json.loads(
        runner.invoke(
            app, ["--database-url", db.url, "plan", "--sample-rows", "0", "--json"]
        ).stdout
    )
    assert data["emergency_rollback"]["replay_estimate"]["measured"] is True
    text = runner.invoke(app, ["--database-url", db.url, "plan", "--sample-rows", "0"])
    assert "replay: 1 change(s) to legacy" in text.output and "earlier rollback(s)" in text.output


def test_a_plan_of_every_system_in_different_phases_asks_for_one_system(
    sqlite_db: Database,
) -> None:
    """Every system in DUAL_WRITE_LEGACY_PRIMARY, cashouts in phase 2 and the others in
    phase 1: a plan of them all would start every system from cashout's phase (and name
    commands without --system that are refused). It is refused, naming --system, as
    for systems in different modes; one system at a time plans from its own phase."""
    db = sqlite_db
    seed_legacy(db.engine, db.settings, 30)
    to_phase(db.engine, 1)
    to_phase(db.engine, 2, LegacySystemType.CASHOUT)
    base = ["--database-url", db.url, "plan", "--sample-rows", "0"]
    for_all = CliRunner().invoke(app, base)
    assert for_all.exit_code == 2, for_all.output
    assert "different phases" in for_all.output and "--system" in for_all.output
    escrow = CliRunner().invoke(app, [*base, "--system", "escrow", "--json"])
    assert escrow.exit_code == 0, escrow.output
    assert json.loads(escrow.stdout)["phase"] == 1
    to_phase(db.engine, 3, LegacySystemType.CASHOUT)  # another mode as well
    modes = CliRunner().invoke(app, base)
    assert modes.exit_code == 2 and "--system" in modes.output, modes.output


def test_a_plan_of_one_system_names_that_system_in_every_command_that_takes_it(
    sqlite_db: Database,
) -> None:
    """Following a plan of one system must not touch the others: its check, its repair
    (a repair of every system ``legacy_wins`` would overwrite a unified-primary system's
    authoritative rows) and its advance name the system."""
    db = sqlite_db
    seed_legacy(db.engine, db.settings, 30)
    out = CliRunner().invoke(
        app, ["--database-url", db.url, "plan", "--system", "escrow", "--json"]
    )
    assert out.exit_code == 0, out.output
    commands = [s["command"] for p in json.loads(out.stdout)["phases"] for s in p["steps"]]
    for command in commands:
        if command.startswith(("unistatus check", "unistatus repair", "unistatus phase")):
            assert "--system escrow" in command, command
    assert 'unistatus repair --system escrow --strategy legacy_wins --reason "TEXT"' in commands


def test_the_emergency_rollback_from_phase_2_lists_each_action_once(sqlite_db: Database) -> None:
    """From phase 2 the emergency preview said "pause the backfill workers" twice
    (the phase's own rollback and the emergency's; exploratory review)."""
    to_phase(sqlite_db.engine, 2)
    actions = rollout_plan(sqlite_db.engine, sqlite_db.settings, sample_rows=0).emergency.actions
    pauses = [a for a in actions if a.startswith("pause the backfill workers")]
    assert len(pauses) == 1, actions
