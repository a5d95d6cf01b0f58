"""The phase-1 demo: every step passes on a small run, failures stop it and are reported."""

from __future__ import annotations

import io
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console

from conftest import PG_IN_EVERY_LAYOUT, Database
from unistatus.db.catalog import all_tables
from unistatus.db.control import get_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration.phases import phase_status
from unistatus.migration.retire import legacy_columns_dropped
from unistatus.sim.demo import run_demo
from unistatus.sim.demo_runner import DemoContext, DemoStep, DemoStepFailed
from unistatus.sim.demo_steps import MIGRATION_STEPS, PHASE1_STEPS


def _quiet() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=120), buf


def test_demo_in_a_temporary_sqlite_database() -> None:
    console, buf = _quiet()
    report = run_demo(console=console, rows=300, seconds=0.8, threads=2)
    assert report.ok, report.as_dict()
    assert [s.name for s in report.steps] == [s.name for s in MIGRATION_STEPS]
    assert all(s.duration >= 0 for s in report.steps)
    traffic = next(s for s in report.steps if s.name == "simulated live traffic")
    assert "0 errors" in traffic.detail
    steps = {s.name: s for s in report.steps}
    assert "touched transactions consistent" in steps["consistency of touched transactions"].detail
    assert "all passed" in steps["gate summary"].detail
    assert "100.000%" in steps["full consistency check"].detail
    assert "all steps passed" in buf.getvalue()
    # The temporary database is gone afterwards.
    path = Path(sa.engine.make_url(report.database_url).database or "")
    assert path.name == "demo.db" and not path.parent.exists()


def test_the_demo_feeds_every_gate_however_few_writes_fit_in_its_time() -> None:
    """On a loaded machine a second of traffic held four writes, none of them an
    exchange: the gate into phase 2 judged exchanges on no data and the demo failed.
    Traffic that feeds a gate runs until every system has what the gate needs."""
    console, _ = _quiet()
    report = run_demo(console=console, rows=300, seconds=0.001, threads=2)
    assert report.ok, [(s.name, s.detail) for s in report.steps if not s.ok]


@PG_IN_EVERY_LAYOUT
def test_demo_on_a_given_postgres_database(pg: Database) -> None:
    """The whole lifecycle, also with unistatus's tables in a schema of their own (the
    demo reads ``UNISTATUS_SCHEMA`` like any command): writes in all four modes,
    backfill, check, repair, every phase gate, rollback drills with replay, the archive,
    the retirement and its undo, statistics and the dashboard."""
    console, _ = _quiet()
    report = run_demo(pg.url, console=console, rows=300, seconds=0.8, threads=3)
    assert report.ok, report.as_dict()
    # The whole migration ran: phase 4, unified only, with the cleanup drill undone.
    assert get_mode(pg.engine) is DualWriteMode.UNIFIED_ONLY
    assert phase_status(pg.engine, pg.settings).phase == 4
    assert not legacy_columns_dropped(pg.engine, pg.settings)
    assert pg.count("cashouts") >= 100
    assert pg.count("unified_transactions") > 0
    assert pg.count("unistatus_operation_stats") > 0  # flushed by the demo's adapters
    # Everything of unistatus's went where the settings say; public keeps the legacy
    # tables (and, for the default, ours).
    in_public = set(sa.inspect(pg.engine).get_table_names(schema="public"))
    ours = {t.name for t in all_tables()}
    assert (ours <= in_public) is (pg.settings.schema == "public")
    assert {"cashouts", "escrows", "exchanges"} <= in_public


def test_a_failing_step_stops_the_demo(tmp_path: Path) -> None:
    ran: list[str] = []

    def failing(ctx: DemoContext) -> str:
        raise DemoStepFailed("3 transactions inconsistent")

    def crashing(ctx: DemoContext) -> str:
        raise RuntimeError("boom")

    def after(ctx: DemoContext) -> str:
        ran.append("after")
        return "should not run"

    console, buf = _quiet()
    url = f"sqlite:///{tmp_path / 'x.db'}"
    report = run_demo(
        url,
        console=console,
        steps=[PHASE1_STEPS[0], DemoStep("check", failing), DemoStep("after", after)],
    )
    assert not report.ok
    assert [(s.name, s.ok) for s in report.steps] == [("prepare database", True), ("check", False)]
    assert report.steps[1].detail == "3 transactions inconsistent"
    assert ran == [] and "FAILED" in buf.getvalue()

    report = run_demo(url, console=console, steps=[DemoStep("crash", crashing)])
    assert not report.ok and report.steps[0].detail == "RuntimeError: boom"


def test_later_phases_can_run_work_under_background_traffic(tmp_path: Path) -> None:
    """What a later step (backfill under load) builds on: traffic runs while it works."""

    def under_load(ctx: DemoContext) -> str:
        with ctx.background_traffic() as report:
            time.sleep(0.6)
        if not report.overall_success or report.operations == 0:
            raise DemoStepFailed(f"traffic: {report.as_dict()}")
        return f"{report.operations} writes while working"

    console, _ = _quiet()
    steps = [*PHASE1_STEPS[:4], DemoStep("under load", under_load), PHASE1_STEPS[-1]]
    report = run_demo(
        f"sqlite:///{tmp_path / 'bg.db'}", console=console, rows=150, threads=2, steps=steps
    )
    assert report.ok, report.as_dict()
    assert report.steps[4].detail.endswith("writes while working")


def test_a_refused_gate_says_why_in_the_steps_detail() -> None:
    """A demo stopped by a gate names what failed inside it (a per-system gate's value
    is only which system fails: its detail says which of that system's gates)."""
    from unistatus.migration.gates import Gate
    from unistatus.sim.demo_steps import refused_gates

    failing = [
        Gate(
            "each_system_on_its_own",
            "EXCHANGE fails",
            "all pass",
            False,
            "failing on its own data: EXCHANGE: p95_latency_ms",
        ),
        Gate("error_rate", "2%", "< 1%", False),
    ]
    said = refused_gates(4, failing)
    assert said == (
        "gates into phase 4 fail: each_system_on_its_own = EXCHANGE fails (needs all pass:"
        " failing on its own data: EXCHANGE: p95_latency_ms); error_rate = 2% (needs < 1%)"
    )
