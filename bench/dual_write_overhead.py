"""What dual writing costs: ``update_status`` in DUAL_WRITE_LEGACY_PRIMARY against the
same adapter in LEGACY_ONLY and against a raw single-row UPDATE, in one run.

All three variants flip the same cashouts between PROCESSING and AWAITING_RESPONSE (a
change valid in both directions, so every operation really writes). Variants run in
interleaved rounds, in a rotating order, so drift on a shared machine hits all three
alike; the report gives the median over rounds of each variant's mean time per
operation, and the ratios of those medians.

    .venv/bin/python bench/dual_write_overhead.py              # throwaway local database
    .venv/bin/python bench/dual_write_overhead.py --database-url postgresql://... --rows 500
    .venv/bin/python bench/dual_write_overhead.py --disjoint-rows  # each variant its own rows

``--disjoint-rows``: each variant flips rows of its own (``--rows`` each). Without it the
three variants flip the same rows in turn, so the adapter's remembered state of a row is
stale after another variant wrote it (a refused statement, then the one that writes).

Without ``--database-url`` a database is created on the local server
(postgresql://postgres@127.0.0.1:5432) and dropped afterwards. With one, the schema is
upgraded in place and the benchmark's rows are left behind: use a scratch database.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from _databases import given_or_throwaway
from _timing import (
    interleaved_rounds,
    latency_ms,
    loadavg,
    p50_ratio,
    paired_ratio,
    print_report,
    round_medians,
)

from unistatus import DualWriteAdapter, DualWriteMode, LegacySystemType
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine
from unistatus.db.legacy import resolve_legacy_tables

FLIP = {"PROCESSING": "AWAITING_RESPONSE", "AWAITING_RESPONSE": "PROCESSING"}
LEGACY = {"PROCESSING": "EXECUTING", "AWAITING_RESPONSE": "AWAITING_RESPONSE"}
VARIANTS = ("dual_write", "legacy_only", "raw_update")


@dataclass
class Bench:
    engine: sa.Engine
    adapter: DualWriteAdapter
    ids: list[int]
    state: dict[int, str]
    threads: int
    # --disjoint-rows: each variant's own rows, instead of ``ids`` for all.
    own_rows: dict[str, list[int]] | None = None

    def run(self, variant: str, ops: int) -> list[float]:
        """Run ``ops`` operations of one variant; the latency of each, in milliseconds."""
        if variant == "raw_update":
            op = self.raw_op()
        else:
            mode = (
                DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
                if variant == "dual_write"
                else DualWriteMode.LEGACY_ONLY
            )
            set_mode(self.engine, mode, reason="benchmark", actor="bench")
            if self.adapter.modes.refresh() is not mode:
                raise SystemExit(f"mode did not switch to {mode}")
            op = self.adapter_op()
        # Each thread owns a disjoint slice of the rows: the benchmark measures the
        # write path, not lock waits between threads.
        ids = self.own_rows[variant] if self.own_rows else self.ids
        slices = [ids[i :: self.threads] for i in range(self.threads)]
        per_thread = ops // self.threads

        latencies: list[float] = []

        def worker(mine: list[int]) -> None:
            own = []
            for i in range(per_thread):
                started = time.perf_counter()
                op(mine[i % len(mine)])
                own.append((time.perf_counter() - started) * 1000)
            latencies.extend(own)  # list.extend is atomic under the GIL

        workers = [threading.Thread(target=worker, args=(s,)) for s in slices]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return latencies

    def _next(self, legacy_id: int) -> str:
        target = FLIP[self.state[legacy_id]]
        self.state[legacy_id] = target
        return target

    def adapter_op(self) -> Callable[[int], None]:
        def op(legacy_id: int) -> None:
            result = self.adapter.update_status(
                f"cashout:{legacy_id}", self._next(legacy_id), "bench", "bench"
            )
            if not result.overall_success or not result.changed:
                raise SystemExit(f"benchmark write failed: {result.as_dict()}")

        return op

    def raw_op(self) -> Callable[[int], None]:
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


def setup(
    url: str,
    rows: int,
    threads: int,
    synchronous_commit: str,
    *,
    disjoint: bool = False,
    prepare: Callable[[sa.Engine], None] | None = None,
) -> Bench:
    """The schema, then ``prepare`` (a variant's DDL, before any row exists), then the
    rows: ``rows`` in all, or ``rows`` per variant with ``disjoint``."""
    settings = load_settings(database_url=url)
    engine = create_engine(
        url,
        connect_args={"options": f"-c synchronous_commit={synchronous_commit}"},
        prepared_statements=settings.prepared_statements,  # UNISTATUS_PREPARED_STATEMENTS
    )
    schema.upgrade(engine, settings)
    if prepare is not None:
        prepare(engine)
    set_mode(engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="benchmark", actor="bench")
    adapter = DualWriteAdapter(engine, settings=settings)
    adapter.modes.refresh()
    ids = []
    for _ in range(rows * (len(VARIANTS) if disjoint else 1)):
        created = adapter.create_transaction(
            "WALLET_CASHOUT", 1, "10.5", "USDT", status="PROCESSING"
        )
        assert created.legacy_entity_id is not None
        ids.append(created.legacy_entity_id)
    own = {v: ids[i * rows : (i + 1) * rows] for i, v in enumerate(VARIANTS)} if disjoint else None
    return Bench(engine, adapter, ids, dict.fromkeys(ids, "PROCESSING"), threads, own)


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
    parser.add_argument(
        "--disjoint-rows",
        action="store_true",
        help="each variant flips --rows rows of its own (no variant sees another's writes)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.rows < args.threads or args.ops < args.threads:
        parser.error("--rows and --ops must be at least --threads")

    with given_or_throwaway(args.database_url, "bench_dual_write") as url:
        bench = setup(
            url, args.rows, args.threads, args.synchronous_commit, disjoint=args.disjoint_rows
        )
        try:
            for variant in VARIANTS:  # warm-up: pools, statement caches, plans
                bench.run(variant, max(args.threads, args.ops // 5))
            per_round, pooled = interleaved_rounds(bench.run, VARIANTS, args.rounds, args.ops)
        finally:
            bench.adapter.close()  # flush its operation statistics while the database exists
            bench.engine.dispose()

    report = summarise(args, per_round, pooled)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"rows={args.rows} ops/round={args.ops} rounds={args.rounds} "
        f"threads={args.threads} synchronous_commit={args.synchronous_commit} "
        f"disjoint_rows={args.disjoint_rows} loadavg={report['loadavg']}"
    )
    print_report(report, VARIANTS)
    return 0


def summarise(
    args: argparse.Namespace, per_round: dict[str, list[float]], pooled: dict[str, list[float]]
) -> dict[str, Any]:
    """Medians resist the scheduling stalls of a shared machine; means are shown too."""
    pooled = {v: pooled[v] for v in VARIANTS}
    return {
        "rows": args.rows,
        "ops_per_round": args.ops,
        "rounds": args.rounds,
        "threads": args.threads,
        "synchronous_commit": args.synchronous_commit,
        "disjoint_rows": args.disjoint_rows,
        "loadavg": loadavg(),
        "latency_ms": latency_ms(pooled),
        "ratios": {
            "dual_write / legacy_only (p50)": p50_ratio(pooled, "dual_write", "legacy_only"),
            "dual_write / raw_update (p50)": p50_ratio(pooled, "dual_write", "raw_update"),
            "legacy_only / raw_update (p50)": p50_ratio(pooled, "legacy_only", "raw_update"),
            "dual_write / legacy_only (paired)": paired_ratio(
                per_round, "dual_write", "legacy_only"
            ),
            "dual_write / raw_update (paired)": paired_ratio(per_round, "dual_write", "raw_update"),
        },
        "round_medians_ms": round_medians({v: per_round[v] for v in VARIANTS}),
    }


if __name__ == "__main__":
    sys.exit(main())
