"""The demo's runner: the context its steps share, and running them in order.

A step is a function of a shared :class:`DemoContext` returning a one-line detail, or
raising :class:`DemoStepFailed` when what it checks is wrong. The steps themselves are
in :mod:`unistatus.sim.demo_steps`; :mod:`unistatus.sim.demo` runs all of them.
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
from unistatus.domain.statuses import LegacySystemType
from unistatus.sim.traffic import TrafficReport, run_traffic

__all__ = [
    "DemoContext",
    "DemoReport",
    "DemoStep",
    "DemoStepFailed",
    "StepResult",
    "run_steps",
    "summary_table",
]

# The demo's soak is seconds long: its p95 gate into phase 4 judges this many operations
# (production: p95_gate_min_operations, 1000 by default).
DEMO_P95_MIN_OPERATIONS = 20


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
            # Statistics on whatever the environment says: the demo's gates read them.
            self.adapter = DualWriteAdapter(
                self.require_engine(), settings=self.settings, record_stats=True
            )
        return self.adapter

    @contextmanager
    def background_traffic(self, *, seed: int = 1) -> Iterator[TrafficReport]:
        """Live traffic while the body runs (for steps like backfill under load).

        Yields the report object, filled in once the body is done and traffic stopped;
        the transactions it touched are added to ``touched``.
        """
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


# --- running ------------------------------------------------------------------------------


def run_steps(
    steps: Sequence[DemoStep],
    database_url: str | None = None,
    *,
    console: Console | None = None,
    rows: int = 2000,
    seconds: float = 4.0,
    threads: int = 4,
    soak_seconds: float = 2.0,
) -> DemoReport:
    """Run ``steps`` in order; stop at the first failure. Never raises for a step.

    Without ``database_url`` everything happens in a temporary SQLite file that is
    removed afterwards. ``soak_seconds`` shortens the time unified primary must run
    before phase 4 (an hour by default in production), and the p95 gate into phase 4
    judges the few seconds of traffic that fit in it (:data:`DEMO_P95_MIN_OPERATIONS`).
    """
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
        settings=load_settings(
            database_url=database_url,
            soak_seconds=soak_seconds,
            p95_gate_min_operations=DEMO_P95_MIN_OPERATIONS,
        ),
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
        if ctx.adapter is not None:
            ctx.adapter.close()  # flushes its statistics
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
