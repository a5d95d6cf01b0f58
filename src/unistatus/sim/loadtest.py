"""Load test: many transactions, each walked to a final status through the adapter.

Closed loop: ``concurrent`` threads each take the next transaction, create it and walk
it along a valid path of its type (:func:`unistatus.sim.traffic.valid_path`: OTP for
cashouts, seller acceptance and disputes for escrows, rate lock and approval for
exchanges), one adapter call per step. Every call's latency is recorded; at the end the
set-based check (:func:`unistatus.migration.check.run_check`, not stored) runs over every pair
updated since the run began. The run uses its own engine, sized for the concurrency,
and sets the requested mode for the run only (the previous mode is restored after),
holding the mode meanwhile (:func:`~unistatus.sim.loadtest_mode.claim_mode`): another
load test is refused while one that sets a mode runs, which would otherwise take the
first one's temporary mode for the one to put back.
Its operations are recorded in the operation statistics like any adapter's (so they
appear in ``/metrics`` and the gates), flushed when each run ends.

With a closed loop, latency = concurrency / throughput (Little's law): at 50 threads
the figures measure the database and the host under saturation, not an idle system.

Run it against a staging copy, never production: it writes real rows and switches the
database-wide write mode.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from unistatus.adapter.core import DualWriteAdapter
from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.control import get_mode
from unistatus.db.dialect import is_in_memory
from unistatus.db.engine import create_engine, session_name
from unistatus.domain.statuses import DualWriteMode, UnifiedTransactionType
from unistatus.errors import InputError, UnistatusError
from unistatus.migration.check import run_check
from unistatus.sim.loadtest_mode import ACTOR, RESTORE_SECONDS, ModeGuard, claim_mode
from unistatus.sim.loadtest_targets import TargetResult, judge
from unistatus.sim.traffic import valid_path

__all__ = ["LoadTestReport", "RunStats", "percentile", "run_load_test"]

CURRENCIES = ("USD", "USDT", "EUR", "BTC")


@dataclass
class RunStats:
    """Figures of one load run (one mode)."""

    mode: DualWriteMode
    transactions: int
    concurrent: int
    operations: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    consistency_rate: float | None = None
    consistency_checked: int = 0
    inconsistent: int = 0
    first_errors: list[str] = field(default_factory=list)

    @property
    def throughput_tps(self) -> float:
        return self.transactions / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def ops_per_second(self) -> float:
        return self.operations / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.operations if self.operations else 0.0

    def latency(self) -> dict[str, float]:
        data = sorted(self.latencies_ms)
        if not data:
            return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
        return {
            "mean": round(sum(data) / len(data), 3),
            "p50": round(percentile(data, 50), 3),
            "p95": round(percentile(data, 95), 3),
            "p99": round(percentile(data, 99), 3),
            "max": round(data[-1], 3),
        }

    def targets(self) -> list[TargetResult]:
        """This run against the migration strategy's load-test targets."""
        return judge(self.latency(), self.error_rate, self.consistency_rate)

    @property
    def targets_met(self) -> bool:
        """Every applicable target met (consistency does not apply outside dual modes)."""
        return all(t.passed is not False for t in self.targets())

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "transactions": self.transactions,
            "concurrent": self.concurrent,
            "operations": self.operations,
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_tps": round(self.throughput_tps, 2),
            "operations_per_s": round(self.ops_per_second, 2),
            "latency_ms": self.latency(),
            "errors": self.errors,
            "error_rate": self.error_rate,
            "consistency_rate": self.consistency_rate,
            "consistency_checked": self.consistency_checked,
            "inconsistent": self.inconsistent,
            "first_errors": self.first_errors,
            "targets": [t.as_dict() for t in self.targets()],
            "targets_met": self.targets_met,
        }


@dataclass
class LoadTestReport:
    """The run, and the LEGACY_ONLY baseline when one was asked for."""

    run: RunStats
    backend: str
    baseline: RunStats | None = None
    # Systems switched by someone else during the run (system: mode found), which the
    # restore left as they were.
    mode_left_alone: dict[str, str] = field(default_factory=dict)

    @property
    def overhead_pct(self) -> dict[str, float] | None:
        """How much slower the run's latencies are than the baseline's, in percent."""
        if self.baseline is None:
            return None
        base, run = self.baseline.latency(), self.run.latency()
        return {
            k: round((run[k] - base[k]) / base[k] * 100, 1) if base[k] else 0.0
            for k in ("mean", "p50", "p95", "p99")
        }

    def as_dict(self) -> dict[str, Any]:
        out = {"backend": self.backend, **self.run.as_dict()}
        if self.mode_left_alone:
            out["mode_left_alone"] = dict(self.mode_left_alone)
        if self.baseline is not None:
            out["baseline"] = self.baseline.as_dict()
            out["dual_write_overhead_pct"] = self.overhead_pct
        return out


def percentile(sorted_data: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted data."""
    if not sorted_data:
        return 0.0
    rank = max(1, min(len(sorted_data), int(-(-pct * len(sorted_data) // 100))))
    return sorted_data[rank - 1]


ProgressFn = Callable[[str, int, int], None]


def run_load_test(
    database: str | sa.Engine,
    settings: Settings,
    *,
    transactions: int = 10_000,
    concurrent: int = 50,
    mode: DualWriteMode | str | None = None,
    baseline: bool = False,
    seed: int = 0,
    on_progress: ProgressFn | None = None,
    restore_seconds: float | None = None,
) -> LoadTestReport:
    """Run the load (after a LEGACY_ONLY baseline if asked); restore the mode after.

    ``on_progress(label, done, total)`` is called as transactions finish. The previous
    mode is put back however the run ends (an error, Ctrl-C); while the database is
    unreachable the restore retries for up to ``restore_seconds`` (None:
    :data:`~unistatus.sim.loadtest_mode.RESTORE_SECONDS`), then raises
    :class:`~unistatus.errors.ModeNotRestoredError`, which names the mode left behind,
    the command that puts it back, and the run's own error.

    InputError at once, nothing written, while another load test holds the mode (a run
    given ``mode`` or ``baseline`` needs it alone; runs without share it).
    """
    if transactions < 1:
        raise InputError(f"--transactions must be at least 1, got {transactions}")
    if not 1 <= concurrent <= 500:
        raise InputError(f"--concurrent must be within 1..500, got {concurrent}")
    url = _url_of(database)
    # Its own engine: a pool as large as the concurrency (no waiting for a connection
    # inside the measured latency), and no pre-ping round trip on every checkout.
    engine = create_engine(
        url,
        schema=settings.schema,
        pool_size=concurrent + 5,
        max_overflow=10,
        pool_timeout=60,
        pool_pre_ping=False,
        application_name=session_name("loadtest"),  # live traffic
        prepared_statements=settings.prepared_statements,
        network=settings.network,
    )
    try:
        # The mode held (another load test refused) before it is read: the mode put
        # back after is never another run's temporary one.
        with claim_mode(engine, exclusive=mode is not None or baseline, network=settings.network):
            return _run_holding_the_mode(
                engine,
                settings,
                transactions,
                concurrent,
                mode,
                baseline,
                seed,
                on_progress,
                restore_seconds,
            )
    finally:
        engine.dispose()


def _run_holding_the_mode(
    engine: sa.Engine,
    settings: Settings,
    transactions: int,
    concurrent: int,
    mode: DualWriteMode | str | None,
    baseline: bool,
    seed: int,
    on_progress: ProgressFn | None,
    restore_seconds: float | None,
) -> LoadTestReport:
    previous = get_mode(engine)
    target = DualWriteMode.parse(mode) if mode is not None else previous
    if baseline and (target.reads_unified or previous.reads_unified):
        raise InputError(
            "a LEGACY_ONLY baseline writes rows unified never sees, so the switch to "
            f"{(target if target.reads_unified else previous).value} after it would be "
            "refused (unified stale): run the baseline with a mode that reads legacy"
        )
    baseline_stats: RunStats | None = None
    guard = ModeGuard(engine, settings, previous)
    restore_s = RESTORE_SECONDS if restore_seconds is None else restore_seconds
    try:
        if baseline:
            guard.switch(DualWriteMode.LEGACY_ONLY, "load test baseline")
            baseline_stats = _run_once(
                engine, settings, transactions, concurrent, seed, "baseline", on_progress
            )
        guard.switch(target, "load test")
        stats = _run_once(engine, settings, transactions, concurrent, seed, "load", on_progress)
    except BaseException as exc:  # Ctrl-C too: the mode goes back, then the error
        guard.restore(restore_s, run_error=exc)
        raise
    guard.restore(restore_s)
    left_alone = {s.value: m.value for s, m in guard.left_alone.items()}
    return LoadTestReport(stats, engine.dialect.name, baseline_stats, left_alone)


def _url_of(database: str | sa.Engine) -> str:
    if isinstance(database, sa.Engine):
        url = database.url
    else:
        url = sa.engine.make_url(database)
    if is_in_memory(url):
        raise InputError("the load test needs a file or server database, not in-memory SQLite")
    return url.render_as_string(hide_password=False)


def _run_once(
    engine: sa.Engine,
    settings: Settings,
    transactions: int,
    concurrent: int,
    seed: int,
    label: str,
    on_progress: ProgressFn | None,
) -> RunStats:
    # A fresh adapter reads the mode just set, instead of a cached one.
    adapter = DualWriteAdapter(engine, settings=settings)
    mode = adapter.modes.refresh()
    stats = RunStats(mode, transactions, concurrent)
    lock = threading.Lock()
    done = 0

    def one(index: int) -> None:
        nonlocal done
        rng = random.Random(seed * 1_000_003 + index)
        latencies, errors = _walk(adapter, rng)
        with lock:
            stats.latencies_ms.extend(latencies)
            stats.operations += len(latencies)
            stats.errors += len(errors)
            if len(stats.first_errors) < 5:
                stats.first_errors.extend(errors[: 5 - len(stats.first_errors)])
            done += 1
            # Under the lock: two walks ending together said "20/20" before "18/20",
            # the log's last line 90% (seen in CI).
            if on_progress is not None:
                on_progress(label, done, transactions)

    since = utcnow()
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrent, thread_name_prefix="loadtest") as pool:
            try:
                for future in as_completed([pool.submit(one, i) for i in range(transactions)]):
                    future.result()
            except BaseException:
                # Stop now (Ctrl-C, a failed walk): the walks under way finish, the
                # rest are never started, instead of the whole run going on first.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        adapter.close()  # its operation statistics reach the table (and /metrics) now
    stats.elapsed_s = time.perf_counter() - started
    _check(engine, settings, since, stats)
    return stats


def _walk(adapter: DualWriteAdapter, rng: random.Random) -> tuple[list[float], list[str]]:
    """Create one transaction and walk it to a final status; (latencies, errors)."""
    ttype = rng.choice(list(UnifiedTransactionType))
    first, *steps = valid_path(ttype, rng)
    latencies: list[float] = []
    errors: list[str] = []
    amount = Decimal(rng.randint(100, 5_000_000)) / 100
    started = time.perf_counter()
    try:
        created = adapter.create_transaction(
            ttype, rng.randint(1, 100_000), amount, rng.choice(CURRENCIES), status=first
        )
    except UnistatusError as exc:
        return [_since(started)], [f"create: {exc}"]
    latencies.append(_since(started))
    if not created.overall_success or created.entity_id is None:
        return latencies, [f"create: {created.error}"]
    entity = created.entity_id
    for step in steps:
        started = time.perf_counter()
        try:
            result = adapter.update_status(entity, step, "load test", ACTOR)
            ok, error = result.overall_success, result.error
        except UnistatusError as exc:
            ok, error = False, str(exc)
        latencies.append(_since(started))
        if not ok:
            errors.append(f"{entity} -> {step}: {error}")
            break
    return latencies, errors


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _check(engine: sa.Engine, settings: Settings, since: datetime, stats: RunStats) -> None:
    """The consistency check over every pair this run touched (updated since it began).

    Only the dual modes keep both sides in step; in LEGACY_ONLY the unified side is
    untouched and in UNIFIED_ONLY legacy is frozen, so the rate does not apply (None).
    The report is not stored: a load test must not count as a phase gate's check.
    """
    if not stats.mode.is_dual:
        return
    report = run_check(engine, settings, since=since, store=False, examples=0)
    stats.consistency_checked = report.total
    stats.inconsistent = report.inconsistent
    stats.consistency_rate = report.consistency_rate
