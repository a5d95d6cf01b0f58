"""Simulated live traffic through a :class:`DualWriteAdapter`, from several threads.

Used by the demo, the load test and the backfill-under-load tests. Every write is a
change the transition rules allow, so anything the adapter refuses is a real race (a
concurrent writer moved the transaction first) and anything that fails is a real bug:

* new transactions are created and walked along a realistic path (:func:`valid_path`):
  OTP and approvals for cashouts, seller acceptance and disputes for escrows, rate
  lock and admin approval for exchanges;
* existing rows (ids from ``existing``) get a status picked from
  ``TransitionRules.allowed(type, current)`` after reading their current status.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any

from unistatus.adapter.core import DualWriteAdapter, DualWriteResult
from unistatus.domain.ids import LegacyRef
from unistatus.domain.statuses import CashoutStatus as C
from unistatus.domain.statuses import EscrowStatus as E
from unistatus.domain.statuses import ExchangeStatus as X
from unistatus.domain.statuses import LegacySystemType, UnifiedTransactionType
from unistatus.domain.statuses import UnifiedTransactionStatus as U
from unistatus.domain.transitions import TransitionRules
from unistatus.errors import UnistatusError

# A path element: a unified status or a legacy enum value (the adapter accepts both).
Step = U | C | E | X

CURRENCIES: dict[UnifiedTransactionType, tuple[str, ...]] = {
    UnifiedTransactionType.WALLET_CASHOUT: ("USD", "EUR", "USDT", "NGN"),
    UnifiedTransactionType.ESCROW: ("USD", "EUR", "NGN", "GHS"),
    UnifiedTransactionType.EXCHANGE: ("BTC", "ETH", "USDT", "USD"),
}
MAX_ERROR_SAMPLES = 20
# How long past its time a run goes on to create the transactions it still owes.
MAX_OVERRUN_SECONDS = 60.0
TRIGGERED_BY = "traffic-simulator"


def valid_path(transaction_type: UnifiedTransactionType | str, rng: random.Random) -> list[Step]:
    """A realistic life of one transaction, from its creation status to a final one.

    Consecutive elements are either an allowed transition or a legacy-only change that
    keeps the unified status (exchange CREATED -> RATE_LOCKED).
    """
    ttype = UnifiedTransactionType(
        transaction_type.value if isinstance(transaction_type, Enum) else transaction_type
    )
    return _PATHS[ttype](rng)


def _cashout_path(rng: random.Random) -> list[Step]:
    path: list[Step] = [U.PENDING]
    if rng.random() < 0.7:
        path.append(C.OTP_PENDING)
    if rng.random() < 0.3:
        path.append(C.USER_CONFIRM_PENDING)
    if rng.random() < 0.25:
        # An operator has to configure the address or fund the hot wallet first.
        path.append(rng.choice([C.ADMIN_PENDING, C.PENDING_ADDRESS_CONFIG]))
        if rng.random() < 0.3:
            path.append(C.PENDING_SERVICE_FUNDING)
    if rng.random() < 0.1:
        return [*path, rng.choice([U.CANCELLED, U.EXPIRED, U.FAILED])]
    path += [C.APPROVED, C.EXECUTING]
    if rng.random() < 0.5:
        path.append(C.AWAITING_RESPONSE)
        if rng.random() < 0.2:  # the provider asked for a retry
            path += [C.EXECUTING, C.AWAITING_RESPONSE]
    path.append(U.SUCCESS if rng.random() < 0.9 else U.FAILED)
    return path


def _escrow_path(rng: random.Random) -> list[Step]:
    path: list[Step] = [U.PENDING]
    seller_accepted = rng.random() < 0.6
    if seller_accepted:
        path.append(E.AWAITING_SELLER)
    path.append(E.PAYMENT_PENDING)
    if rng.random() < 0.15:
        path.append(E.PARTIAL_PAYMENT)
    if rng.random() < 0.1:
        return [*path, rng.choice([E.CANCELLED, E.EXPIRED])]
    path.append(E.PAYMENT_CONFIRMED)
    if not seller_accepted:
        path.append(U.AWAITING_APPROVAL)
    path.append(E.ACTIVE)
    if rng.random() < 0.15:
        path.append(E.DISPUTED)
        if rng.random() < 0.4:  # resolved for the buyer: funds returned
            return [*path, E.REFUNDED]
    if rng.random() < 0.6:
        path.append(U.RELEASE_PENDING)  # unified-only refinement of ACTIVE
    path.append(E.COMPLETED)
    return path


def _exchange_path(rng: random.Random) -> list[Step]:
    path: list[Step] = [U.PENDING]
    if rng.random() < 0.05:
        return [*path, X.ADDRESS_GENERATION_FAILED]
    if rng.random() < 0.6:
        path.append(X.RATE_LOCKED)  # legacy-only change: still PENDING when unified
    path.append(X.AWAITING_DEPOSIT)
    if rng.random() < 0.1:
        return [*path, rng.choice([X.CANCELLED, X.FAILED])]
    if rng.random() < 0.5:
        path.append(X.PAYMENT_RECEIVED)
    path.append(X.PAYMENT_CONFIRMED)
    if rng.random() < 0.3:
        path.append(X.PENDING_APPROVAL)  # large amount: an admin approves
    path.append(X.PROCESSING)
    path.append(X.COMPLETED if rng.random() < 0.9 else X.FAILED)
    return path


_PATHS: dict[UnifiedTransactionType, Callable[[random.Random], list[Step]]] = {
    UnifiedTransactionType.WALLET_CASHOUT: _cashout_path,
    UnifiedTransactionType.ESCROW: _escrow_path,
    UnifiedTransactionType.EXCHANGE: _exchange_path,
}


@dataclass
class TrafficReport:
    """What a traffic run did. ``overall_success`` is False when any write failed."""

    operations: int = 0
    creates: int = 0
    updates: int = 0
    errors: int = 0
    refused: int = 0
    skipped: int = 0  # picked rows with nothing to do (final, unmappable or missing)
    unchanged: int = 0  # accepted no-ops: a concurrent writer had already made the change
    touched: set[str] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    refused_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def overall_success(self) -> bool:
        return self.errors == 0

    @property
    def throughput(self) -> float:
        """Writes per second."""
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in ms (``q`` within 0..100), nearest-rank; 0.0 when empty."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    def merge(self, other: TrafficReport) -> None:
        self.operations += other.operations
        self.creates += other.creates
        self.updates += other.updates
        self.errors += other.errors
        self.refused += other.refused
        self.skipped += other.skipped
        self.unchanged += other.unchanged
        self.touched |= other.touched
        self.latencies_ms += other.latencies_ms
        self.error_samples += other.error_samples[: MAX_ERROR_SAMPLES - len(self.error_samples)]
        self.refused_samples += other.refused_samples[
            : MAX_ERROR_SAMPLES - len(self.refused_samples)
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "creates": self.creates,
            "updates": self.updates,
            "errors": self.errors,
            "refused": self.refused,
            "skipped": self.skipped,
            "unchanged": self.unchanged,
            "touched": len(self.touched),
            "seconds": round(self.seconds, 3),
            "throughput": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 3),
            "p95_ms": round(self.percentile(95), 3),
            "p99_ms": round(self.percentile(99), 3),
            "overall_success": self.overall_success,
            "error_samples": list(self.error_samples),
        }


class _Budget:
    """Shared stop condition: a deadline, an operation count and an external event.

    ``owed`` creates of each transaction type extend the deadline (by at most
    :data:`MAX_OVERRUN_SECONDS`): past it, workers only create the types still owed.
    """

    def __init__(
        self,
        seconds: float | None,
        operations: int | None,
        stop: threading.Event | None,
        owed: int = 0,
    ) -> None:
        self.deadline = time.monotonic() + seconds if seconds is not None else None
        self.left = operations
        self.stop = stop
        self.owed = {t: owed for t in UnifiedTransactionType} if owed > 0 else {}
        self.lock = threading.Lock()

    def take(self) -> bool:
        if self.stop is not None and self.stop.is_set():
            return False
        if self.deadline is not None and time.monotonic() >= self.deadline:
            if self.still_owed() is None or time.monotonic() >= self.deadline + MAX_OVERRUN_SECONDS:
                return False
        if self.left is None:
            return True
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def still_owed(self) -> UnifiedTransactionType | None:
        """A type of which fewer creates than owed were made or claimed (None: none)."""
        with self.lock:
            return next((t for t, n in self.owed.items() if n > 0), None)

    def claim(self) -> UnifiedTransactionType | None:
        """A type still owed, counted as created now (:meth:`unclaim` if it fails)."""
        with self.lock:
            ttype = next((t for t, n in self.owed.items() if n > 0), None)
            if ttype is not None:
                self.owed[ttype] -= 1
            return ttype

    def unclaim(self, ttype: UnifiedTransactionType) -> None:
        with self.lock:
            self.owed[ttype] += 1

    def created(self, ttype: UnifiedTransactionType) -> None:
        with self.lock:
            if self.owed.get(ttype, 0) > 0:
                self.owed[ttype] -= 1


@dataclass
class _InFlight:
    entity_id: str
    ttype: UnifiedTransactionType
    remaining: list[Step]


class _Worker:
    """One thread's traffic: its own RNG, its own in-flight transactions, its own report."""

    def __init__(
        self,
        adapter: DualWriteAdapter,
        budget: _Budget,
        rng: random.Random,
        new_ratio: float,
        existing: dict[LegacySystemType, tuple[int, int]],
    ) -> None:
        self.adapter = adapter
        self.budget = budget
        self.rng = rng
        self.new_ratio = new_ratio
        self.existing = existing
        self.rules = TransitionRules()
        self.in_flight: list[_InFlight] = []
        self.report = TrafficReport()

    def run(self) -> None:
        while self.budget.take():
            if self.budget.past_deadline():
                # Past its time a run only creates what it owes: none left to claim (the
                # last one taken by another worker meanwhile), take() ends it.
                owed = self.budget.claim()
                if owed is not None:
                    self._create(owed, claimed=True)
                continue
            roll = self.rng.random()
            if roll < self.new_ratio or not (self.in_flight or self.existing):
                self._create()
            elif self.existing and (not self.in_flight or self.rng.random() < 0.5):
                self._update_existing()
            else:
                self._advance()

    # --- operations ---------------------------------------------------------------------

    def _create(self, ttype: UnifiedTransactionType | None = None, claimed: bool = False) -> None:
        """Create a transaction (of ``ttype``: one the budget counted as created when
        ``claimed``) and keep it in flight along its path."""
        ttype = ttype or self.rng.choice(list(UnifiedTransactionType))
        path = valid_path(ttype, self.rng)
        cents = self.rng.randint(100, 5_000_000)
        result = self._write(
            "create",
            lambda: self.adapter.create_transaction(
                ttype,
                user_id=self.rng.randint(1, 50_000),
                amount=Decimal(cents) / 100,
                currency=self.rng.choice(CURRENCIES[ttype]),
                status=path[0],
                metadata={"source": TRIGGERED_BY},
            ),
        )
        succeeded = result is not None and result.overall_success
        if claimed and not succeeded:
            self.budget.unclaim(ttype)
        elif succeeded and not claimed:
            self.budget.created(ttype)
        if result is not None and result.entity_id and len(path) > 1:
            self.in_flight.append(_InFlight(result.entity_id, ttype, path[1:]))

    def _advance(self) -> None:
        item = self.in_flight[self.rng.randrange(len(self.in_flight))]
        step = item.remaining.pop(0)
        result = self._write(
            "update",
            lambda: self.adapter.update_status(
                item.entity_id, step, reason="simulated traffic", triggered_by=TRIGGERED_BY
            ),
        )
        if result is None or not result.overall_success or not item.remaining:
            self.in_flight.remove(item)

    def _update_existing(self) -> None:
        for _ in range(5):  # most historical rows are final: look at a few
            system = self.rng.choice(list(self.existing))
            lo, hi = self.existing[system]
            ref = LegacyRef(system, self.rng.randint(lo, hi))
            try:
                current, _meta = self.adapter.get_transaction_status(ref)
            except UnistatusError:
                current = None
            targets = (
                sorted(self.rules.allowed(system.transaction_type, current)) if current else []
            )
            if not targets:
                continue
            target = self.rng.choice(targets)
            self._write(
                "update",
                partial(
                    self.adapter.update_status,
                    ref,
                    target,
                    reason="simulated traffic",
                    triggered_by=TRIGGERED_BY,
                ),
            )
            return
        self.report.skipped += 1

    def _write(self, kind: str, call: Callable[[], DualWriteResult]) -> DualWriteResult | None:
        report = self.report
        report.operations += 1
        if kind == "create":
            report.creates += 1
        else:
            report.updates += 1
        started = time.perf_counter()
        try:
            result = call()
        except UnistatusError as exc:  # refused: typically a transition lost to a race
            report.latencies_ms.append((time.perf_counter() - started) * 1000)
            report.refused += 1
            if len(report.refused_samples) < MAX_ERROR_SAMPLES:
                report.refused_samples.append(f"{type(exc).__name__}: {exc}")
            return None
        except Exception as exc:  # a bug or a database failure: never hidden
            report.latencies_ms.append((time.perf_counter() - started) * 1000)
            self._error(f"{kind}: {type(exc).__name__}: {exc}")
            return None
        report.latencies_ms.append((time.perf_counter() - started) * 1000)
        if not result.overall_success:
            self._error(f"{kind}: {result.error}")
            return result
        if not result.changed:
            report.unchanged += 1
        if result.entity_id:
            report.touched.add(result.entity_id)
        return result

    def _error(self, message: str) -> None:
        self.report.errors += 1
        if len(self.report.error_samples) < MAX_ERROR_SAMPLES:
            self.report.error_samples.append(message)


def run_traffic(
    adapter: DualWriteAdapter,
    *,
    threads: int = 4,
    seconds: float | None = 3.0,
    operations: int | None = None,
    new_ratio: float = 0.3,
    existing: dict[LegacySystemType, tuple[int, int]] | None = None,
    stop: threading.Event | None = None,
    seed: int = 0,
    creates_per_type: int = 0,
) -> TrafficReport:
    """Drive writes through ``adapter`` from ``threads`` threads until a limit is hit.

    Stops after ``seconds`` (None: no time limit), after ``operations`` writes in total
    (None: no count limit), or when ``stop`` is set, whichever comes first.
    ``existing`` maps a legacy system to an inclusive (min id, max id) range of rows
    to update; ``new_ratio`` is the share of writes that create a new transaction.
    ``creates_per_type``: past ``seconds``, the run goes on (at most
    :data:`MAX_OVERRUN_SECONDS` more) creating transactions of each type until it has
    created this many of each, so that every system has writes for a gate to judge
    however few fit in the time (a loaded machine); ``operations`` and ``stop`` still
    end it.
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    if not 0.0 <= new_ratio <= 1.0:
        raise ValueError("new_ratio must be within 0..1")
    if seconds is None and operations is None and stop is None:
        raise ValueError("give seconds, operations or stop, or traffic would never end")
    if creates_per_type < 0:
        raise ValueError("creates_per_type must be >= 0")
    budget = _Budget(seconds, operations, stop, creates_per_type)
    workers = [
        _Worker(adapter, budget, random.Random(seed * 1_000 + i), new_ratio, dict(existing or {}))
        for i in range(threads)
    ]
    started = time.perf_counter()
    pool = [threading.Thread(target=w.run, name=f"traffic-{i}") for i, w in enumerate(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    report = TrafficReport()
    for w in workers:
        report.merge(w.report)
    report.seconds = time.perf_counter() - started
    return report
