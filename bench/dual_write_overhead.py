"""What dual writing costs: ``update_status`` in DUAL_WRITE_LEGACY_PRIMARY against the
same adapter in LEGACY_ONLY and against a raw single-row UPDATE, in one run.

All three variants flip the same cashouts between PROCESSING and AWAITING_RESPONSE (a
change valid in both directions, so every operation really writes). Variants run in
interleaved rounds, in a rotating order, so drift on a shared machine hits all three
alike; the report gives the median over rounds of each variant's mean time per
operation, and the ratios of those medians.

    .venv/bin/python bench/dual_write_overhead.py              # throwaway local database
    .venv/bin/python bench/dual_write_overhead.py --database-url postgresql://... --rows 500

Without ``--database-url`` a database is created on the local server
(postgresql://postgres@127.0.0.1:5432) and dropped afterwards. With one, the schema is
upgraded in place and the benchmark's rows are left behind: use a scratch database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from unistatus import DualWriteAdapter, DualWriteMode, LegacySystemType
from unistatus.config import load_settings
from unistatus.control import set_mode
from unistatus.db import schema
from unistatus.db.engine import create_engine
from unistatus.db.legacy import resolve_legacy_tables

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FLIP = {"PROCESSING": "AWAITING_RESPONSE", "AWAITING_RESPONSE": "PROCESSING"}
LEGACY = {"PROCESSING": "EXECUTING", "AWAITING_RESPONSE": "AWAITING_RESPONSE"}
VARIANTS = ("dual_write", "legacy_only", "raw_update")


@contextmanager
def throwaway_database(server: str) -> Iterator[str]:
    name = f"unistatus_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@dataclass
class Bench:
    engine: sa.Engine
    adapter: DualWriteAdapter
    ids: list[int]
    state: dict[int, str]
    threads: int

    def run(self, variant: str, ops: int) -> float:
        """Run ``ops`` operations of one variant; mean milliseconds per operation."""
        if variant == "raw_update":
            op = self._raw()
        else:
            mode = (
                DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
                if variant == "dual_write"
                else DualWriteMode.LEGACY_ONLY
            )
            set_mode(self.engine, mode, reason="benchmark", actor="bench")
            if self.adapter.modes.refresh() is not mode:
                raise SystemExit(f"mode did not switch to {mode}")
            op = self._adapter_op()
        # Each thread owns a disjoint slice of the rows: the benchmark measures the
        # write path, not lock waits between threads.
        slices = [self.ids[i :: self.threads] for i in range(self.threads)]
        per_thread = ops // self.threads

        def worker(mine: list[int]) -> None:
            for i in range(per_thread):
                op(mine[i % len(mine)])

        started = time.perf_counter()
        workers = [threading.Thread(target=worker, args=(s,)) for s in slices]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - started
        return elapsed * 1000 * self.threads / (per_thread * self.threads)

    def _next(self, legacy_id: int) -> str:
        target = FLIP[self.state[legacy_id]]
        self.state[legacy_id] = target
        return target

    def _adapter_op(self) -> Callable[[int], None]:
        def op(legacy_id: int) -> None:
            result = self.adapter.update_status(
                f"cashout:{legacy_id}", self._next(legacy_id), "bench", "bench"
            )
            if not result.overall_success or not result.changed:
                raise SystemExit(f"benchmark write failed: {result.as_dict()}")

        return op

    def _raw(self) -> Callable[[int], None]:
        lt = resolve_legacy_tables(self.engine, self.adapter.settings)[LegacySystemType.CASHOUT]
        assert lt.status is not None
        stmt = (
            sa.update(lt.table)
            .where(lt.id == sa.bindparam("lid"))
            .values({lt.status.key: sa.bindparam("st"), lt.updated_at.key: sa.func.now()})
        )

        def op(legacy_id: int) -> None:
            with self.engine.begin() as conn:
                conn.execute(stmt, {"lid": legacy_id, "st": LEGACY[self._next(legacy_id)]})

        return op


def setup(url: str, rows: int, threads: int, synchronous_commit: str) -> Bench:
    settings = load_settings(database_url=url)
    engine = create_engine(
        url, connect_args={"options": f"-c synchronous_commit={synchronous_commit}"}
    )
    schema.upgrade(engine, settings)
    set_mode(engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="benchmark", actor="bench")
    adapter = DualWriteAdapter(engine, settings=settings)
    adapter.modes.refresh()
    ids = []
    for _ in range(rows):
        created = adapter.create_transaction(
            "WALLET_CASHOUT", 1, "10.5", "USDT", status="PROCESSING"
        )
        assert created.legacy_entity_id is not None
        ids.append(created.legacy_entity_id)
    return Bench(engine, adapter, ids, dict.fromkeys(ids, "PROCESSING"), threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: throwaway local DB)")
    parser.add_argument("--rows", type=int, default=200, help="cashouts flipped (default 200)")
    parser.add_argument(
        "--ops", type=int, default=300, help="operations per variant per round (default 300)"
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--threads", type=int, default=1, help="writer threads (default 1)")
    parser.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default="on",
        help="off takes WAL flush latency (disk noise) out of every variant (default on)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.rows < args.threads or args.ops < args.threads:
        parser.error("--rows and --ops must be at least --threads")

    with (
        throwaway_database(SERVER)
        if args.database_url is None
        else contextmanager(lambda: iter([args.database_url]))()
    ) as url:
        bench = setup(url, args.rows, args.threads, args.synchronous_commit)
        try:
            for variant in VARIANTS:  # warm-up: pools, statement caches, plans
                bench.run(variant, max(args.threads, args.ops // 5))
            samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for r in range(args.rounds):
                order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
                for variant in order:
                    samples[variant].append(bench.run(variant, args.ops))
        finally:
            bench.engine.dispose()

    median = {v: statistics.median(s) for v, s in samples.items()}
    # Paired per-round ratios: adjacent blocks share the machine's load at that moment.
    paired = {
        "dual_vs_legacy_only": statistics.median(
            d / lo for d, lo in zip(samples["dual_write"], samples["legacy_only"], strict=True)
        ),
        "dual_vs_raw_update": statistics.median(
            d / r for d, r in zip(samples["dual_write"], samples["raw_update"], strict=True)
        ),
    }
    report = {
        "rows": args.rows,
        "ops_per_round": args.ops,
        "rounds": args.rounds,
        "threads": args.threads,
        "synchronous_commit": args.synchronous_commit,
        "median_ms_per_op": {v: round(m, 4) for v, m in median.items()},
        "ratio_dual_vs_legacy_only": round(median["dual_write"] / median["legacy_only"], 3),
        "ratio_dual_vs_raw_update": round(median["dual_write"] / median["raw_update"], 3),
        "ratio_legacy_only_vs_raw_update": round(median["legacy_only"] / median["raw_update"], 3),
        "median_paired_ratio": {k: round(v, 3) for k, v in paired.items()},
        "samples_ms_per_op": {v: [round(x, 4) for x in s] for v, s in samples.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"rows={args.rows} ops/round={args.ops} rounds={args.rounds} "
            f"threads={args.threads} synchronous_commit={args.synchronous_commit}"
        )
        for v in VARIANTS:
            rounds = " ".join(f"{x:.3f}" for x in samples[v])
            print(f"  {v:<12} median {median[v]:.4f} ms/op   rounds: {rounds}")
        print(f"  dual_write / legacy_only = {report['ratio_dual_vs_legacy_only']}")
        print(f"  dual_write / raw_update  = {report['ratio_dual_vs_raw_update']}")
        print(f"  legacy_only / raw_update = {report['ratio_legacy_only_vs_raw_update']}")
        print(
            "  median of per-round ratios: dual/legacy_only "
            f"{paired['dual_vs_legacy_only']:.3f}, dual/raw {paired['dual_vs_raw_update']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
