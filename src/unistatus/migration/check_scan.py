"""Walking a check's key ranges: one system's from its stored position, several at once.

:class:`RangeScan` counts one key range (one statement, :mod:`check_sql`), re-checks the
pairs a write may be in flight for, and keeps the examples; :func:`walk_system` walks a
system's ranges and commits its position after each; :func:`walk_systems` walks the
systems one after another, or at once on their own connections (docs/check.md, "The
systems at once").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import LegacyTable
from unistatus.db.server_clock import clock_of
from unistatus.domain.statuses import LegacySystemType
from unistatus.migration.check_out import MismatchWriter
from unistatus.migration.check_recheck import recheck
from unistatus.migration.check_runs import RunState, SystemPosition, add_counts
from unistatus.migration.check_sql import (
    InconsistentRow,
    chunk_keys,
    count_chunk,
    example_window,
    inconsistent_rows,
    pair_flags,
)

# Inconsistent pairs updated this recently may be a write in flight: they are re-checked.
# Older ones have been inconsistent for longer than any write takes.
RECHECK_WINDOW = timedelta(minutes=5)


@dataclass
class RangeScan:
    """What one check (or one round of continuous verification) scans, and how."""

    engine: sa.Engine
    ops: DialectOps
    settings: Settings
    since: datetime | None
    chunk: int
    examples: int
    project_pending: bool
    out: MismatchWriter | None = None
    recheck: bool = True
    kept_examples: list[dict[str, Any]] = field(default_factory=list)
    # Count by one FULL JOIN (check_sql.pair_flags): when other ranges are counted at once.
    full_join: bool = False
    # Parallel workers for the statements (False: one core; beside live traffic).
    parallel: bool = True

    def range(
        self, conn: sa.Connection, lt: LegacyTable, lo: int | None
    ) -> tuple[int | None, dict[str, int]]:
        """Check the range above ``lo``: its upper key (None: the last) and its counts.

        Inconsistent pairs updated within :data:`RECHECK_WINDOW` (a write may be in
        flight) are re-checked (:func:`recheck`) before they are counted, kept as
        examples or written to --out; older ones have been inconsistent for longer than
        any write takes. Nothing more is read for a consistent range.
        """
        hi, span = chunk_keys(conn, lt, lo, self.chunk)
        pairs = pair_flags(
            lt, lo, hi, self.since, project_pending=self.project_pending, full_join=self.full_join
        )
        # On the clock the writers stamp updated_at with (the database's, measured by the
        # run: a host minutes ahead re-checked no write in flight and reported it).
        cutoff = clock_of(self.engine).now() - RECHECK_WINDOW
        self.ops.plan_for_scans(conn, self.settings.check_work_mem_mb, parallel=self.parallel)
        counts, recent, spots = count_chunk(conn, pairs, cutoff, span)
        if counts["ok"] >= counts["total"]:
            conn.rollback()
            return hi, counts
        # The recent inconsistent pairs, as first seen (their kinds, by key, from the
        # counting statement), then as they are once no write to them is in flight
        # (None: consistent now, a write caught half-way).
        now: dict[int, InconsistentRow | None] = {}
        # Every inconsistent pair of the range is a recent one: the re-check read them
        # all, and the examples and --out need no read of their own.
        covered = self.recheck and len(recent) == counts["total"] - counts["ok"]
        if recent and self.recheck:
            conn.rollback()  # no snapshot held while waiting for writers
            keys = sorted(recent)
            now = dict.fromkeys(keys)
            for row in recheck(
                self.ops,
                lt,
                keys,
                since=self.since,
                project_pending=self.project_pending,
                statement_ms=self.settings.statement_timeout_ms,
                lock_ms=self.settings.lock_timeout_ms,
            ):
                if row.legacy_id is not None:
                    now[row.legacy_id] = row
            for kinds in recent.values():  # counted as first seen: count them as they are now
                counts["ok"] += 1
                for kind in kinds:
                    counts[kind] -= 1
            for still in now.values():
                if still is not None:
                    counts["ok"] -= 1
                    for kind in still.kinds:
                        counts[kind] += 1
        wanted = self.examples - len(self.kept_examples)
        if wanted > 0 or self.out is not None:
            window = None if self.out is not None else example_window(spots, wanted)
            if covered:
                listed = [row for row in now.values() if row is not None]
            elif window is not None:
                # Only the examples: read from the keys the counting statement located
                # them in (a few slices of the range), not from the whole range again.
                near = pair_flags(lt, *window, self.since, project_pending=self.project_pending)
                self.ops.plan_for_scans(conn, parallel=self.parallel)
                listed = inconsistent_rows(conn, near, lt.system, wanted)
            else:  # the whole range again (--out): the same statement's hash tables
                self.ops.plan_for_scans(
                    conn, self.settings.check_work_mem_mb, parallel=self.parallel
                )
                listed = inconsistent_rows(conn, pairs, lt.system, None if self.out else wanted)
            for first in listed:
                shown = now.get(first.legacy_id, first) if first.legacy_id in now else first
                if shown is None:
                    continue
                if len(self.kept_examples) < self.examples:
                    self.kept_examples.append(shown.as_example())
                if self.out is not None:
                    self.out.write(shown.as_record())
        conn.rollback()
        counts["ok"] = max(0, min(counts["ok"], counts["total"]))
        return hi, counts


def walk_system(
    scan: RangeScan,
    run: RunState,
    lt: LegacyTable,
    deadline: float | None,
    on_range: Callable[[LegacySystemType, SystemPosition], None] | None,
    stop: threading.Event | None = None,
) -> bool:
    """Walk one system's ranges from its stored position; False when out of time (or
    told to ``stop``: another system's walk failed)."""
    pos = run.systems[lt.system]
    with scan.engine.connect() as conn:
        while not pos.done:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if stop is not None and stop.is_set():
                return False
            hi, got = scan.range(conn, lt, pos.position)
            out_bytes = scan.out.sync() if scan.out is not None else None
            # The range's counts and the position past it, in one transaction: a run
            # killed at any point has done both or neither. On the range's connection,
            # committed asynchronously (PostgreSQL, :meth:`DialectOps.bound_batch`): a
            # server crash may lose the last positions, never half of one, and a resumed
            # run then checks those ranges again.
            pos.counts = add_counts(pos.counts, got)
            pos.examples = scan.kept_examples[: scan.examples]
            pos.position, pos.done = hi, hi is None
            pos.ranges += 1
            pos.out_bytes = out_bytes
            with conn.begin():
                settings = scan.settings
                scan.ops.bound_batch(conn, settings.statement_timeout_ms, settings.lock_timeout_ms)
                run.commit(conn, lt.system)
            if on_range is not None:
                on_range(lt.system, pos)
    return True


def walk_systems(
    scans: Mapping[LegacySystemType, RangeScan],
    run: RunState,
    tables: Mapping[LegacySystemType, LegacyTable],
    deadline: float | None,
    on_range: Callable[[LegacySystemType, SystemPosition], None] | None,
    at_once: bool,
) -> bool:
    """Walk every system's ranges; False when out of time before all were covered.

    ``at_once``: each system on its own connection and thread, side by side (PostgreSQL;
    each system's positions are its own rows, committed on its own connection; the
    ``on_range`` callback is then called from those threads). Not with ``--out``: one
    file receives every system's mismatches and a resumed run cuts it at one byte
    offset, so the systems are walked one after another. An error in one walk, or an
    interrupt (Ctrl-C) of the caller, stops the others after their current range.

    One after another, a system keeps only the examples the systems before it left
    room for (the report lists the first ``examples`` in system order).
    """
    order = list(scans)
    if not at_once:
        room = scans[order[0]].examples if order else 0
        for system in order:
            scan = scans[system]
            scan.examples = max(0, min(scan.examples, room))
            if not walk_system(scan, run, tables[system], deadline, on_range):
                return False
            room -= len(scan.kept_examples)
        return True
    failed = threading.Event()

    def walk(system: LegacySystemType) -> bool:
        try:
            return walk_system(scans[system], run, tables[system], deadline, on_range, failed)
        except BaseException:
            failed.set()  # the others stop after their range: the error is reported now
            raise

    with ThreadPoolExecutor(max_workers=len(order), thread_name_prefix="check") as pool:
        futures = [pool.submit(walk, system) for system in order]
        try:
            return all([f.result() for f in futures])
        except BaseException:
            failed.set()  # Ctrl-C here: the walks stop after their range, not at their end
            raise


def room_for_walks(engine: sa.Engine, walks: int) -> bool:
    """Whether ``engine``'s pool lends ``walks`` walks their connections at once: each
    holds one for its ranges and takes a second for a re-check (``recheck``). A smaller
    pool (an application's engine) walks the systems one after another rather than
    waiting on its own connections."""
    pool = engine.pool
    if isinstance(pool, sa.pool.NullPool):
        return True
    if not isinstance(pool, sa.pool.QueuePool):
        return False
    overflow = int(getattr(pool, "_max_overflow", 0))  # QueuePool has no public reader
    return overflow < 0 or pool.size() + overflow >= 2 * walks
