"""What the capture of bypass writes costs (issue 12, section 6, bullets 3 and 4).

Single row: a raw one-row ``UPDATE`` of a cashout's status in its own transaction, with
capture off (``raw_off``: no trigger installed) and on (``raw_on``), against the
adapter's ``update_status`` for the same change in DUAL_WRITE_LEGACY_PRIMARY
(``adapter``, capture on: its writes are marked, the trigger returns at once). Target:
``raw_on`` costs no more than ``adapter`` (capture costs no more than the adapter's own
dual write). Each variant flips its own cashouts between EXECUTING and
AWAITING_RESPONSE, so every operation really writes and no variant leaves work for
another.

Bulk: one ``UPDATE`` of ``--bulk-rows`` cashouts (default 100,000) flipping the same
statuses, capture off against on; rows/s and their ratio (target >= 0.35x). Each variant
has its own rows (with shared rows, an UPDATE with capture on after one with capture off
would flip legacy back to what unified already holds, and capture would write nothing).
The tables are vacuumed before each timed statement, so neither variant inherits the
other's dead rows. ``bulk_floor`` (capture off) is the floor of any capture: the same
legacy ``UPDATE`` and, in the same statement, by hand, the two writes the capture must
make per changed row (the unified row, version + 1, and one history row of the same
shape: metadata, operation id), with nothing read or judged; rows of its own too.

Variants run in interleaved rounds in a rotating order (capture is enabled or disabled
between blocks, outside the timing), so drift on a shared machine hits all alike; the
1-minute load average (``/proc/loadavg``) is recorded with every round.

    .venv/bin/python bench/capture.py                      # throwaway local database
    .venv/bin/python bench/capture.py --bulk-rows 1000 --rounds 2 --ops 20 --json
    .venv/bin/python bench/capture.py --skip-single --bulk-rounds 7

Without ``--database-url`` a database is created on the local server and dropped
afterwards. With one, the schema is upgraded in place, capture is left disabled and the
benchmark's rows are left behind: use a scratch database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from _databases import given_or_throwaway
from _timing import (
    interleaved_rounds,
    latency_ms,
    p50_ratio,
    paired_ratio,
    print_report,
    rotated,
    round_medians,
)

from unistatus import DualWriteAdapter, DualWriteMode, LegacySystemType
from unistatus.config import Settings, load_settings
from unistatus.db import schema
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables import status_history, unified_transactions
from unistatus.migration import capture

SINGLE = ("raw_off", "raw_on", "adapter")
BULK = ("bulk_off", "bulk_on", "bulk_floor")
# Unified status -> the next one, and each one's legacy value on a cashout.
FLIP = {"PROCESSING": "AWAITING_RESPONSE", "AWAITING_RESPONSE": "PROCESSING"}
LEGACY = {"PROCESSING": "EXECUTING", "AWAITING_RESPONSE": "AWAITING_RESPONSE"}
# Each bulk variant's rows: ids from here on, clear of the adapter's sequence.
BULK_FIRST_ID = {"bulk_off": 10_000_000, "bulk_on": 20_000_000, "bulk_floor": 30_000_000}


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


@dataclass
class Bench:
    engine: sa.Engine  # unistatus's own (the adapter, enable / disable)
    writer: sa.Engine  # the "cron job": plain SQL, its own application_name
    settings: Settings
    adapter: DualWriteAdapter
    cashouts: LegacyTable
    ids: dict[str, list[int]]  # each single-row variant's own cashouts
    state: dict[int, str]
    bulk_rows: int
    bulk_state: dict[str, str] = field(default_factory=lambda: dict.fromkeys(BULK, "PROCESSING"))
    capture_on: bool = field(default=False)

    def set_capture(self, on: bool) -> None:
        if on == self.capture_on:
            return
        if on:
            capture.enable(self.engine, self.settings, actor="bench", reason="benchmark")
        else:
            capture.disable(self.engine, self.settings, actor="bench", reason="benchmark")
        self.capture_on = on

    def _next(self, legacy_id: int) -> str:
        target = FLIP[self.state[legacy_id]]
        self.state[legacy_id] = target
        return target

    # --- single row -------------------------------------------------------------------

    def run_single(self, variant: str, ops: int) -> list[float]:
        """``ops`` operations of one variant; the latency of each, in milliseconds."""
        self.set_capture(variant != "raw_off")
        mine = self.ids[variant]
        lt = self.cashouts
        assert lt.status is not None
        stmt = (
            sa.update(lt.table)
            .where(lt.id == sa.bindparam("lid"))
            .values({lt.status.key: sa.bindparam("st"), lt.updated_at.key: sa.func.now()})
        )
        latencies = []
        for i in range(ops):
            legacy_id = mine[i % len(mine)]
            target = self._next(legacy_id)
            started = time.perf_counter()
            if variant == "adapter":
                result = self.adapter.update_status(
                    f"cashout:{legacy_id}", target, "bench", "bench"
                )
                if not result.overall_success or not result.changed:
                    raise SystemExit(f"benchmark write failed: {result.as_dict()}")
            else:
                with self.writer.begin() as conn:
                    conn.execute(stmt, {"lid": legacy_id, "st": LEGACY[target]})
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies

    # --- bulk -------------------------------------------------------------------------

    def run_bulk(self, variant: str) -> float:
        """One UPDATE of every row of the variant, in its own transaction; seconds."""
        self.set_capture(variant == "bulk_on")
        self._vacuum()
        source = self.bulk_state[variant]
        target = FLIP[source]
        first = BULK_FIRST_ID[variant]
        lt = self.cashouts
        assert lt.status is not None
        stmt: Any = (
            sa.update(lt.table)
            .where(lt.id.between(first, first + self.bulk_rows - 1))
            .values({lt.status.key: LEGACY[target], lt.updated_at.key: sa.func.now()})
        )
        if variant == "bulk_floor":
            stmt = self._by_hand(stmt, source, target)
        started = time.perf_counter()
        with self.writer.begin() as conn:
            updated = conn.execute(stmt).rowcount
        elapsed = time.perf_counter() - started
        self.bulk_state[variant] = target
        # (The floor's statement is an INSERT whose count the driver does not report:
        # its rows are checked below, as capture's are.)
        if variant != "bulk_floor" and updated != self.bulk_rows:
            raise SystemExit(f"bulk UPDATE wrote {updated} rows, not {self.bulk_rows}")
        if variant != "bulk_off":
            self._check_in_step(first, LEGACY[target])
        return elapsed

    def _by_hand(self, legacy_update: Any, source: str, target: str) -> Any:
        """The legacy UPDATE, then the unified rows and their history written by hand in
        the same statement: what capture must write, without reading or judging."""
        U, H = unified_transactions, status_history
        lt = self.cashouts
        changed = legacy_update.returning(lt.id.label("lid")).cte("legacy_write")
        unified = (
            sa.update(U)
            .where(
                U.c.legacy_system == LegacySystemType.CASHOUT.value, U.c.legacy_id == changed.c.lid
            )
            .values(
                status=target,
                legacy_status=LEGACY[target],
                version=U.c.version + 1,
                updated_at=sa.func.now(),
            )
            .returning(U.c.id, U.c.legacy_id)
            .cte("unified_write")
        )
        meta = sa.func.jsonb_build_object(
            "capture",
            "bypass",
            "writer",
            "bypass:bench-cron/postgres",
            "client_addr",
            None,
            "flag",
            None,
        )
        row = {
            "transaction_id": unified.c.id,
            "legacy_system": sa.literal(LegacySystemType.CASHOUT.value),
            "legacy_id": unified.c.legacy_id,
            "from_status": sa.literal(source),
            "to_status": sa.literal(target),
            "from_legacy_status": sa.literal(LEGACY[source]),
            "to_legacy_status": sa.literal(LEGACY[target]),
            "reason": sa.literal("bypass update"),
            "triggered_by": sa.literal("bypass:bench-cron/postgres"),
            "meta": meta,
            "operation_id": sa.cast(sa.func.gen_random_uuid(), sa.String),
            "mode": sa.literal(DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY.value),
            "override": sa.false(),
            "created_at": sa.func.now(),
        }
        return sa.insert(H).from_select([H.c[k] for k in row], sa.select(*row.values()))

    def _vacuum(self) -> None:
        tables = [self.cashouts.table, unified_transactions]
        names = ", ".join(self.engine.dialect.identifier_preparer.format_table(t) for t in tables)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {names}")

    def _check_in_step(self, first: int, legacy_status: str) -> None:
        U = unified_transactions
        with self.engine.connect() as conn:
            in_step = conn.execute(
                sa.select(sa.func.count()).where(
                    U.c.legacy_system == LegacySystemType.CASHOUT.value,
                    U.c.legacy_id.between(first, first + self.bulk_rows - 1),
                    U.c.legacy_status == legacy_status,
                )
            ).scalar_one()
        if in_step != self.bulk_rows:
            raise SystemExit(f"capture left {self.bulk_rows - in_step} unified rows stale")


def setup(url: str, rows: int, bulk_rows: int, synchronous_commit: str) -> Bench:
    settings = load_settings(database_url=url)
    options = {"options": f"-c synchronous_commit={synchronous_commit}"}
    engine = create_engine(url, connect_args=options)
    writer = create_engine(url, connect_args={**options, "application_name": "bench-cron"})
    schema.upgrade(engine, settings)
    set_mode(engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="benchmark", actor="bench")
    adapter = DualWriteAdapter(engine, settings=settings)
    adapter.modes.refresh()
    ids: dict[str, list[int]] = {v: [] for v in SINGLE}
    for i in range(rows * len(SINGLE)):
        created = adapter.create_transaction(
            "WALLET_CASHOUT", 1, "10.5", "USDT", status="PROCESSING"
        )
        assert created.legacy_entity_id is not None
        ids[SINGLE[i % len(SINGLE)]].append(created.legacy_entity_id)
    state = {i: "PROCESSING" for mine in ids.values() for i in mine}
    cashouts = resolve_legacy_tables(engine, settings)[LegacySystemType.CASHOUT]
    bench = Bench(engine, writer, settings, adapter, cashouts, ids, state, bulk_rows)
    if bulk_rows:
        # Created by a bypass INSERT with capture on: its unified rows and first history.
        bench.set_capture(True)
        c = {name: cashouts.column(name).name for name in ("id", "status", "created_at")}
        table = engine.dialect.identifier_preparer.format_table(cashouts.table)
        for first in BULK_FIRST_ID.values():
            with writer.begin() as conn:
                conn.execute(
                    sa.text(
                        f"INSERT INTO {table} ({c['id']}, user_id, amount, currency, "
                        f"{c['status']}, {c['created_at']}, updated_at) SELECT :first + n, 1, "
                        "10.50, 'USDT', 'EXECUTING', now(), now() "
                        "FROM generate_series(0, :last) AS n"
                    ),
                    {"first": first, "last": bulk_rows - 1},
                )
            bench._check_in_step(first, "EXECUTING")
    return bench


def set_unified_fillfactor(engine: sa.Engine, fillfactor: int) -> None:
    """A variant of the schema: ``unified_transactions`` rewritten at ``fillfactor``, so
    that every row of a page has room for one HOT update (50: a bulk UPDATE of every row
    of a page keeps them all on it; revision 0012's 90 leaves room for a tenth)."""
    table = engine.dialect.identifier_preparer.format_table(unified_transactions)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"ALTER TABLE {table} SET (fillfactor = {int(fillfactor)})")
        conn.exec_driver_sql(f"VACUUM (FULL, ANALYZE) {table}")


def measure(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    single_rounds: dict[str, list[float]] = {v: [] for v in SINGLE}
    pooled: dict[str, list[float]] = {v: [] for v in SINGLE}
    bulk_s: dict[str, list[float]] = {v: [] for v in BULK}
    loads: list[float] = [loadavg()]
    if args.ops:
        for variant in SINGLE:  # warm-up: pools, statement caches, the functions' plans
            bench.run_single(variant, max(1, args.ops // 5))
        single_rounds, pooled = interleaved_rounds(
            bench.run_single, SINGLE, args.rounds, args.ops, lambda: loads.append(loadavg())
        )
    if args.bulk_rows:
        for r in range(args.bulk_rounds):
            for variant in rotated(BULK, r):
                bulk_s[variant].append(bench.run_bulk(variant))
            loads.append(loadavg())
    return summarise(args, single_rounds, pooled, bulk_s, loads)


def summarise(
    args: argparse.Namespace,
    per_round: dict[str, list[float]],
    pooled: dict[str, list[float]],
    bulk_s: dict[str, list[float]],
    loads: list[float],
) -> dict[str, Any]:
    """Medians resist the scheduling stalls of a shared machine; means are shown too."""
    report: dict[str, Any] = {
        "rows_per_variant": args.rows,
        "ops_per_round": args.ops,
        "rounds": args.rounds,
        "bulk_rows": args.bulk_rows,
        "bulk_rounds": args.bulk_rounds,
        "synchronous_commit": args.synchronous_commit,
        "unified_fillfactor": args.unified_fillfactor,
        "loadavg_1min": {"min": min(loads), "max": max(loads), "samples": loads},
    }
    if args.ops:
        p50 = {v: statistics.median(pooled[v]) for v in SINGLE}
        report["single"] = {
            "latency_ms": latency_ms(pooled),
            "ratios": {
                "raw_on / raw_off (p50)": p50_ratio(pooled, "raw_on", "raw_off"),
                "raw_on / adapter (p50)": p50_ratio(pooled, "raw_on", "adapter"),
                "adapter / raw_off (p50)": p50_ratio(pooled, "adapter", "raw_off"),
                "raw_on / raw_off (paired)": paired_ratio(per_round, "raw_on", "raw_off"),
                "raw_on / adapter (paired)": paired_ratio(per_round, "raw_on", "adapter"),
            },
            "capture_cost_ms_p50": round(p50["raw_on"] - p50["raw_off"], 4),
            "adapter_cost_ms_p50": round(p50["adapter"] - p50["raw_off"], 4),
            "round_medians_ms": round_medians(per_round),
        }
    if args.bulk_rows:
        rate = {v: [args.bulk_rows / s for s in bulk_s[v]] for v in BULK}
        paired = [on / off for on, off in zip(rate["bulk_on"], rate["bulk_off"], strict=True)]
        report["bulk"] = {
            "seconds": {v: [round(s, 3) for s in bulk_s[v]] for v in BULK},
            "rows_per_s_median": {v: round(statistics.median(rate[v])) for v in BULK},
            "ratio_on_off_median_rates": round(
                statistics.median(rate["bulk_on"]) / statistics.median(rate["bulk_off"]), 3
            ),
            "ratio_on_off_paired": round(statistics.median(paired), 3),
            "ratio_on_off_per_round": [round(x, 3) for x in paired],
            "target": 0.35,
            # The floor: the two writes by hand, no capture (what capture could reach).
            "ratio_floor_off_median_rates": round(
                statistics.median(rate["bulk_floor"]) / statistics.median(rate["bulk_off"]), 3
            ),
            "ratio_on_floor_median_rates": round(
                statistics.median(rate["bulk_on"]) / statistics.median(rate["bulk_floor"]), 3
            ),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: throwaway local DB)")
    parser.add_argument(
        "--rows", type=int, default=100, help="cashouts per single-row variant (default 100)"
    )
    parser.add_argument(
        "--ops", type=int, default=200, help="single-row ops per variant per round (default 200)"
    )
    parser.add_argument("--rounds", type=int, default=9, help="single-row rounds (default 9)")
    parser.add_argument(
        "--bulk-rows", type=int, default=100_000, help="rows of the bulk UPDATE (default 100000)"
    )
    parser.add_argument("--bulk-rounds", type=int, default=5, help="bulk rounds (default 5)")
    parser.add_argument("--skip-single", action="store_true", help="the bulk part only")
    parser.add_argument("--skip-bulk", action="store_true", help="the single-row part only")
    parser.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default="on",
        help="off takes WAL flush latency (disk noise) out of every variant (default on)",
    )
    parser.add_argument(
        "--unified-fillfactor",
        type=int,
        help="a schema variant: unified_transactions rewritten at this fillfactor after "
        "seeding (10-100; the schema's own: 90)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.unified_fillfactor is not None and not 10 <= args.unified_fillfactor <= 100:
        parser.error("--unified-fillfactor must be between 10 and 100")
    if args.skip_single:
        args.ops = 0
    if args.skip_bulk:
        args.bulk_rows = 0
    if args.rows < 1 or args.rounds < 1 or args.bulk_rounds < 1:
        parser.error("--rows, --rounds and --bulk-rounds must be at least 1")

    with given_or_throwaway(args.database_url, "bench_capture") as url:
        bench = setup(url, args.rows, args.bulk_rows, args.synchronous_commit)
        try:
            if args.unified_fillfactor is not None:
                set_unified_fillfactor(bench.engine, args.unified_fillfactor)
            report = measure(bench, args)
        finally:
            bench.set_capture(False)
            bench.adapter.close()  # flush its operation statistics while the database exists
            bench.engine.dispose()
            bench.writer.dispose()

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"rows/variant={args.rows} ops/round={args.ops} rounds={args.rounds} "
        f"bulk_rows={args.bulk_rows} bulk_rounds={args.bulk_rounds} "
        f"synchronous_commit={args.synchronous_commit} loadavg(1 min)="
        f"{report['loadavg_1min']['min']:.2f}-{report['loadavg_1min']['max']:.2f}"
    )
    if "single" in report:
        print_report(report["single"], SINGLE)
        print(
            f"  capture cost {report['single']['capture_cost_ms_p50']:.3f} ms, "
            f"adapter cost {report['single']['adapter_cost_ms_p50']:.3f} ms (p50 over raw_off)"
        )
    if "bulk" in report:
        b = report["bulk"]
        for v in BULK:
            print(f"  {v:<12} {b['rows_per_s_median'][v]:>10,} rows/s  {b['seconds'][v]} s")
        print(
            f"  on / off rows/s: {b['ratio_on_off_median_rates']:.3f} (medians), "
            f"{b['ratio_on_off_paired']:.3f} (paired); target >= 0.35"
        )
        print(
            f"  floor (the writes by hand) / off: {b['ratio_floor_off_median_rates']:.3f}; "
            f"on / floor: {b['ratio_on_floor_median_rates']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
