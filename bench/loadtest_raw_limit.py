"""The load test against its raw SQL limit: the same work with no adapter, in one run.

``unistatus loadtest`` (10,000 transactions, 50 threads, DUAL_WRITE_LEGACY_PRIMARY)
against a driver-only client that sends exactly the adapter's hot-path SQL (the
statements of ``unistatus.adapter.sql``, compiled the same way) for exactly the same
walks (same seeds, ``unistatus.sim.traffic.valid_path``), with the statuses worked out
before the clock starts: per new transaction the creating CTE in a transaction (it
takes the mode lock itself), per step the guarded dual-write statement in autocommit,
planned from the state the client wrote last (as the adapter's state cache does), on
one psycopg connection per thread, behind the same first-come-first-served gate of
``--write-concurrency`` operations in flight (the adapter's default for PostgreSQL;
0: none). No validation, no mapping, no retries, no SQLAlchemy: what this host can do
with these statements at this concurrency.

Each variant runs on its own throwaway database (autovacuum may be off: a reused one
would bloat), in alternating rounds so drift hits both alike.

    .venv/bin/python bench/loadtest_raw_limit.py --json
    .venv/bin/python bench/loadtest_raw_limit.py --transactions 10000 --concurrent 50 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

import psycopg
import sqlalchemy as sa
from _databases import throwaway_postgres

from unistatus.adapter.admission import FairGate
from unistatus.adapter.sql import HotStatements
from unistatus.clock import utcnow
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.control import set_mode
from unistatus.db.dialect import PostgresOps, ops_for
from unistatus.db.engine import create_engine
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import (
    DualWriteMode,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.sim.loadtest import CURRENCIES, percentile, run_load_test
from unistatus.sim.traffic import valid_path

MODE = DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY


@dataclass
class Walk:
    """One transaction's work, decided before the clock starts."""

    ttype: UnifiedTransactionType
    user_id: int
    amount: Decimal
    currency: str
    steps: list[tuple[str, str]]  # (unified, legacy) per status, the first one created


def plan_walks(transactions: int, seed: int) -> list[Walk]:
    """The load test's walks (same seeds as ``unistatus.sim.loadtest._walk``)."""
    mapper = LegacyStatusMapper()
    walks = []
    for index in range(transactions):
        rng = random.Random(seed * 1_000_003 + index)
        ttype = rng.choice(list(UnifiedTransactionType))
        path = valid_path(ttype, rng)
        amount = Decimal(rng.randint(100, 5_000_000)) / 100
        user_id = rng.randint(1, 100_000)
        currency = rng.choice(CURRENCIES)
        steps: list[tuple[str, str]] = []
        legacy: str | None = None
        for step in path:
            if isinstance(step, UnifiedTransactionStatus):
                unified = step.value
                legacy = mapper.to_legacy(ttype, step, current=legacy)
            else:
                assert isinstance(step, Enum)
                legacy = str(step.value)
                unified = mapper.to_unified(ttype.legacy_system, legacy).value
            steps.append((unified, legacy))
        walks.append(Walk(ttype, user_id, amount, currency, steps))
    return walks


def run_raw(url: str, walks: list[Walk], concurrent: int, slots: int) -> dict[str, Any]:
    """The walks through psycopg alone, with the adapter's SQL."""
    engine = create_engine(url)
    settings = load_settings()
    hot = HotStatements(
        resolve_legacy_tables(engine, settings, require_status=False),
        ops_for(engine),
        locked_mode=True,
    )
    gate = FairGate(slots) if slots else None
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(reversed(walks))

    def worker() -> None:
        conn = psycopg.connect(dsn)
        mine: list[float] = []
        try:
            while True:
                with lock:
                    if not queue:
                        break
                    walk = queue.pop()
                system = walk.ttype.legacy_system
                create, write = hot.create_dual(system), hot.guarded_dual_write(system)
                (unified, legacy), *steps = walk.steps
                started = time.perf_counter()
                enter(gate)
                conn.autocommit = False
                values = {
                    "p_mode": MODE.value,
                    "c_user_id": walk.user_id,
                    "c_amount": walk.amount,
                    "c_currency": walk.currency,
                    "c_status": unified,
                    "c_legacy_status": legacy,
                    "c_meta": None,
                    "c_operation_id": str(uuid.uuid4()),
                    "c_triggered_by": "create_transaction",
                    "c_now": utcnow(),
                }
                try:
                    row = conn.execute(create.compiled.string, create.bind(values)).fetchone()
                    conn.commit()
                finally:
                    leave(gate)
                mine.append((time.perf_counter() - started) * 1000)
                assert row is not None
                utx_id, legacy_id = row[0], row[1]
                conn.autocommit = True
                version = 1
                for dst, dst_legacy in steps:
                    started = time.perf_counter()
                    enter(gate)
                    now = utcnow()
                    history = {
                        "h_transaction_id": utx_id,
                        "h_legacy_system": system.value,
                        "h_legacy_id": legacy_id,
                        "h_from_status": unified,
                        "h_to_status": dst,
                        "h_from_legacy_status": legacy,
                        "h_to_legacy_status": dst_legacy,
                        "h_reason": "load test",
                        "h_triggered_by": "loadtest",
                        "h_meta": None,
                        "h_operation_id": str(uuid.uuid4()),
                        "h_mode": MODE.value,
                        "h_override": False,
                        "h_created_at": now,
                    }
                    values = {
                        "p_legacy_id": legacy_id,
                        "p_mode": MODE.value,
                        "p_legacy_status": dst_legacy,
                        "p_now": now,
                        "p_utx_id": utx_id,
                        "p_status": dst,
                        "p_src_legacy": legacy,
                        "p_src_status": unified,
                        "p_src_unified_legacy": legacy,
                        "p_version": version,
                        **history,
                    }
                    try:
                        written = conn.execute(write.compiled.string, write.bind(values))
                        row = written.fetchone()
                    finally:
                        leave(gate)
                    assert row is not None and row[0] == 1, row  # history rows written
                    mine.append((time.perf_counter() - started) * 1000)
                    unified, legacy, version = dst, dst_legacy, version + 1
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return _figures(latencies, elapsed, len(walks))


def enter(gate: FairGate | None) -> None:
    if gate is not None:
        gate.acquire()


def leave(gate: FairGate | None) -> None:
    if gate is not None:
        gate.release()


def _figures(latencies: list[float], elapsed: float, transactions: int) -> dict[str, Any]:
    data = sorted(latencies)
    return {
        "operations": len(data),
        "elapsed_s": round(elapsed, 2),
        "operations_per_s": round(len(data) / elapsed, 1),
        "transactions_per_s": round(transactions / elapsed, 1),
        "latency_ms": {
            "mean": round(statistics.fmean(data), 2),
            "p50": round(percentile(data, 50), 2),
            "p95": round(percentile(data, 95), 2),
            "p99": round(percentile(data, 99), 2),
        },
    }


def fresh(url: str) -> None:
    engine = create_engine(url)
    schema.upgrade(engine, load_settings())
    set_mode(engine, MODE, reason="bench", actor="bench")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--write-concurrency",
        type=int,
        default=None,
        help="operations in flight, for both clients (default: the adapter's, 4; 0: no limit)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    walks = plan_walks(args.transactions, args.seed)
    settings = load_settings()
    if args.write_concurrency is not None:
        settings = settings.model_copy(update={"write_concurrency": args.write_concurrency})
    slots = settings.write_concurrency
    if slots is None:
        slots = PostgresOps.default_write_concurrency
    results: dict[str, list[dict[str, Any]]] = {"raw": [], "adapter": []}
    for round_no in range(args.rounds):
        order = ["raw", "adapter"] if round_no % 2 == 0 else ["adapter", "raw"]
        for variant in order:
            with throwaway_postgres(label="ltraw") as url:
                fresh(url)
                if variant == "raw":
                    results["raw"].append(run_raw(url, walks, args.concurrent, slots))
                else:
                    report = run_load_test(
                        url,
                        settings,
                        transactions=args.transactions,
                        concurrent=args.concurrent,
                        mode=MODE,
                        seed=args.seed,
                    )
                    run = report.run.as_dict()
                    assert run["errors"] == 0 and run["consistency_rate"] == 1.0, run
                    results["adapter"].append(
                        {
                            **_figures(
                                report.run.latencies_ms, report.run.elapsed_s, args.transactions
                            ),
                            "errors": run["errors"],
                            "consistency_rate": run["consistency_rate"],
                        }
                    )
            if not args.json:
                last = results[variant][-1]
                print(
                    f"round {round_no + 1} {variant:8s} {last['operations_per_s']:8.1f} op/s  {last['latency_ms']}"
                )

    def median(variant: str, key: str, sub: str | None = None) -> float:
        values = [r[key][sub] if sub else r[key] for r in results[variant]]
        return float(statistics.median(values))

    summary = {
        "transactions": args.transactions,
        "concurrent": args.concurrent,
        "write_concurrency": slots,
        "rounds": results,
        "median_ops_per_s": {v: round(median(v, "operations_per_s"), 1) for v in results},
        "median_p95_ms": {v: round(median(v, "latency_ms", "p95"), 2) for v in results},
    }
    summary["throughput_ratio_adapter_over_raw"] = round(
        summary["median_ops_per_s"]["adapter"] / summary["median_ops_per_s"]["raw"], 3
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"median: raw {summary['median_ops_per_s']['raw']} op/s p95 "
            f"{summary['median_p95_ms']['raw']} ms; adapter "
            f"{summary['median_ops_per_s']['adapter']} op/s p95 "
            f"{summary['median_p95_ms']['adapter']} ms; throughput ratio "
            f"{summary['throughput_ratio_adapter_over_raw']}"
        )


if __name__ == "__main__":
    main()
