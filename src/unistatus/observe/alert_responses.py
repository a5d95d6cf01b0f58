"""The automated responses to firing alerts, each switchable in the settings.

Critical consistency: emergency rollback. Consistency warning: detailed logging and a
repair (the side the mode reads wins). Critical p95 with the unified side primary and
more than 20% slower than the legacy-primary baseline (each system's own, see
``alert_state.baseline_p95_ms``; none known: no rollback, the response says "no
baseline yet"): one phase back. Each firing episode responds once (the evaluator that
claims the slot runs it), and once more for each system that starts crossing while it
fires (``alert_state.update_state`` opens the slot again); the outcome is recorded in
the control history under :data:`AUTO_RESPONSE_KEY` and notified.

The rollbacks act on the systems whose own figures crossed the threshold (the alert's
``details["systems"]``), by the procedure the response of every system uses, run for
that system only: consistency below 99% on escrows is the emergency rollback of escrows
(their pending changes replayed, LEGACY_ONLY and phase 0, their backfill paused), a
latency regression on escrows is the one-phase rollback of escrows; either way escrows'
phase stays consistent with their mode and cashouts keep theirs. When every system
crossed, or the figures are not known per system, every system is rolled back. A system
back in legacy-primary dual write whose inconsistent rows were all written while it was
in LEGACY_ONLY (stale as expected, docs/alerts.md) is not rolled back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.control import get_modes, unified_staleness, write_value
from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.mode_reads import MIXED
from unistatus.db.system_keys import SYSTEMS
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import PhaseMovedError, RepairRunningError, UnistatusError
from unistatus.migration.repair import run_repair
from unistatus.migration.rollback import emergency_rollback, rollback_current_phase
from unistatus.migration.verify import judged_report
from unistatus.observe.alert_rules import observe
from unistatus.observe.alert_state import (
    RUNNING,
    AlertState,
    baseline_p95_ms,
    claim_response,
    load_states,
    release_response,
    set_response,
)
from unistatus.observe.metrics import Snapshot
from unistatus.observe.notify import Notification, Notifier

__all__ = ["ACTOR", "AUTO_RESPONSE_KEY", "LATENCY_REGRESSION", "Responder"]

# The alerts' log (the name it has always had).
log = logging.getLogger("unistatus.observe.alerts")

AUTO_RESPONSE_KEY = "auto_response"
ACTOR = "monitor"
# The latency rollback needs p95 this much worse than the legacy-primary baseline.
LATENCY_REGRESSION = 1.20
# How the critical consistency alert's response begins when the drop is rows written
# in LEGACY_ONLY, stale as expected (:func:`_stale_response`): repaired, not withheld.
STALE_PREFIX = "none: the inconsistent rows of "
UNIFIED_PRIMARY_MODES = (DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, DualWriteMode.UNIFIED_ONLY)


class Responder:
    """Runs the automated responses of the alerts that fire and have not responded yet."""

    def __init__(
        self, engine: sa.Engine, settings: Settings, notifier: Notifier, ops: DialectOps
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.notifier = notifier
        self.ops = ops

    def respond(self, snap: Snapshot) -> None:
        auto = self.settings.auto_responses
        firing = {s.name: s for s in load_states(self.engine) if s.firing}
        states = {name: s for name, s in firing.items() if s.response is None}
        mode = DualWriteMode(snap.mode) if snap.mode and snap.mode != MIXED else None
        # While the critical drop fires the drift is left for the operator to read, not
        # repaired (its rollback, an operator's, or none by choice), unless it found the
        # drop explained by rows written in LEGACY_ONLY: the repair brings those in step.
        critical = firing.get("consistency_critical")
        withhold = critical is not None and not (critical.response or "").startswith(STALE_PREFIX)
        if "consistency_critical" in states:
            crossed = self._crossed(snap, "consistency_critical")
            modes = self._modes(snap)
            moving = [
                s for s in crossed or SYSTEMS if modes.get(s) is not DualWriteMode.LEGACY_ONLY
            ]
            stale = self._stale_from_legacy_only(moving, snap) if moving else {}
            moving = [s for s in moving if s not in stale]
            if not auto.rollback_on_critical_consistency:
                self._claim("consistency_critical", "none: rollback_on_critical_consistency is off")
            elif stale and not moving:
                withhold = False
                self._claim("consistency_critical", _stale_response(stale))
            elif not moving or mode is DualWriteMode.LEGACY_ONLY:
                self._claim("consistency_critical", "none: already LEGACY_ONLY")
            elif not stale and (crossed is None or set(crossed) == set(SYSTEMS)):
                self._run(
                    "consistency_critical",
                    "emergency_rollback",
                    states["consistency_critical"].message,
                    lambda reason: emergency_rollback(
                        self.engine, self.settings, actor=ACTOR, reason=reason
                    ),
                )
            else:
                self._run(
                    "consistency_critical",
                    "rollback_systems_to_legacy_only",
                    states["consistency_critical"].message,
                    lambda reason: _each(
                        moving,
                        lambda system: emergency_rollback(
                            self.engine, self.settings, actor=ACTOR, reason=reason, system=system
                        ),
                    ),
                )
        if "consistency_warning" in states:
            if not auto.repair_on_consistency_warning:
                self._claim("consistency_warning", "none: repair_on_consistency_warning is off")
            elif withhold:
                # Below 99% is the critical alert's (a rollback): a repair now would
                # overwrite one side with the other before anyone read the drift.
                self._detailed_logging(snap)
                self._claim(
                    "consistency_warning",
                    "none: consistency_critical is firing (below 99%: a rollback, not a "
                    "repair); read `unistatus check --examples 50`, find the cause, then "
                    "repair by hand (`unistatus repair --strategy ...`)",
                )
            elif mode is DualWriteMode.UNIFIED_ONLY:
                # Legacy is frozen: nothing to repair it with until a rollback replays it.
                self._detailed_logging(snap)
                self._claim("consistency_warning", "none: legacy is frozen in UNIFIED_ONLY")
            elif mode is None and len({m.reads_unified for m in self._modes(snap).values()}) > 1:
                # One repair has one winning side; the systems read different sides.
                self._detailed_logging(snap)
                self._claim(
                    "consistency_warning",
                    "none: the systems read different sides (modes differ); repair each "
                    "system by hand (`unistatus repair --strategy ...`)",
                )
            else:
                self._detailed_logging(snap)
                self._run(
                    "consistency_warning",
                    "repair",
                    states["consistency_warning"].message,
                    self._repair,
                )
        if "latency_p95_critical" in states:
            self._latency_response(states["latency_p95_critical"], snap, mode)

    @staticmethod
    def _crossed(snap: Snapshot, name: str) -> list[LegacySystemType] | None:
        """The systems whose own figures crossed the threshold of alert ``name`` (None:
        not known per system)."""
        for obs in observe(snap, now=snap.taken_at):
            if obs.name == name:
                systems = obs.details.get("systems")
                if not systems:
                    return None
                return [LegacySystemType.parse(s) for s in sorted(systems)]
        return None

    def _stale_from_legacy_only(
        self, systems: list[LegacySystemType], snap: Snapshot
    ) -> dict[LegacySystemType, int]:
        """The systems back in DUAL_WRITE_LEGACY_PRIMARY whose inconsistent rows are all
        explained by writes made while they were in LEGACY_ONLY (unified not maintained:
        stale as expected until check and repair), with those rows' count. Rolling such
        a system back would undo the operator's return for rows no dual write touched;
        and it reads legacy, whatever unified holds."""
        modes = self._modes(snap)
        judged: dict[LegacySystemType, int] = {}
        for s in systems:
            n = (snap.systems or {}).get(s.value, {}).get("alert_inconsistent_rows")
            if n and modes.get(s) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY:
                judged[s] = int(n)
        if not judged:
            return {}
        explained: dict[LegacySystemType, int] = {}
        try:
            tables = resolve_legacy_tables(
                self.engine, self.settings, systems=list(judged), require_status=False
            )
            with self.engine.connect() as conn:
                for system, n in judged.items():
                    # Only the stale rows the judged report could have read: a report of
                    # recent changes (--since, a continuous round) judged dual writes.
                    report = judged_report(self.engine, system)
                    window = report.since if report is not None else None
                    stale = unified_staleness(conn, {system: tables[system]}, since=window)
                    if stale is not None and n <= stale.rows.get(system.value, 0):
                        explained[system] = n
        except (UnistatusError, sa.exc.SQLAlchemyError) as exc:
            log.warning("cannot tell legacy-only staleness from inconsistency: %s", exc)
            return {}
        return explained

    @staticmethod
    def _modes(snap: Snapshot) -> dict[LegacySystemType, DualWriteMode]:
        return {
            LegacySystemType.parse(system): DualWriteMode(info["mode"])
            for system, info in (snap.systems or {}).items()
            if info.get("mode")
        }

    def _latency_response(
        self, state: AlertState, snap: Snapshot, mode: DualWriteMode | None
    ) -> None:
        if not self.settings.auto_responses.rollback_on_latency:
            self._claim(state.name, "none: rollback_on_latency is off")
            return
        crossed = self._crossed(snap, state.name)
        modes = self._modes(snap)
        phases = {info.get("phase") for info in (snap.systems or {}).values()}
        # One phase back for every system only while they are all in one phase: a
        # system behind the others must not be moved forward by it.
        if crossed is not None and (set(crossed) != set(SYSTEMS) or len(phases) > 1):
            self._latency_systems(state, snap, crossed, modes)
            return
        if mode not in UNIFIED_PRIMARY_MODES:
            return  # legacy is primary: nothing to roll back; the alert notifies
        p95 = snap.perf("p95_ms")
        baseline = baseline_p95_ms(self.engine)
        if baseline is None:
            self._no_baseline(state, list(SYSTEMS))
            return
        if p95 is None or p95 <= baseline * LATENCY_REGRESSION:
            log.warning(
                "p95 %s ms with the unified side primary; legacy-primary baseline %.1f ms: "
                "no rollback (needs > %d%% worse than the baseline)",
                p95,
                baseline,
                _regression_pct(),
            )
            return  # reconsidered on the next evaluation while the alert fires
        reason = (
            f"{state.message}; {p95 / baseline * 100 - 100:.0f}% above the legacy-primary "
            f"baseline {baseline:.1f} ms"
        )
        # The spec's response is "roll back to legacy primary": one phase back from 3, and
        # from 4 (UNIFIED_ONLY) the phase-4 procedure, which replays to legacy first.
        action = "rollback_phase"
        # The phase whose figures crossed: one step from it, not two (None: unknown, or
        # the systems apart, which the rollback refuses).
        judged = next(iter(phases)) if len(phases) == 1 else None

        def act(why: str) -> Any:
            return rollback_current_phase(
                self.engine, self.settings, actor=ACTOR, reason=why, from_phase=judged
            )

        self._run(state.name, action, reason, act)

    def _latency_systems(
        self,
        state: AlertState,
        snap: Snapshot,
        crossed: list[LegacySystemType],
        modes: dict[LegacySystemType, DualWriteMode],
    ) -> None:
        """Some systems' own p95 crossed: those with the unified side primary and more
        than 20% slower than the baseline go one phase back (each by its own phase's
        procedure: from 4 its changes are replayed first), the others keep theirs."""
        slow: dict[LegacySystemType, str] = {}
        unknown: list[LegacySystemType] = []  # unified primary, no baseline
        why_not: list[str] = []
        for system in crossed:
            perf = ((snap.systems or {}).get(system.value) or {}).get("performance") or {}
            p95 = perf.get("p95_ms")
            mode = modes.get(system)
            if mode not in UNIFIED_PRIMARY_MODES:
                why_not.append(
                    f"{system.value} reads legacy ({mode.value if mode else 'mode unknown'})"
                )
                continue
            baseline = baseline_p95_ms(self.engine, system)
            if baseline is None:
                unknown.append(system)
            elif p95 is None or float(p95) <= baseline * LATENCY_REGRESSION:
                shown = "unknown" if p95 is None else f"{float(p95):.1f}"
                why_not.append(
                    f"{system.value} p95 {shown} ms not > {_regression_pct()}% above its "
                    f"legacy-primary baseline {baseline:.1f} ms"
                )
            else:
                slow[system] = f"{system.value} {float(p95):.1f} ms, baseline {baseline:.1f} ms"
        if not slow:
            if unknown:
                self._no_baseline(state, unknown)
                return
            log.warning(
                "p95 over the threshold on %s: no automated rollback (%s)",
                ", ".join(s.value for s in crossed),
                "; ".join(why_not),
            )
            return  # reconsidered on the next evaluation while the alert fires
        if unknown:
            log.warning("%s", _no_baseline_text(unknown))
        reason = f"{state.message}; legacy-primary baseline: {'; '.join(slow.values())}"
        self._run(
            state.name,
            "rollback_systems_to_legacy_primary",
            reason,
            lambda why: _each(
                list(slow),
                lambda system: rollback_current_phase(
                    self.engine,
                    self.settings,
                    actor=ACTOR,
                    reason=why,
                    system=system,
                    from_phase=((snap.systems or {}).get(system.value) or {}).get("phase"),
                ),
            ),
        )

    def _no_baseline(self, state: AlertState, systems: list[LegacySystemType]) -> None:
        """No legacy-primary p95 to compare with: no rollback, said in the log and as the
        alert's response (once per firing episode)."""
        text = _no_baseline_text(systems)
        if self._claim(state.name, f"none: {text}"):
            log.warning("p95 over the threshold with the unified side primary: %s", text)

    def _repair(self, reason: str) -> Any:
        """Repair with the side every system reads now as the winner (it is
        authoritative), read as it runs: the snapshot's modes may be a response or an
        operator old (a rollback in between made legacy the side to keep)."""
        modes = get_modes(self.engine)
        reads = {m.reads_unified for m in modes.values()}
        if len(reads) > 1 or DualWriteMode.UNIFIED_ONLY in modes.values():
            raise _NotRun(
                "the modes changed since the evaluation read them: the systems read "
                "different sides, or legacy is frozen; repair by hand"
            )
        strategy = "unified_wins" if reads == {True} else "legacy_wins"
        return run_repair(
            self.engine,
            self.settings,
            strategy=strategy,
            actor=ACTOR,
            reason=reason,
            authoritative_only=True,  # an entity whose mode moved meanwhile is skipped
        )

    def _detailed_logging(self, snap: Snapshot) -> None:
        logging.getLogger("unistatus").setLevel(logging.DEBUG)
        log.warning("consistency below 99.9%%: latest check report %s", snap.last_check)

    def _claim(self, name: str, response: str) -> bool:
        return claim_response(self.ops, name, response)

    def _run(self, name: str, action: str, reason: str, act: Callable[[str], Any]) -> None:
        if not self._claim(name, f"{action}{RUNNING}"):
            return
        why = f"automated response to {name}: {reason}"
        try:
            result = act(why)
            outcome = f"{action}: done"
        except RepairRunningError as exc:
            # An operator's repair holds a system now: not this episode's answer. The
            # slot is given back, and the next evaluation (the alert still firing)
            # repairs what is left; nothing recorded, nobody notified meanwhile.
            log.warning("automated response %s for %s waits: %s", action, name, exc)
            release_response(self.ops, name)
            return
        except (PhaseMovedError, _NotRun) as exc:
            # An operator (or another monitor) moved the phase or a mode since it was
            # judged: nothing to do, no failure.
            log.warning("automated response %s for %s not run: %s", action, name, exc)
            outcome = f"{action}: not run: {exc}"
            result = None
        except Exception as exc:
            log.error("automated response %s for %s failed: %s", action, name, exc)
            outcome = f"{action}: failed: {type(exc).__name__}: {exc}"
            result = None
        detail = (
            result.as_dict()
            if hasattr(result, "as_dict")
            else result
            if isinstance(result, dict)
            else None
        )
        with self.ops.write_transaction() as conn:
            set_response(conn, name, outcome)
            write_value(
                conn,
                AUTO_RESPONSE_KEY,
                outcome[:256],
                actor=ACTOR,
                reason=why,
                metadata={"alert": name, "action": action, "result": _jsonable(detail)},
            )
        self.notifier.send(
            Notification(
                name=name,
                level="critical" if "failed" in outcome else "warning",
                state="response",
                message=f"automated response {outcome} ({reason})",
            )
        )


class _NotRun(Exception):
    """A response that found nothing to do when it ran: the phase or the modes it was
    chosen by moved meanwhile (an operator's step, a rollback). Recorded as not run."""


def _regression_pct() -> int:
    return round((LATENCY_REGRESSION - 1) * 100)


def _no_baseline_text(systems: list[LegacySystemType]) -> str:
    which = ", ".join(s.value for s in systems)
    return (
        f"no baseline yet (no write of {which}, nor of any system, stored while legacy "
        f"was primary): no automated latency rollback; if the regression is real, roll "
        f"back by hand (`unistatus phase rollback --system ...`)"
    )


def _stale_response(stale: dict[LegacySystemType, int]) -> str:
    which = ", ".join(f"{s.value.lower()} ({n} rows)" for s, n in sorted(stale.items()))
    return (
        f"{STALE_PREFIX}{which} were written while in LEGACY_ONLY "
        "(unified not maintained), stale as expected after a return to dual write: run "
        "`unistatus check` and `unistatus repair`"
    )


def _each(
    systems: list[LegacySystemType], act: Callable[[LegacySystemType], Any]
) -> dict[str, Any]:
    """``act`` for each system, the others' too when one fails (then the failures are
    raised together, after every system was tried); one result per system."""
    done: dict[str, Any] = {}
    failed: list[str] = []
    for system in systems:
        try:
            result = act(system)
        except PhaseMovedError as exc:  # moved since it was judged: nothing to do
            log.warning("automated response for %s not run: %s", system.value, exc)
            done[system.value] = {"not_run": str(exc)}
            continue
        except Exception as exc:
            log.error("automated response for %s failed: %s", system.value, exc)
            failed.append(f"{system.value}: {type(exc).__name__}: {exc}")
            continue
        done[system.value] = result.as_dict() if hasattr(result, "as_dict") else result
    if failed:
        raise UnistatusError(f"{'; '.join(failed)} (done: {', '.join(done) or 'none'})")
    if done and all(isinstance(r, dict) and "not_run" in r for r in done.values()):
        raise _NotRun("; ".join(f"{s}: {r['not_run']}" for s, r in done.items()))
    return {"systems": done}


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
