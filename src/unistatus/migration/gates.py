"""The gates of the phases: each success criterion measured from live data.

One function per gate; :func:`unistatus.migration.phases.evaluate_gates` picks the gates
of a phase and hands them the moments they are measured from (the start of phase 1, the
switch to unified primary, the last control change).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import sqlalchemy as sa

from unistatus.backfill import progress
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.legacy_fit import unfit
from unistatus.db.legacy_kinds import NOT_A_TABLE
from unistatus.db.legacy_reflect import legacy_table_kinds, legacy_table_name
from unistatus.db.mode_reads import last_mode_change_at
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import ConfigError
from unistatus.migration import capture
from unistatus.migration.capture_sql import UNIFIED_TARGET
from unistatus.migration.check_reports import (
    CONTINUOUS_SCOPE,
    CheckReport,
    latest_report,
    latest_report_for,
)
from unistatus.observe.stats import WRITES, WindowStats, window

MAX_ERROR_RATE = 0.001  # < 0.1 %
MAX_P95_MS = 200.0
# The error rate gates look at the adapters' operations over the last hour (the p95 gate
# into phase 4 at those since the switch to unified primary).
GATE_WINDOW_SECONDS = 3600.0
UNAVAILABLE = "unavailable"
BYPASS_GATE = "no_bypass_writes_in_soak"
CAPTURE_GATE = "capture_current"


@dataclass(frozen=True)
class Gate:
    """One success criterion: its measured value, the threshold, and whether it passes."""

    name: str
    value: Any
    threshold: Any
    passed: bool
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "detail": self.detail,
        }


def unavailable(name: str, threshold: Any, why: str) -> Gate:
    return Gate(name, UNAVAILABLE, threshold, False, why)


def pct(x: float) -> str:
    """``x`` in percent, 3 decimals, rounded down: a rate just under a bound is never
    shown as the bound (0.0999% passing "< 0.1%" was shown "0.1%", as a failing 0.1% is;
    99.9999% failing "100%" was shown "100%")."""
    shown = (Decimal(repr(float(x))) * 100).quantize(Decimal("0.001"), rounding=ROUND_FLOOR)
    return f"{shown:f}".rstrip("0").rstrip(".") + "%"


def gate_each_system(
    measure: Callable[..., list[Gate]],
    systems: tuple[LegacySystemType, ...] = tuple(LegacySystemType),
    *,
    known: Mapping[LegacySystemType, list[Gate]] | None = None,
) -> Gate:
    """Each of ``systems`` passes its own gates (``measure(system=...)``, on its own data;
    ``known``: those measured already): the figures of every system pooled hide one
    system's (a 10% error rate of a system with little traffic is 0.05% of all writes),
    and advancing every system moves each."""
    failing = {}
    for system in systems:
        own = (known or {}).get(system)
        names = [
            g.name for g in (own if own is not None else measure(system=system)) if not g.passed
        ]
        if names:
            failing[system.value] = names
    # Short, for the gate table at 80 columns: which fail; the detail says which gates.
    if not failing:
        value = f"all {len(systems)} pass"
    elif len(failing) == len(systems):
        value = f"all {len(systems)} fail"
    else:
        value = f"{', '.join(failing)} fail{'s' if len(failing) == 1 else ''}"
    said = "; ".join(f"{name}: {', '.join(names)}" for name, names in failing.items())
    detail = (
        f"failing on its own data: {said} (`unistatus phase status --system S`; advance the "
        "others with --system)"
        if failing
        else None
    )
    return Gate("each_system_on_its_own", value, "all pass", not failing, detail)


def gate_mapping() -> Gate:
    report = LegacyStatusMapper().validate()
    detail = "; ".join(report.problems[:5]) or None
    return Gate("mapping_validation", pct(report.coverage), "100%", report.ok, detail)


def gate_legacy_tables(
    engine: sa.Engine, settings: Settings, system: LegacySystemType | None
) -> Gate:
    """The legacy tables as every command after dual write is on will take them (a
    ConfigError of any command, the rollback's included, said before the switch rather
    than after it), and fit for dual write (:func:`unistatus.db.legacy_fit.unfit`)."""
    chosen = [system] if system is not None else list(LegacySystemType)
    specs = {s: settings.legacy_tables[s.value] for s in chosen}
    try:
        tables = resolve_legacy_tables(engine, settings, systems=chosen)
        with engine.connect() as conn:
            found = legacy_table_kinds(conn, list(specs.values()))
            views = {name for name, kind in found if kind in NOT_A_TABLE}
            problems = [
                problem
                for s, lt in tables.items()
                for problem in unfit(conn, lt, keyed=legacy_table_name(specs[s]) not in views)
            ]
    except ConfigError as exc:
        return Gate("legacy_tables", "unfit", "fit", False, str(exc))
    if problems:
        return Gate("legacy_tables", "unfit", "fit", False, "; ".join(problems))
    return Gate("legacy_tables", "fit", "fit", True)


def gate_dual_write(mode: DualWriteMode) -> Gate:
    return Gate("dual_write_on", mode.value, "DUAL_WRITE_*", mode.is_dual)


def _of(system: LegacySystemType | None) -> str:
    return f" of {system.value}" if system is not None else ""


def gate_error_rate(engine: sa.Engine, system: LegacySystemType | None = None) -> Gate:
    """The adapters' error rate over the last hour (their writes: ``system``'s only)."""
    w = window(engine, GATE_WINDOW_SECONDS, operation=WRITES, system=system)
    if w.count == 0:
        anyone = window(engine, GATE_WINDOW_SECONDS, operation=WRITES) if system else w
        why = (
            f"; {anyone.count} of other systems or of processes that record no system "
            "(older than revision 0016: restart them on this version) were"
            if anyone.count
            else " (adapters record them unless record_stats=False or UNISTATUS_RECORD_STATS=false)"
        )
        return unavailable(
            "error_rate",
            f"< {pct(MAX_ERROR_RATE)}",
            f"no adapter operations{_of(system)} recorded in the last hour{why}",
        )
    return Gate(
        "error_rate",
        pct(w.error_rate),
        f"< {pct(MAX_ERROR_RATE)}",
        w.error_rate < MAX_ERROR_RATE,
        f"{w.errors} errors in {w.count} operations{_of(system)} over the last hour"
        + _not_counted(w),
    )


def _not_counted(w: WindowStats) -> str:
    """The writes of the window that are in neither figure, said when there are any."""
    parts = [f"{w.rolled_back} rolled back by the caller"] if w.rolled_back else []
    parts += [f"{w.refused} refused for their input"] if w.refused else []
    return f" ({', '.join(parts)}, not counted)" if parts else ""


def gate_p95(
    engine: sa.Engine,
    settings: Settings,
    switched: datetime | None,
    system: LegacySystemType | None = None,
    now: datetime | None = None,
) -> Gate:
    """p95 of unified primary's own operations (``system``'s) since the switch, over
    enough of them. ``now``: the database's time, the clock the switch was stamped on
    and the window is read on (a host behind it read a window of a millisecond).

    The last hour would mix in legacy primary's operations from before the switch (a
    slow backfill, or a fast quiet hour) and judge unified primary by them.
    """
    name, threshold = "p95_latency_ms", f"< {MAX_P95_MS:g}"
    if switched is None:
        return unavailable(name, threshold, "no record of the switch to unified primary")
    seconds = max(((now or utcnow()) - switched).total_seconds(), 0.001)
    unified_primary = DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY.value
    # Anchored at ``now``, as ``seconds`` is: read on the window's own clock, later by
    # the gates measured before it, it began after the switch and left out the first
    # operations of unified primary.
    w = window(engine, seconds, operation=WRITES, mode=unified_primary, system=system, now=now)
    since = f"{_of(system)} since unified became primary ({switched.isoformat()})"
    p95 = w.p95_ms
    if p95 is None:
        return unavailable(name, threshold, f"no adapter operations recorded{since}")
    need = settings.p95_gate_min_operations
    if w.count < need:
        detail = (
            f"{w.count} operations{since}: at least {need} needed (p95_gate_min_operations)"
            + _not_counted(w)
        )
        return Gate(name, round(p95, 1), threshold, False, detail)
    return Gate(name, round(p95, 1), threshold, p95 < MAX_P95_MS, f"{w.count} operations{since}")


def gate_check(
    engine: sa.Engine,
    name: str,
    *,
    after: datetime | None,
    covering_since: datetime | None,
    require_full: bool,
    need_rows: bool,
    command: str = "unistatus check",
    system: LegacySystemType | None = None,
) -> Gate:
    """A stored check report, started after ``after``, 100% consistent.

    ``system``: the latest report that covered it, judged on its figures only (another
    system's inconsistencies do not close its gate). ``command`` is the check that
    satisfies the gate: every failing detail names it.
    """
    run = f"run `{command}`"
    report: CheckReport | None
    try:
        # A run stopped by --max-duration, or a round of continuous verification, is
        # stored too: neither covered every key range, so neither is the check a gate needs.
        # Of the run begun last, never a round of continuous verification (a check_reports
        # note says why).
        if system is not None:
            report = latest_report_for(
                engine,
                system,
                full=require_full,
                not_scope=CONTINUOUS_SCOPE,
                begun_last=True,
            )
        else:
            report = latest_report(
                engine,
                scope="all" if require_full else None,
                complete=True,
                covering_since=covering_since,
                not_scope=CONTINUOUS_SCOPE,
                begun_last=True,
            )
        judged = list(LegacySystemType) if system is None else [system]
        with engine.connect() as conn:
            changed = {s: last_mode_change_at(conn, s) for s in judged}
    except sa.exc.SQLAlchemyError as exc:
        return unavailable(name, "100%", f"cannot read check reports: {exc}")
    if report is None:
        return unavailable(name, "100%", f"no complete check report yet: {run}")
    if after is not None and report.started_at < after:
        return unavailable(
            name,
            "100%",
            f"check #{report.id} started before the last mode, phase or rollback change "
            f"({after.isoformat()}): {run} again",
        )
    for one, at in changed.items():
        # A resumed run may have checked a system before its mode changed.
        info = report.per_system.get(one.value) or {}
        began = info.get("started_at")
        checked = datetime.fromisoformat(began) if began else report.started_at
        if at is not None and checked < at:
            return unavailable(
                name,
                "100%",
                f"check #{report.id} checked {one.value} before its last mode change or "
                f"rollback ({at.isoformat()}): {run} again",
            )
    systems = {str(s) for s in report.systems}
    if system is None and systems and systems != {s.value for s in LegacySystemType}:
        return unavailable(
            name, "100%", f"the latest check covers only {', '.join(sorted(systems))}: {run}"
        )
    since = report.since
    if covering_since is not None and since is not None and since > covering_since:
        return unavailable(
            name,
            "100%",
            f"the latest check covers only changes since {since.isoformat()}: {run}",
        )
    total, consistent = report.total, report.consistent
    if system is not None:
        figures = report.per_system.get(system.value) or {}
        total, consistent = int(figures.get("total") or 0), int(figures.get("consistent") or 0)
    if need_rows and total == 0:
        return Gate(name, "0 of 0", "100%", False, f"no transactions{_of(system)} to verify yet")
    rate = consistent / total if total else 1.0
    detail = f"check #{report.id}: {consistent} of {total}{_of(system)} consistent"
    return Gate(name, pct(rate), "100%", consistent == total, detail)


def gate_backfill(
    engine: sa.Engine, settings: Settings, system: LegacySystemType | None = None
) -> list[Gate]:
    """One gate per system's backfill (``system``: its own only)."""
    try:
        result = progress(engine, settings)
    except Exception as exc:  # a broken source makes the gate fail, never pass
        return [unavailable("backfill_complete", "100%", f"cannot read progress: {exc}")]
    if system is not None:
        result = {k: v for k, v in result.items() if str(k) == system.value}
    gates: list[Gate] = []
    for name, info in sorted(result.items()):
        percent = float(info.get("percent") or 0.0)
        complete = bool(info.get("complete")) and percent >= 100.0
        detail = f"{info.get('done', 0)} of {info.get('total', 0)} rows, {info.get('state')}"
        gates.append(
            Gate(f"backfill_{str(name).lower()}", f"{percent:g}%", "100%", complete, detail)
        )
    return gates or [unavailable("backfill_complete", "100%", "no backfill progress reported")]


def gate_zero(
    engine: sa.Engine,
    name: str,
    count: Callable[..., int],
    system: LegacySystemType | None = None,
) -> Gate:
    """Nothing open: ``count(engine, system=system)`` rows (``system``'s only; None: of
    every system)."""
    try:
        n = int(count(engine, system=system))
    except Exception as exc:
        return unavailable(name, 0, f"cannot count: {exc}")
    return Gate(name, n, 0, n == 0, f"counted on {system.value}'s rows" if system else None)


def gate_soak(
    mode: DualWriteMode, settings: Settings, since: datetime | None, now: datetime | None = None
) -> Gate:
    """Unified primary for ``soak_seconds`` since ``since`` (the control log's time of
    the switch): ``now`` the database's (:mod:`unistatus.db.server_clock`), so a host
    whose clock runs ahead does not end the soak early."""
    threshold = f">= {settings.soak_seconds:g} s"
    if mode is not DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY:
        return Gate("unified_primary_soak_s", 0, threshold, False, f"mode is {mode.value}")
    if since is None:
        return unavailable("unified_primary_soak_s", threshold, "no record of the switch")
    elapsed = ((now or utcnow()) - since).total_seconds()
    return Gate(
        "unified_primary_soak_s",
        round(elapsed, 1),
        threshold,
        elapsed >= settings.soak_seconds,
        f"unified primary since {since.isoformat()}",
    )


def gate_capture_current(engine: sa.Engine, settings: Settings) -> list[Gate]:
    """Where the capture is enabled: its triggers are what this release installs (an
    upgrade leaves them as they were; `init` warns). Triggers of an earlier release may
    not follow the mode they are entered under (before per-system modes they read the
    one global mode), so a write that bypasses unistatus could miss unified. No gate
    where the capture is not enabled."""
    with engine.connect() as conn:
        if capture.enabled_since(conn) is None:
            return []
    stale = capture.status(engine, settings).stale_reason
    if stale is not None:
        return [Gate(CAPTURE_GATE, "stale", "current", False, stale)]
    return [Gate(CAPTURE_GATE, "current", "current", True, "the triggers this release installs")]


def gate_no_bypass(
    engine: sa.Engine,
    settings: Settings,
    mode: DualWriteMode,
    since: datetime | None,
    system: LegacySystemType | None = None,
    now: datetime | None = None,
) -> Gate:
    """No writer bypassed unistatus since unified became primary (every code path is
    converted before legacy is frozen; ``system``: writes to its table, and to
    ``unified_transactions``, which belongs to every system). Only the capture can see
    such writes: without it the gate passes, saying it proves nothing (docs/capture.md,
    "The gate")."""
    primary = DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY
    if mode is not primary:
        return unavailable(BYPASS_GATE, 0, f"mode is {mode.value}: the soak starts at {primary}")
    with engine.connect() as conn:
        enabled = capture.enabled_since(conn)
    if since is None:
        return unavailable(BYPASS_GATE, 0, "no record of the switch")
    if enabled is None:
        return Gate(
            BYPASS_GATE,
            "capture not enabled",
            0,
            True,
            "capture not enabled: writes that bypass unistatus are not seen, so this gate "
            "proves nothing; `unistatus capture enable` before the soak to have it checked",
        )
    stale = capture.status(engine, settings).stale_reason
    if stale is not None:
        return unavailable(BYPASS_GATE, 0, stale)
    covered = ((now or utcnow()) - max(since, enabled)).total_seconds()
    if enabled > since and covered < settings.soak_seconds:
        return unavailable(
            BYPASS_GATE,
            0,
            f"capture enabled at {enabled.isoformat()}, after the soak began "
            f"({since.isoformat()}): it has seen {covered:.0f} s of the "
            f"{settings.soak_seconds:g} s soak",
        )
    seen = capture.writers_seen(engine, since=since)
    if system is not None:
        seen = [w for w in seen if w.system in (system.value, UNIFIED_TARGET)]
    if not seen:
        return Gate(BYPASS_GATE, 0, 0, True, f"none since {max(since, enabled).isoformat()}")
    names = "; ".join(
        f"{w.writer} on {w.system} (last {w.last_seen_at.isoformat() if w.last_seen_at else '?'})"
        for w in seen[:5]
    )
    more = f" and {len(seen) - 5} more" if len(seen) > 5 else ""
    return Gate(
        BYPASS_GATE,
        len(seen),
        0,
        False,
        f"writers bypassing unistatus since unified became primary ({since.isoformat()}): "
        f"{names}{more}; convert them, then wait out a new soak (`unistatus capture status`)",
    )
