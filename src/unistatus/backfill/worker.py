"""One backfill worker: claim a chunk, copy it, checkpoint it, in ONE transaction.

The claim (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), the ``INSERT ... SELECT`` of the
chunk, the quarantine of its unmappable rows and the chunk's ``done`` mark commit
together. A worker killed at any instant leaves its chunk pending and untouched, and
the next worker (this host or another) copies it exactly once.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from unistatus.backfill.batch import ChunkCopier
from unistatus.backfill.control import is_paused
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.dialect import DialectOps, retry_reason
from unistatus.db.legacy import LegacyTable
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import StorageError

MAX_ATTEMPTS = 8
PAUSE_POLL_SECONDS = 0.2


class _Paused:
    """The batch was not run: the backfill is paused."""


PAUSED = _Paused()


@dataclass(frozen=True)
class BatchResult:
    system: LegacySystemType
    start_id: int
    end_id: int
    rows: int  # planned rows of the chunk (what progress counts)
    inserted: int
    already_present: int
    quarantined: int
    retries: int


@dataclass
class Tally:
    """What one worker did in this invocation."""

    batches: int = 0
    rows: int = 0
    inserted: int = 0
    already_present: int = 0
    quarantined: int = 0
    retries: int = 0
    per_system: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, b: BatchResult) -> None:
        self.batches += 1
        self.rows += b.rows
        self.inserted += b.inserted
        self.already_present += b.already_present
        self.quarantined += b.quarantined
        self.retries += b.retries
        s = self.per_system.setdefault(
            b.system.value,
            {"batches": 0, "inserted": 0, "already_present": 0, "quarantined": 0, "retries": 0},
        )
        s["batches"] += 1
        s["inserted"] += b.inserted
        s["already_present"] += b.already_present
        s["quarantined"] += b.quarantined
        s["retries"] += b.retries

    def merge(self, other: Tally) -> None:
        for name in ("batches", "rows", "inserted", "already_present", "quarantined", "retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for system, counts in other.per_system.items():
            mine = self.per_system.setdefault(system, dict.fromkeys(counts, 0))
            for key, value in counts.items():
                mine[key] = mine.get(key, 0) + value


class Throttle:
    """Keeps a worker at or under ``rate`` rows per second (None: unbounded)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.reset()

    def reset(self) -> None:
        self._started = time.monotonic()
        self._rows = 0

    def after(self, rows: int) -> None:
        if not self.rate:
            return
        self._rows += rows
        ahead = self._rows / self.rate - (time.monotonic() - self._started)
        if ahead > 0:
            time.sleep(ahead)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


class Worker:
    def __init__(
        self,
        engine: sa.Engine,
        ops: DialectOps,
        settings: Settings,
        tables: dict[LegacySystemType, LegacyTable],
        *,
        max_rows_per_second: float | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
        keep_going: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.ops = ops
        self.settings = settings
        self.tables = tables
        self.throttle = Throttle(max_rows_per_second)
        self.on_batch = on_batch
        # Asked before each batch; False stops the worker (e.g. its parent died).
        self.keep_going = keep_going
        self.name = worker_name()
        self.tally = Tally()
        self._copiers = {system: ChunkCopier(ops, lt) for system, lt in tables.items()}
        self._exhausted: set[LegacySystemType] = set()

    def run(self) -> Tally:
        """Copy chunks until none is left to claim; hold while the backfill is paused."""
        held = False
        while True:
            if self.keep_going is not None and not self.keep_going():
                return self.tally
            result = self._batch_with_retries()
            if result is None:
                return self.tally
            if result is PAUSED:
                held = True
                time.sleep(PAUSE_POLL_SECONDS)
                continue
            assert isinstance(result, BatchResult)
            if held:
                held = False
                self.throttle.reset()  # a pause is not credit for a burst afterwards
            self.tally.add(result)
            if self.on_batch is not None:
                self.on_batch(result)
            self.throttle.after(result.rows)

    def _batch_with_retries(self) -> BatchResult | _Paused | None:
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self._batch(attempt)
            except sa.exc.DBAPIError as exc:
                # A timed-out or lock-starved batch is redone, never skipped.
                reason = retry_reason(exc)
                if reason is None:
                    raise _storage_error(exc, "copying a batch") from None
                if attempt + 1 == MAX_ATTEMPTS:
                    raise StorageError(
                        f"backfill batch failed {MAX_ATTEMPTS} times ({reason}); lower "
                        "--batch-size or raise statement_timeout_ms / lock_timeout_ms. "
                        "Progress so far is kept: rerun to resume."
                    ) from None
                time.sleep(min(5.0, 0.05 * 2**attempt))
        return None  # pragma: no cover (the loop always returns or raises)

    def _batch(self, retries: int) -> BatchResult | _Paused | None:
        with self.ops.write_transaction() as conn:
            # Statement and lock timeouts, and an asynchronous commit: safe because the
            # chunk's rows and its checkpoint are lost or kept together, and a lost
            # chunk is simply copied again (ON CONFLICT DO NOTHING).
            self.ops.bound_batch(
                conn, self.settings.statement_timeout_ms, self.settings.lock_timeout_ms
            )
            now = utcnow()
            paused = False
            for system in self.tables:
                if system in self._exhausted:
                    continue
                copied = self._copiers[system].claim_and_copy(
                    conn, worker=self.name, attempts=retries + 1, now=now
                )
                if copied is not None:
                    return BatchResult(
                        system,
                        copied.start_id,
                        copied.end_id,
                        copied.rows,
                        copied.inserted,
                        copied.already_present,
                        copied.quarantined,
                        retries,
                    )
                if is_paused(conn, system):
                    paused = True  # this system's waits; another's may go on
                    continue
                # Nothing free: done, or the rest is held by other workers.
                self._exhausted.add(system)
        return PAUSED if paused else None


def _storage_error(exc: sa.exc.DBAPIError, doing: str) -> StorageError:
    first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    return StorageError(
        f"database failed while {doing}: {first}. Every committed batch is kept; "
        "rerun the same command to resume."
    )
