"""The end-to-end demo: a live migration in miniature, as an ordered list of steps.

Phase 1 prepares a database (a temporary SQLite file unless a URL is given), seeds
legacy rows, validates the mapping, switches to DUAL_WRITE_LEGACY_PRIMARY, drives
simulated traffic from several threads and checks that every transaction it touched
is consistent on both sides.

Each step is a function of a shared :class:`DemoContext` returning a one-line detail,
or raising :class:`DemoStepFailed` when what it checks is wrong. Later phases (backfill,
check, phase advance, rollback drill, archive, cleanup) are appended to
:data:`PHASE1_STEPS` (or passed as ``steps=``) without touching the ones here.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from unistatus.adapter.core import DualWriteAdapter
from unistatus.config import Settings, load_settings
from unistatus.db.engine import display_url
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.sim.traffic import TrafficReport


class DemoStepFailed(Exception):
    """A demo step ran but what it checks is not right (the message says what)."""


@dataclass
class DemoContext:
    """What the steps share; later steps read what earlier ones left in ``results``."""

    console: Console
    rows: int
    seconds: float
    threads: int
    database_url: str
    settings: Settings
    engine: sa.Engine | None = None
    adapter: DualWriteAdapter | None = None
    seeded_ranges: dict[LegacySystemType, tuple[int, int]] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    results: dict[str, Any] = field(default_factory=dict)

    def require_engine(self) -> sa.Engine:
        if self.engine is None:
            raise DemoStepFailed("no database engine (the prepare step did not run)")
        return self.engine

    def require_adapter(self) -> DualWriteAdapter:
        if self.adapter is None:
            self.adapter = DualWriteAdapter(self.require_engine(), settings=self.settings)
        return self.adapter

    @contextmanager
    def background_traffic(self, *, seed: int = 1) -> Iterator[TrafficReport]:
        """Live traffic while the body runs (for steps like backfill under load).

        Yields the report object, filled in once the body is done and traffic stopped;
        the transactions it touched are added to ``touched``.
        """
        from unistatus.sim.traffic import run_traffic

        adapter = self.require_adapter()
        stop = threading.Event()
        report = TrafficReport()

        def drive() -> None:
            result = run_traffic(
                adapter,
                threads=self.threads,
                seconds=None,
                stop=stop,
                existing=self.seeded_ranges,
                seed=seed,
            )
            report.merge(result)
            report.seconds = result.seconds

        thread = threading.Thread(target=drive, name="demo-background-traffic")
        thread.start()
        try:
            yield report
        finally:
            stop.set()
            thread.join()
            self.touched |= report.touched


@dataclass(frozen=True)
class DemoStep:
    name: str
    run: Callable[[DemoContext], str]


@dataclass
class StepResult:
    name: str
    ok: bool
    detail: str
    duration: float  # seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "duration": round(self.duration, 3),
        }


@dataclass
class DemoReport:
    steps: list[StepResult] = field(default_factory=list)
    database_url: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "database_url": self.database_url,
            "steps": [s.as_dict() for s in self.steps],
        }


# --- phase 1 steps ----------------------------------------------------------------------


def step_prepare(ctx: DemoContext) -> str:
    from unistatus.db import schema
    from unistatus.db.engine import create_engine

    ctx.engine = create_engine(ctx.database_url)
    revision = schema.upgrade(ctx.engine, ctx.settings)
    return f"{ctx.engine.dialect.name} database at schema revision {revision}"


def step_seed(ctx: DemoContext) -> str:
    from unistatus.sim.seed import id_ranges, seed_legacy

    engine = ctx.require_engine()
    before = id_ranges(engine, ctx.settings)
    counts = seed_legacy(engine, ctx.settings, ctx.rows)
    after = id_ranges(engine, ctx.settings)
    # Traffic updates only the rows seeded now, whatever the database held before.
    ctx.seeded_ranges = {
        s: (before[s][1] + 1 if s in before else lo, hi)
        for s, (lo, hi) in after.items()
        if counts.get(s.value)
    }
    ctx.results["seeded"] = counts
    return ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + " legacy rows"


def step_validate_mapping(ctx: DemoContext) -> str:
    from unistatus.domain.mapping import LegacyStatusMapper

    report = LegacyStatusMapper().validate()
    ctx.results["mapping"] = report.as_dict()
    summary = (
        f"{report.total_mapped}/{report.total_legacy} legacy statuses mapped, "
        f"{len(report.unified_reachable)}/16 unified reachable"
    )
    if not report.ok:
        raise DemoStepFailed(f"{summary}; problems: {'; '.join(report.problems)}")
    return summary


def step_dual_write(ctx: DemoContext) -> str:
    from unistatus.db.control import get_mode, set_mode

    engine = ctx.require_engine()
    old = get_mode(engine)
    set_mode(
        engine,
        DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
        reason="unistatus demo: start dual writes",
        actor="demo",
    )
    return f"{old.value} -> {DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY.value}"


def step_traffic(ctx: DemoContext) -> str:
    from unistatus.sim.traffic import run_traffic

    adapter = ctx.require_adapter()
    report = run_traffic(
        adapter,
        threads=ctx.threads,
        seconds=ctx.seconds,
        existing=ctx.seeded_ranges,
    )
    ctx.touched |= report.touched
    ctx.results["traffic"] = report.as_dict()
    detail = (
        f"{report.operations} writes ({report.creates} new, {report.updates} updates) from "
        f"{ctx.threads} threads in {report.seconds:.1f} s: {report.throughput:.0f}/s, "
        f"p95 {report.percentile(95):.1f} ms, {report.refused} refused (lost races), "
        f"{report.errors} errors"
    )
    if not report.overall_success:
        raise DemoStepFailed(f"{detail}; first: {report.error_samples[0]}")
    if report.operations == 0:
        raise DemoStepFailed("no traffic ran")
    return detail


def step_consistency(ctx: DemoContext) -> str:
    adapter = ctx.require_adapter()
    bad: list[dict[str, Any]] = []
    for entity_id in sorted(ctx.touched):
        found = adapter.check_consistency(entity_id)
        if not found["consistent"]:
            bad.append(found)
    ctx.results["inconsistent"] = bad
    if not ctx.touched:
        raise DemoStepFailed("no transaction was touched")
    if bad:
        first = bad[0]["inconsistencies"][0]
        raise DemoStepFailed(
            f"{len(bad)} of {len(ctx.touched)} touched transactions inconsistent; first: "
            f"{bad[0]['transaction_id']} {first}"
        )
    return f"{len(ctx.touched)} of {len(ctx.touched)} touched transactions consistent"


PHASE1_STEPS: list[DemoStep] = [
    DemoStep("prepare database", step_prepare),
    DemoStep("seed legacy data", step_seed),
    DemoStep("validate mapping", step_validate_mapping),
    DemoStep("switch to dual writes", step_dual_write),
    DemoStep("simulated live traffic", step_traffic),
    DemoStep("consistency of touched transactions", step_consistency),
]


# --- running ------------------------------------------------------------------------------


def run_demo(
    database_url: str | None = None,
    *,
    console: Console | None = None,
    rows: int = 2000,
    seconds: float = 4.0,
    threads: int = 4,
    steps: Sequence[DemoStep] | None = None,
    soak_seconds: float = 2.0,
) -> DemoReport:
    """Run the demo steps in order; stop at the first failure. Never raises for a step.

    The default steps are the whole migration (phase 1 here, phases 2 to 4 in
    :mod:`unistatus.sim.demo_steps`). Without ``database_url`` everything happens in a
    temporary SQLite file that is removed afterwards. ``soak_seconds`` shortens the
    time unified primary must run before phase 4 (an hour by default in production).
    """
    if steps is None:
        from unistatus.sim.demo_steps import MIGRATION_STEPS

        steps = MIGRATION_STEPS
    if rows < 0 or seconds <= 0 or threads < 1:
        raise ValueError("rows must be >= 0, seconds > 0 and threads >= 1")
    out = console or Console()
    tmpdir: Path | None = None
    if database_url is None:
        tmpdir = Path(tempfile.mkdtemp(prefix="unistatus-demo-"))
        database_url = f"sqlite:///{tmpdir / 'demo.db'}"
    ctx = DemoContext(
        console=out,
        rows=rows,
        seconds=seconds,
        threads=threads,
        database_url=database_url,
        settings=load_settings(database_url=database_url, soak_seconds=soak_seconds),
    )
    report = DemoReport(database_url=_safe_url(database_url))
    out.print(f"[bold]unistatus demo[/] on {report.database_url}")
    try:
        for step in steps:
            result = _run_step(ctx, step)
            report.steps.append(result)
            mark = "[green]ok[/]" if result.ok else "[bold red]FAILED[/]"
            out.print(f"  {mark} {step.name} ({result.duration:.2f} s)", highlight=False)
            if not result.ok:
                break
    finally:
        stats = ctx.results.get("stats")
        if stats is not None:
            stats.close()
        if ctx.engine is not None:
            ctx.engine.dispose()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    out.print(summary_table(report))
    return report


def _run_step(ctx: DemoContext, step: DemoStep) -> StepResult:
    started = time.perf_counter()
    try:
        detail = step.run(ctx)
        ok = True
    except DemoStepFailed as exc:
        detail, ok = str(exc), False
    except Exception as exc:  # a step must not kill the demo: report it as failed
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return StepResult(step.name, ok, detail, time.perf_counter() - started)


def summary_table(report: DemoReport) -> Table:
    table = Table(title="unistatus demo: " + ("all steps passed" if report.ok else "FAILED"))
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("detail", overflow="fold")
    for i, step in enumerate(report.steps, 1):
        table.add_row(
            str(i),
            step.name,
            "[green]ok[/]" if step.ok else "[bold red]FAILED[/]",
            f"{step.duration:.2f} s",
            step.detail,
        )
    return table


def _safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    return display_url(url)
