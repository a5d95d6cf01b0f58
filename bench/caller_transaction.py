"""What dual writing costs inside the application's own transaction (issue 12, section 6).

A service transaction: BEGIN, the cashout's status change through
``update_status(..., connection=conn)``, one ledger row, COMMIT. The same transaction is
timed with the mode in DUAL_WRITE_LEGACY_PRIMARY (``dual_write``) and in LEGACY_ONLY
(``legacy_only``), and, for reference, with a raw UPDATE of the legacy status instead of
the adapter (``raw``). The status flips between PROCESSING and AWAITING_RESPONSE, so
every transaction really writes. Variants run in interleaved rounds in a rotating order
(drift on a shared machine hits all alike); the report gives the p50 over all
transactions of each variant and the median over rounds of the paired ratios.

    .venv/bin/python bench/caller_transaction.py              # throwaway local database
    .venv/bin/python bench/caller_transaction.py --database-url postgresql://... --json

Without ``--database-url`` a database is created on the local server and dropped
afterwards. With one, the schema is upgraded in place and the benchmark's rows (and its
``bench_ledger`` table) are left behind: use a scratch database.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
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
VARIANTS = ("dual_write", "legacy_only", "raw")
# --with-locked: the same two, with the adapter's fast path off (its locked path only).
LOCKED = ("dual_write_locked", "legacy_only_locked")
MODES = {
    "dual_write": DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
    "legacy_only": DualWriteMode.LEGACY_ONLY,
}

LEDGER = sa.Table(
    "bench_ledger",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("cashout_id", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.Numeric(18, 2), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


@dataclass
class Bench:
    engine: sa.Engine
    adapter: DualWriteAdapter
    ids: list[int]
    state: dict[int, str]

    def run(self, variant: str, ops: int) -> list[float]:
        """``ops`` service transactions of one variant; each one's time in milliseconds."""
        base = variant.removesuffix("_locked")
        if base in MODES:
            set_mode(self.engine, MODES[base], reason="benchmark", actor="bench")
            self.adapter.modes.refresh()  # as every process will within a second
            if self.adapter.mode is not MODES[base]:
                raise SystemExit(f"mode did not switch to {MODES[base]}")
            change = self._adapter_change(MODES[base])
        else:
            change = self._raw_change()
        fast = self.adapter.fast
        if variant != base:
            self.adapter.fast = None
        insert = sa.insert(LEDGER)
        latencies = []
        for i in range(ops):
            legacy_id = self.ids[i % len(self.ids)]
            started = time.perf_counter()
            with self.engine.begin() as conn:
                change(conn, legacy_id)
                conn.execute(insert, {"cashout_id": legacy_id, "amount": Decimal("-10.50")})
            latencies.append((time.perf_counter() - started) * 1000)
        self.adapter.fast = fast
        return latencies

    def _next(self, legacy_id: int) -> str:
        target = FLIP[self.state[legacy_id]]
        self.state[legacy_id] = target
        return target

    def _adapter_change(self, mode: DualWriteMode) -> Callable[[sa.Connection, int], None]:
        def change(conn: sa.Connection, legacy_id: int) -> None:
            result = self.adapter.update_status(
                f"cashout:{legacy_id}", self._next(legacy_id), "bench", "bench", connection=conn
            )
            if not result.changed or result.mode is not mode:
                raise SystemExit(f"benchmark write did not do its job: {result.as_dict()}")

        return change

    def _raw_change(self) -> Callable[[sa.Connection, int], None]:
        lt = resolve_legacy_tables(self.engine, self.adapter.settings)[LegacySystemType.CASHOUT]
        assert lt.status is not None
        stmt = (
            sa.update(lt.table)
            .where(lt.id == sa.bindparam("lid"))
            .values({lt.status.key: sa.bindparam("st"), lt.updated_at.key: sa.func.now()})
        )

        def change(conn: sa.Connection, legacy_id: int) -> None:
            conn.execute(stmt, {"lid": legacy_id, "st": LEGACY[self._next(legacy_id)]})

        return change


def setup(url: str, rows: int, synchronous_commit: str) -> Bench:
    settings = load_settings(database_url=url)
    engine = create_engine(
        url, connect_args={"options": f"-c synchronous_commit={synchronous_commit}"}
    )
    schema.upgrade(engine, settings)
    LEDGER.metadata.create_all(engine)
    set_mode(engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="benchmark", actor="bench")
    # No state cache: every change reads its rows first, as for an entity this process
    # has not just written (with one, the raw variant's writes would make the adapter's
    # guesses stale after every raw round, which is the benchmark's doing, not the app's).
    adapter = DualWriteAdapter(engine, settings=settings.model_copy(update={"state_cache_size": 0}))
    adapter.modes.refresh()
    ids = []
    for _ in range(rows):
        created = adapter.create_transaction(
            "WALLET_CASHOUT", 1, "10.5", "USDT", status="PROCESSING"
        )
        assert created.legacy_entity_id is not None
        ids.append(created.legacy_entity_id)
    return Bench(engine, adapter, ids, dict.fromkeys(ids, "PROCESSING"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: throwaway local DB)")
    parser.add_argument("--rows", type=int, default=200, help="cashouts flipped (default 200)")
    parser.add_argument(
        "--ops", type=int, default=300, help="transactions per variant per round (default 300)"
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default="on",
        help="off takes WAL flush latency (disk noise) out of every variant (default on)",
    )
    parser.add_argument(
        "--with-locked",
        action="store_true",
        help="also time both adapter variants with the fast path off (the locked path)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    variants = VARIANTS + LOCKED if args.with_locked else VARIANTS

    with given_or_throwaway(args.database_url, "bench_caller_tx") as url:
        bench = setup(url, args.rows, args.synchronous_commit)
        try:
            for variant in variants:  # warm-up: pools, statement caches, plans
                bench.run(variant, max(1, args.ops // 5))
            per_round, pooled = interleaved_rounds(bench.run, variants, args.rounds, args.ops)
        finally:
            bench.adapter.close()  # flush its operation statistics while the database exists
            bench.engine.dispose()

    report = summarise(args, per_round, pooled)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"rows={args.rows} ops/round={args.ops} rounds={args.rounds} "
        f"synchronous_commit={args.synchronous_commit} loadavg={report['loadavg']}"
    )
    print_report(report, variants)
    return 0


def summarise(
    args: argparse.Namespace, per_round: dict[str, list[float]], pooled: dict[str, list[float]]
) -> dict[str, Any]:
    """p50 over every transaction, and ``paired`` ratios (see ``_timing.paired_ratio``)."""
    locked = (
        {
            "locked: dual / legacy_only (p50)": p50_ratio(
                pooled, "dual_write_locked", "legacy_only_locked"
            ),
            "locked: dual / legacy_only (paired)": paired_ratio(
                per_round, "dual_write_locked", "legacy_only_locked"
            ),
        }
        if "dual_write_locked" in pooled
        else {}
    )
    return {
        "rows": args.rows,
        "ops_per_round": args.ops,
        "rounds": args.rounds,
        "synchronous_commit": args.synchronous_commit,
        "loadavg": loadavg(),
        "latency_ms": latency_ms(pooled),
        "ratios": {
            "dual_write / legacy_only (p50)": p50_ratio(pooled, "dual_write", "legacy_only"),
            "dual_write / legacy_only (paired)": paired_ratio(
                per_round, "dual_write", "legacy_only"
            ),
            "legacy_only / raw (p50)": p50_ratio(pooled, "legacy_only", "raw"),
            "dual_write / raw (paired)": paired_ratio(per_round, "dual_write", "raw"),
            **locked,
        },
        "round_medians_ms": round_medians(per_round),
    }


if __name__ == "__main__":
    sys.exit(main())
