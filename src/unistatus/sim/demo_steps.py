"""The demo's steps: the whole migration, phase 1 to 4, each checking what it did.

Phase 1 prepares a database, seeds legacy rows, validates the mapping, turns dual writes
on and drives live traffic; then backfill under traffic, a full check, unified primary,
an emergency rollback drill and the way back, unified only, the archive, the reversible
cleanup, a rollback drill out of phase 4 and the way back again. Every phase change goes
through :func:`unistatus.migration.phases.advance` (gates measured, never forced).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from unistatus.backfill import run_backfill
from unistatus.backfill.bars import backfill_bars
from unistatus.clock import utcnow
from unistatus.db import schema
from unistatus.db.control import get_mode, set_mode
from unistatus.db.engine import create_engine
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration import phases
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.check import run_check
from unistatus.migration.phases import PHASE_START, phase_started_at, resolve_since
from unistatus.migration.repair import run_repair
from unistatus.migration.replay import pending_count
from unistatus.migration.retire import legacy_columns_dropped, retire_legacy_columns
from unistatus.migration.rollback import emergency_rollback, rollback_current_phase
from unistatus.observe.terminal_dashboard import frame
from unistatus.sim.demo_runner import DemoContext, DemoStep, DemoStepFailed
from unistatus.sim.seed import id_ranges, seed_legacy
from unistatus.sim.traffic import run_traffic

ACTOR = "demo"


# --- helpers --------------------------------------------------------------------------


def _flush_stats(ctx: DemoContext) -> None:
    """Write the adapter's statistics now, so the gates read every operation so far."""
    stats = ctx.adapter.stats if ctx.adapter is not None else None
    if stats is not None:
        stats.flush()


def _advance(ctx: DemoContext, reason: str) -> str:
    """Enter the next phase through its gates (never forced); record the gates."""
    engine = ctx.require_engine()
    _flush_stats(ctx)
    status = phases.phase_status(engine, ctx.settings)
    failing = [g for g in status.gates if not g.passed]
    _record_gates(ctx, status.phase, status.next_phase, status.gates)
    if failing:
        raise DemoStepFailed(refused_gates(status.next_phase, failing))
    change = phases.advance(engine, ctx.settings, actor=ACTOR, reason=reason)
    ctx.require_adapter().modes.refresh()
    passed = ", ".join(f"{g.name} {g.value}" for g in change.gates) or "no gates"
    return f"phase {change.from_phase} -> {change.to_phase} ({change.to_mode.value}); {passed}"


def refused_gates(target: int | None, failing: list[Any]) -> str:
    """The step's detail when gates refuse: each gate's value and threshold, and its
    detail where it has one (a per-system gate's value only names the system)."""
    said = "; ".join(
        f"{g.name} = {g.value} (needs {g.threshold}{': ' + g.detail if g.detail else ''})"
        for g in failing
    )
    return f"gates into phase {target} fail: {said}"


def _record_gates(ctx: DemoContext, phase: int, target: int | None, gates: list[Any]) -> None:
    rows: list[dict[str, Any]] = ctx.results.setdefault("gates", [])
    for gate in gates:
        rows.append({"into": target, "from": phase, **gate.as_dict()})


def _full_check(ctx: DemoContext, *, since: Any = None) -> str:
    report = run_check(ctx.require_engine(), ctx.settings, since=since, examples=3)
    ctx.results.setdefault("checks", []).append(report.as_dict())
    detail = f"{report.consistent}/{report.total} consistent ({report.consistency_rate * 100:.3f}%)"
    if report.consistent != report.total:
        kinds = {k: n for k, n in report.inconsistencies.items() if n}
        raise DemoStepFailed(f"{detail}; {kinds}; e.g. {report.examples[:1]}")
    return detail


def _traffic(ctx: DemoContext, seconds: float, seed: int, creates_per_type: int = 0) -> str:
    report = run_traffic(
        ctx.require_adapter(),
        threads=ctx.threads,
        seconds=seconds,
        existing=ctx.seeded_ranges,
        seed=seed,
        creates_per_type=creates_per_type,
    )
    ctx.touched |= report.touched
    if not report.overall_success:
        raise DemoStepFailed(f"{report.errors} failed writes; first: {report.error_samples[0]}")
    _refusals_are_races(report)
    return (
        f"{report.operations} writes in {report.seconds:.1f} s under "
        f"{ctx.require_adapter().mode.value}, p95 {report.percentile(95):.1f} ms, 0 errors"
    )


def _refusals_are_races(report: Any) -> None:
    """A few refusals are lost races between threads; many mean writes are being refused."""
    if report.refused > max(5, report.operations // 5):
        raise DemoStepFailed(
            f"{report.refused} of {report.operations} writes refused; e.g. {report.refused_samples[:1]}"
        )


# --- phase 1: prepare, seed, dual writes, traffic, consistency ---------------------------


def step_prepare(ctx: DemoContext) -> str:
    ctx.engine = create_engine(
        ctx.database_url,
        schema=ctx.settings.schema,
        prepared_statements=ctx.settings.prepared_statements,
        network=ctx.settings.network,
    )
    revision = schema.upgrade(ctx.engine, ctx.settings)
    return f"{ctx.engine.dialect.name} database at schema revision {revision}"


def step_seed(ctx: DemoContext) -> str:
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
    adapter = ctx.require_adapter()
    # Every system's new transactions and operations for the gates into phase 2, however
    # few writes fit in the time.
    report = run_traffic(
        adapter,
        threads=ctx.threads,
        seconds=ctx.seconds,
        existing=ctx.seeded_ranges,
        creates_per_type=1,
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


# --- phase 1: measured entry and statistics -----------------------------------------------


def step_enter_phase1(ctx: DemoContext) -> str:
    """Phase 0 -> 1 through its gate (mapping 100%): turns dual writes on.

    The adapter records its statistics itself (as every adapter does by default).
    """
    return _advance(ctx, "demo: phase 1, dual writes with legacy primary")


def step_check_new(ctx: DemoContext) -> str:
    return _full_check(ctx, since=resolve_since(ctx.require_engine(), PHASE_START))


# --- phase 2 -------------------------------------------------------------------------------


def step_enter_phase2(ctx: DemoContext) -> str:
    return _advance(ctx, "demo: phase 2, backfill")


def step_backfill(ctx: DemoContext) -> str:
    bars, on_progress = backfill_bars(ctx.console, indent="    ")
    # Small batches so the bars move and live writes interleave with the copy.
    with ctx.background_traffic(seed=2) as traffic, bars:
        report = run_backfill(
            ctx.require_engine(), ctx.settings, batch_size=200, progress=on_progress
        )
    data = report.as_dict()
    if not traffic.overall_success:
        raise DemoStepFailed(f"live traffic failed during backfill: {traffic.error_samples[:1]}")
    _refusals_are_races(traffic)
    return (
        f"{data['inserted']} inserted, {data['already_present']} already there (dual-written), "
        f"{data['quarantined']} quarantined, while {traffic.operations} live writes ran"
    )


def step_full_check(ctx: DemoContext) -> str:
    return _full_check(ctx)


# --- phase 3 and the emergency drill ------------------------------------------------------


def step_enter_phase3(ctx: DemoContext) -> str:
    return _advance(ctx, "demo: phase 3, unified primary")


def step_traffic_unified_primary(ctx: DemoContext) -> str:
    return _traffic(ctx, ctx.seconds / 2, seed=3)


def step_emergency_drill(ctx: DemoContext) -> str:
    """Emergency rollback while traffic runs: every adapter follows within ~1 s."""
    adapter = ctx.require_adapter()
    with ctx.background_traffic(seed=4) as traffic:
        time.sleep(min(1.0, ctx.seconds / 4))
        started = time.perf_counter()
        emergency_rollback(
            ctx.require_engine(), ctx.settings, actor=ACTOR, reason="demo: rollback drill"
        )
        deadline = started + ctx.settings.mode_refresh_seconds + 1.0
        while adapter.mode is not DualWriteMode.LEGACY_ONLY and time.perf_counter() < deadline:
            time.sleep(0.05)
        seen_after = time.perf_counter() - started
        time.sleep(min(1.0, ctx.seconds / 4))  # traffic goes on, on legacy only
    if adapter.mode is not DualWriteMode.LEGACY_ONLY:
        raise DemoStepFailed("the running adapter did not follow the emergency rollback")
    if not traffic.overall_success:
        raise DemoStepFailed(f"writes failed during the drill: {traffic.error_samples[:1]}")
    _refusals_are_races(traffic)
    return (
        f"LEGACY_ONLY in {seen_after:.2f} s for the running adapter, no restart; "
        f"{traffic.operations} live writes, 0 failed"
    )


def step_return_after_drill(ctx: DemoContext) -> str:
    """Back to phase 3: dual writes on, repair what legacy-only writes left, gates again."""
    engine = ctx.require_engine()
    steps = [_advance(ctx, "demo: drill over, dual writes back on")]
    repaired = run_repair(
        engine,
        ctx.settings,
        strategy="legacy_wins",
        actor=ACTOR,
        reason="demo: what the legacy-only drill left behind",
    )
    _full_check(ctx, since=resolve_since(engine, PHASE_START))
    steps.append(_advance(ctx, "demo: back to phase 2"))
    _full_check(ctx)
    steps.append(_advance(ctx, "demo: back to phase 3"))
    fixed = repaired.as_dict().get("repaired", repaired.as_dict())
    return f"repaired (legacy wins) {fixed}; " + " | ".join(s.split(";")[0] for s in steps)


# --- phase 4, archive, cleanup and the drill out of it ---------------------------------------


def step_enter_phase4(ctx: DemoContext) -> str:
    engine = ctx.require_engine()
    started = phase_started_at(engine, 3)
    # The soak time (shortened for the demo) must pass, with enough of every system's
    # operations for the p95 gate, however few fit in it.
    waited = (utcnow() - started).total_seconds() if started is not None else 0.0
    _traffic(
        ctx,
        max(ctx.settings.soak_seconds - waited, 0.0) + 0.2,
        seed=5,
        creates_per_type=ctx.settings.p95_gate_min_operations,
    )
    _full_check(ctx)
    return _advance(ctx, "demo: phase 4, unified only")


def step_traffic_unified_only(ctx: DemoContext) -> str:
    detail = _traffic(ctx, ctx.seconds / 2, seed=6)
    return f"{detail}; {pending_count(ctx.require_engine())} changes recorded for legacy replay"


def step_archive(ctx: DemoContext) -> str:
    engine = ctx.require_engine()
    directory = Path(tempfile.mkdtemp(prefix="unistatus-archive-")) / "legacy"
    ctx.results["archive_dir"] = directory
    manifest = export_archive(engine, ctx.settings, directory, actor=ACTOR)
    report = verify_archive(engine, directory)
    if not report.ok:
        raise DemoStepFailed("archive does not verify: " + "; ".join(report.problems))
    record_verified(engine, report, actor=ACTOR, settings=ctx.settings)
    rows = sum(t.rows for t in manifest.tables)
    return f"{rows} legacy rows in {len(manifest.tables)} files, verified (sha256 {manifest.sha256[:12]}…)"


def step_retire(ctx: DemoContext) -> str:
    result = retire_legacy_columns(
        ctx.require_engine(), ctx.settings, actor=ACTOR, reason="demo: phase 4 cleanup"
    )
    ctx.results["checksum_before_cleanup"] = result["checksum_before"]
    return f"dropped {', '.join(result['tables'])} (revision {result['revision']})"


def step_phase4_drill(ctx: DemoContext) -> str:
    """Roll back out of phase 4 after the cleanup: columns back, replay, legacy primary."""
    engine = ctx.require_engine()
    change = rollback_current_phase(engine, ctx.settings, actor=ACTOR, reason="demo: phase 4 drill")
    ctx.require_adapter().modes.refresh()
    if legacy_columns_dropped(engine, ctx.settings):
        raise DemoStepFailed("the legacy status columns were not restored")
    check = _full_check(ctx)
    return (
        f"phase {change.from_phase} -> {change.to_phase} ({change.to_mode.value}); "
        f"{'; '.join(change.notes)}; {check}"
    )


def step_return_to_phase4(ctx: DemoContext) -> str:
    done = [_advance(ctx, "demo: drill over, unified primary again")]
    done.append(step_enter_phase4(ctx))
    return " | ".join(s.split(";")[0] for s in done)


def step_dashboard(ctx: DemoContext) -> str:
    _flush_stats(ctx)
    ctx.console.print(frame(ctx.require_engine(), ctx.settings))
    return "rendered (live: `unistatus dashboard`, web: `unistatus serve`)"


def gate_table(ctx: DemoContext) -> Table:
    table = Table(title="every phase gate the demo passed through")
    for col in ("into", "gate", "value", "threshold", "passed"):
        table.add_column(col)
    for row in ctx.results.get("gates", []):
        table.add_row(
            f"{row['from']} -> {row['into']}",
            row["name"],
            str(row["value"]),
            str(row["threshold"]),
            "[green]pass[/]" if row["passed"] else "[red]FAIL[/]",
        )
    return table


def step_gate_summary(ctx: DemoContext) -> str:
    rows = ctx.results.get("gates", [])
    ctx.console.print(gate_table(ctx))
    if not rows or not all(r["passed"] for r in rows):
        raise DemoStepFailed("a gate did not pass")
    return f"{len(rows)} gates measured, all passed"


def _step(name: str, run: Callable[[DemoContext], str]) -> DemoStep:
    return DemoStep(name, run)


_PHASE1 = {s.name: s for s in PHASE1_STEPS}

# The whole migration, as `unistatus demo` runs it (see unistatus.sim.demo).
MIGRATION_STEPS: list[DemoStep] = [
    _PHASE1["prepare database"],
    _PHASE1["seed legacy data"],
    _PHASE1["validate mapping"],
    _step("phase 1: dual writes, legacy primary (gated)", step_enter_phase1),
    _PHASE1["simulated live traffic"],
    _PHASE1["consistency of touched transactions"],
    _step("check: new transactions consistent", step_check_new),
    _step("phase 2: enter (gated)", step_enter_phase2),
    _step("backfill under live traffic", step_backfill),
    _step("full consistency check", step_full_check),
    _step("phase 3: unified primary (gated)", step_enter_phase3),
    _step("live traffic, unified primary", step_traffic_unified_primary),
    _step("rollback drill: emergency rollback", step_emergency_drill),
    _step("rollback drill: return to phase 3", step_return_after_drill),
    _step("phase 4: unified only (gated)", step_enter_phase4),
    _step("live traffic, unified only", step_traffic_unified_only),
    _step("archive legacy tables", step_archive),
    _step("retire legacy status columns", step_retire),
    _step("rollback drill out of phase 4", step_phase4_drill),
    _step("return to phase 4", step_return_to_phase4),
    _step("dashboard", step_dashboard),
    _step("gate summary", step_gate_summary),
]
