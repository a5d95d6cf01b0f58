"""``unistatus repair``: make legacy and unified agree again, one audited entity at a time.

The run: the adapter's repair queue first, then what a fresh set-based detection finds,
each entity in its own transaction (``repair_entity``) with retries, up to a limit. What
each kind of difference gets, and UNIFIED_ONLY: ``docs/repair.md``.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext

import sqlalchemy as sa

from unistatus.adapter.model import Relinked
from unistatus.backfill.progress import progress
from unistatus.config import Settings
from unistatus.db.control import get_modes
from unistatus.db.dialect import ops_for
from unistatus.db.failures import interrupt_behind, read_only_refusal
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.retry import fails_every_write, is_read_only, is_retryable
from unistatus.db.server_clock import clock_of
from unistatus.domain.inputs import check_reason
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, StorageError
from unistatus.migration.check import iter_inconsistent
from unistatus.migration.check_out import ListedKeys
from unistatus.migration.repair_claim import claim_systems
from unistatus.migration.repair_entity import EntityRepair, LegacyHeld
from unistatus.migration.repair_plan import Strategy
from unistatus.migration.repair_queue import open_rows, queue_target
from unistatus.migration.repair_report import RepairReport

__all__ = ["run_repair"]

log = logging.getLogger("unistatus.migration.repair")


class RepairInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, on the command line) stopped a repair: still a
    KeyboardInterrupt, with the report of what it had done (:attr:`report`). Every
    entity counted was committed on its own, except perhaps the one in hand, which
    the interruption may have rolled back: a new run goes on."""

    def __init__(self, report: RepairReport) -> None:
        super().__init__()
        self.report = report


MAX_ATTEMPTS = 4
# Legacy keys per detection read: the inconsistent rows of one chunk are held while they
# are repaired, so this bounds repair's memory even when everything differs.
DETECT_CHUNK = 10_000


# Entities past the limit judged at most, to tell whether any needs a repair.
PROBES = 50


class _Repairer:
    """One run: its sources, the entities already handled, retries, the limit."""

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        tables: dict[LegacySystemType, LegacyTable],
        report: RepairReport,
        on_entity: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.on_entity = on_entity
        self.settings = settings
        self.ops = ops_for(engine)
        self.tables = tables
        self.report = report
        self.clock = clock_of(engine)
        self.one = EntityRepair(self.ops, tables, report, self.clock.now)
        self.seen: set[tuple[LegacySystemType, int | None, str | None]] = set()
        # An entity was left unexamined because the limit was met (limit_reached).
        self.more = False
        self.probed = 0
        # Why the first legacy row without a unified row of a system was met before its
        # backfill completed (None: it had completed), per system.
        self.behind: dict[LegacySystemType, str | None] = {}

    def _backfill_behind(self, system: LegacySystemType) -> None:
        """Said at once (the log: the command's stderr), and in the report: the rows
        the backfill has not copied are repaired one at a time."""
        said = self.behind[system] = backfill_behind(self.engine, self.settings, [system])
        if said is not None:
            log.warning("%s", said)

    @property
    def full(self) -> bool:
        limit = self.report.limit
        return limit is not None and self.report.repaired >= limit

    def entity(self, system: LegacySystemType, legacy_id: int | None, utx_id: str | None) -> None:
        """Repair one entity (idempotent; an entity is handled once per run) of the
        systems repaired (the others' are left as they are)."""
        key = (system, legacy_id, None if legacy_id is not None else utx_id)
        if key in self.seen or system not in self.tables:
            return
        if self.full:
            # Past the limit, a few entities are judged (nothing written) to tell "more
            # to repair" from "the rest are left for an operator"; past PROBES, more.
            self.probed += 1
            self.more = self.probed > PROBES or self._would_repair(system, legacy_id, utx_id)
            return
        self.seen.add(key)
        self.report.examined += 1
        try:
            self._repair(system, legacy_id, utx_id)
        finally:
            if self.on_entity is not None:
                self.on_entity()

    def _repair(self, system: LegacySystemType, legacy_id: int | None, utx_id: str | None) -> None:
        """One entity in a transaction of its own, retried where the database says a
        new attempt may do (a lost race, a dropped connection)."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                if self.report.dry_run:
                    with self.engine.connect() as conn:
                        self.one.run(conn, system, legacy_id, utx_id, lock=False)
                else:
                    with self.ops.write_transaction() as conn:
                        self.ops.bound_statements(
                            conn, self.settings.statement_timeout_ms, self.settings.lock_timeout_ms
                        )
                        self.one.run(conn, system, legacy_id, utx_id, lock=True)
                return
            except LegacyHeld as held:  # rolled back: nothing of the entity written
                self.one.failed(
                    f"{system.value}:{legacy_id or utx_id}: {held}: nothing written "
                    "(`--strategy legacy_wins` brings unified to legacy)"
                )
                return
            except Relinked:
                # Nothing written: the next attempt finds the new legacy row, locks it first.
                if attempt + 1 < MAX_ATTEMPTS:
                    continue
                self.one.failed(f"{system.value}:{utx_id}: linked meanwhile, again and again")
                return
            except sa.exc.DBAPIError as exc:
                if (stop := interrupt_behind(exc)) is not None:
                    raise stop from None  # the run's interruption, not the entity's failure
                text = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                lost = exc.connection_invalidated  # a fresh connection may do
                if (is_retryable(exc) or lost) and attempt + 1 < MAX_ATTEMPTS:
                    time.sleep(0.01 * (attempt + 1) * (1 + random.random()))
                    continue
                if fails_every_write(exc):
                    # The database's, not this entity's: every next one would fail too.
                    done = self.report
                    why = (
                        read_only_refusal(who="the repair")
                        if is_read_only(exc)
                        else "the database failed"
                    )
                    raise StorageError(
                        f"repair stopped after {done.repaired:,} repaired and "
                        f"{done.already_consistent:,} already consistent of "
                        f"{done.examined:,} examined: {why}: {text}"
                    ) from None
                self.one.failed(f"{system.value}:{legacy_id or utx_id}: {text}")
                return

    def _would_repair(
        self, system: LegacySystemType, legacy_id: int | None, utx_id: str | None
    ) -> bool:
        """Whether an entity past the limit needs a repair: judged as ``--dry-run`` would
        (nothing written, nothing counted), so a run whose limit the last repairable
        entity met does not say "run again for the rest"."""
        r = self.report
        probe = RepairReport(r.strategy, True, r.actor, None, r.reason)
        try:
            with self.engine.connect() as conn:
                EntityRepair(self.ops, self.tables, probe, self.clock.now).run(
                    conn, system, legacy_id, utx_id, lock=False
                )
        except (LegacyHeld, Relinked, sa.exc.DBAPIError) as exc:
            if (stop := interrupt_behind(exc)) is not None:
                raise stop from None
            return True  # not judged: a run that goes on will
        return probe.repaired > 0

    # sources -------------------------------------------------------------------------

    def queue(self) -> None:
        """Every unresolved repair-queue row, oldest first (keyset pages)."""
        last = 0
        while not self.more:
            rows = open_rows(self.engine, last)
            if not rows:
                return
            for row in rows:
                last = row.id
                self.report.queue_seen += 1
                target = queue_target(row.transaction_id, row.legacy_system, row.legacy_id)
                if target is None:
                    self.report.skipped["unidentifiable_queue_row"] = (
                        self.report.skipped.get("unidentifiable_queue_row", 0) + 1
                    )
                    continue
                self.entity(*target)
                if self.more:
                    return

    def detected(self) -> None:
        """Every pair the set-based rule flags now (fresh read, chunk by chunk)."""
        for system, lt in self.tables.items():
            for rows in iter_inconsistent(self.engine, lt, chunk=DETECT_CHUNK):
                for row in rows:
                    if row.transaction_id is None and system not in self.behind:
                        self._backfill_behind(system)
                    self.entity(system, row.legacy_id, row.transaction_id)
                    if self.more:
                        return

    def listed(self, keys: ListedKeys) -> None:
        """Exactly the entities of a ``check --out`` file (validated), in order."""
        for key in keys:
            self.entity(key.system, key.legacy_id, key.transaction_id)
            if self.more:
                return


def run_repair(
    engine: sa.Engine,
    settings: Settings,
    *,
    strategy: Strategy | str,
    dry_run: bool = False,
    limit: int | None = None,
    actor: str = "repair",
    reason: str | None = None,
    from_file: str | os.PathLike[str] | None = None,
    systems: Iterable[LegacySystemType | str] | None = None,
    authoritative_only: bool = False,
    on_progress: Callable[[RepairReport, int | None], None] | None = None,
) -> RepairReport:
    """Repair the repair queue, then everything a fresh detection finds (see module doc).

    ``systems``: only these legacy systems' entities (their queue rows, their pairs,
    their lines of ``from_file``); None or empty: every system. A repair meant for a
    system still legacy-primary must not write ``legacy_wins`` over one whose unified
    side is already primary.

    ``limit`` caps the number of entities repaired; ``dry_run`` plans and counts without
    writing anything. ``reason`` (the operator's why; the CLI requires it without
    ``--dry-run``) goes into every history row the repair writes, with ``actor``.
    ``from_file`` (a ``check --out`` file): repair exactly the entities it lists, not
    the queue nor a fresh detection; a malformed line refuses the whole file before
    anything is written (:class:`InputError` naming the line). ``authoritative_only``:
    an entity whose mode, read as it is locked, reads the side the strategy would
    overwrite is skipped (``side_read_by_mode``): the monitor's repair, whose strategy
    was chosen by modes a rollback may have changed since. ``on_progress(report,
    total)``: called after each entity examined, with the report so far and how many
    entities the run has in all where it knows (``from_file``'s; None: the queue and a
    detection are read as they go).
    """
    chosen = Strategy.parse(strategy)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    if not actor or not str(actor).strip():
        raise InputError("actor is required (who runs the repair; recorded in the history)")
    only = frozenset(LegacySystemType.parse(system) for system in systems or ())
    tables = resolve_legacy_tables(engine, settings)
    if only:
        tables = {system: lt for system, lt in tables.items() if system in only}
    if reason is not None and not reason.strip():
        raise InputError("reason must not be blank (why the repair runs; recorded)")
    if reason is not None:
        reason = check_reason(reason)
    listed = None if from_file is None else ListedKeys(from_file)  # validated, whole
    if listed is not None:
        log.info("repair --from %s: %d entities", from_file, listed.count)
    report = RepairReport(
        chosen,
        dry_run,
        str(actor),
        limit,
        reason.strip() if reason else None,
        authoritative_only=authoritative_only,
    )
    started = time.perf_counter()
    total = None if listed is None else listed.count
    tick = None if on_progress is None else (lambda: on_progress(report, total))
    repairer = _Repairer(engine, settings, tables, report, tick)
    # One repair of a system at a time (a dry run writes nothing): refused at once.
    claim = nullcontext() if dry_run else claim_systems(engine, tables, settings.network)
    try:
        with claim:
            with engine.connect() as conn:  # what it stamps, on the database's clock
                repairer.clock.measure(conn)
            if listed is not None:
                repairer.listed(listed)
            else:
                repairer.queue()
                if not repairer.more:
                    repairer.detected()
    except (KeyboardInterrupt, sa.exc.OperationalError) as exc:
        # Ctrl-C, or the failure of a cleanup it cut short (a rollback on the connection
        # the driver left mid-command): the run's interruption either way.
        if not isinstance(exc, KeyboardInterrupt) and interrupt_behind(exc) is None:
            raise StorageError(f"repair stopped: {str(exc.orig).strip()}") from None
        report.duration_ms = (time.perf_counter() - started) * 1000
        raise RepairInterrupted(report) from None
    finally:
        if listed is not None:
            listed.close()
    report.limit_reached = repairer.more
    try:
        report.warnings = _overwritten_authority(engine, report)
    except StorageError as exc:  # the repairs are committed: the report is still theirs
        log.warning("cannot tell whose authoritative side the repair wrote: %s", exc)
    report.warnings[:0] = [said for said in repairer.behind.values() if said is not None]
    report.duration_ms = (time.perf_counter() - started) * 1000
    return report


def backfill_behind(
    engine: sa.Engine, settings: Settings, systems: list[LegacySystemType]
) -> str | None:
    """A warning when the backfill of one of ``systems`` has not completed (None when
    it has, or when its progress cannot be read): each row it has not copied is
    ``missing_unified`` to a repair, which writes them one at a time (a hurried
    operator's repair in phase 2 wrote 139,279 in ten minutes at 80% of a core)."""
    try:
        states = progress(engine, settings)
    except StorageError:
        return None
    behind = [s.value.lower() for s in systems if not states[s.value].get("complete")]
    if not behind:
        return None
    return (
        f"the backfill of {', '.join(behind)} has not completed: the rows it has not copied "
        "yet are repaired here one at a time (a history row each, not throttled); "
        "`unistatus backfill` copies them set-based and throttled, and a repair after it "
        "finds what is left"
    )


def _overwritten_authority(engine: sa.Engine, report: RepairReport) -> list[str]:
    """A warning per system whose authoritative values (the side its mode reads) the run
    overwrote or would: the strategy that keeps them is named. Nothing is refused: an
    operator may know that side is the wrong one."""
    if not report.overwrites:
        return []
    modes = get_modes(engine)
    hit: dict[str, str] = {}
    for name, action in report.overwrites:
        side = "unified" if modes[LegacySystemType.parse(name)].reads_unified else "legacy"
        if action == f"write_{side}":
            hit[name] = side
    keep = {"unified": "unified_wins", "legacy": "legacy_wins"}
    verb = "would overwrite" if report.dry_run else "overwrote"
    return [
        f"{system}: {report.strategy.value} {verb} {side} values, the authoritative side "
        f"(its mode {modes[LegacySystemType.parse(system)].value} reads {side}); "
        f"`--strategy {keep[side]}` keeps them"
        for system, side in sorted(hit.items())
    ]
