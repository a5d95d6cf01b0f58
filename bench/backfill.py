"""What the backfill costs: ``run_backfill`` against ONE raw ``INSERT ... SELECT``.

Both variants copy the same legacy rows (``cashouts``) into an emptied
``unified_transactions`` with the same SQL row expression (status mapped by
``unistatus.domain.mapping.forward_case``, id by ``unistatus.domain.ids.utx_id_sql``, ``ON CONFLICT DO
NOTHING``), in the same run:

- ``raw``: one ``INSERT ... SELECT`` of the whole table in one transaction: the
  database's own speed, with none of the backfill's guarantees.
- ``backfill``: ``unistatus.backfill.run_backfill`` as the CLI runs it with fixed batches
  (``--target-batch-ms 0``): planning (high-water mark, key-range chunks), then one
  transaction per ``--batch-size`` chunk that claims it, copies it, quarantines its
  unmappable rows and checkpoints it.
- ``adaptive``: the same with batches sized to take ``--target-batch-ms`` (the default,
  200 ms), starting at ``--batch-size``; each batch claims as many chunks as its size
  asks for, and the worker reads its tuning and the database's health between batches.

The variants run in rotated order (each first in turn) ``--repeat`` times; the median
is reported.

    .venv/bin/python bench/backfill.py                      # PostgreSQL 1M + SQLite 200k
    .venv/bin/python bench/backfill.py --backend postgres --rows 100000 --repeat 1
    .venv/bin/python bench/backfill.py --variants backfill,adaptive --target-batch-ms 200
    .venv/bin/python bench/backfill.py --database-url postgresql://... --json

Without ``--database-url`` a PostgreSQL database is created on the local server
(postgresql://postgres@127.0.0.1:5432) and dropped afterwards; SQLite uses a file in a
temporary directory, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import sqlalchemy as sa
from _databases import throwaway_postgres, throwaway_sqlite
from _timing import rotated

from unistatus.backfill import run_backfill
from unistatus.backfill.statements import unified_insert
from unistatus.config import Settings, load_settings
from unistatus.db import schema
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_chunks, backfill_jobs, backfill_quarantine
from unistatus.domain.statuses import LegacySystemType
from unistatus.sim.seed import seed_legacy

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SYSTEM = LegacySystemType.CASHOUT


def empty_unified(engine: sa.Engine) -> None:
    """Back to a fresh target: no unified rows, no backfill state."""
    with engine.begin() as conn:
        for table in (U, backfill_chunks, backfill_jobs, backfill_quarantine):
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f'TRUNCATE "{table.name}"')
            else:
                conn.execute(sa.delete(table))
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def run_raw(engine: sa.Engine, settings: Settings) -> tuple[float, int]:
    lt = resolve_legacy_tables(engine, settings, systems=[SYSTEM])[SYSTEM]
    ops = ops_for(engine)
    started = time.perf_counter()
    with ops.write_transaction() as conn:
        stmt = unified_insert(ops, lt, sa.true()).execution_options(preserve_rowcount=True)
        rows = conn.execute(stmt).rowcount
    return time.perf_counter() - started, int(rows)


def run_batched(
    engine: sa.Engine, settings: Settings, batch_size: int, target_ms: float
) -> tuple[float, int, int]:
    started = time.perf_counter()
    report = run_backfill(
        engine, settings, systems=[SYSTEM], batch_size=batch_size, target_batch_ms=target_ms
    )
    elapsed = time.perf_counter() - started
    assert report.complete, report.as_dict()
    return elapsed, report.inserted, report.batches_this_run


VARIANTS = ("raw", "backfill", "adaptive")


def bench(
    url: str,
    rows: int,
    batch_size: int,
    repeat: int,
    variants: tuple[str, ...] = VARIANTS,
    target_ms: float = 200.0,
) -> dict[str, Any]:
    settings = load_settings(database_url=url)
    engine = create_engine(url)
    schema.upgrade(engine, settings)
    t = time.perf_counter()
    seed_legacy(engine, settings, rows, seed=1, systems=[SYSTEM])
    seeded = time.perf_counter() - t
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE cashouts")
    times: dict[str, list[float]] = {name: [] for name in variants}
    batches: dict[str, list[int]] = {name: [] for name in variants}
    for i in range(repeat):
        for name in rotated(variants, i):
            empty_unified(engine)
            if name == "raw":
                elapsed, copied = run_raw(engine, settings)
                n = 1
            else:
                target = target_ms if name == "adaptive" else 0.0
                elapsed, copied, n = run_batched(engine, settings, batch_size, target)
            assert copied == rows, (name, copied, rows)
            times[name].append(elapsed)
            batches[name].append(n)
            print(
                f"  {engine.dialect.name} {name:<8} run {i + 1}: {elapsed:7.2f} s "
                f"{rows / elapsed:>10,.0f} rows/s, {n:,} batches",
                file=sys.stderr,
            )
    engine.dispose()
    median = {name: statistics.median(times[name]) for name in variants}
    out: dict[str, Any] = {
        "backend": "postgresql" if url.startswith("postgres") else "sqlite",
        "rows": rows,
        "batch_size": batch_size,
        "target_batch_ms": target_ms,
        "repeat": repeat,
        "seed_seconds": round(seeded, 2),
    }
    for name in variants:
        out[f"{name}_seconds"] = [round(x, 3) for x in times[name]]
        out[f"{name}_rows_per_second"] = round(rows / median[name])
        out[f"{name}_batches"] = batches[name]
        if "raw" in variants and name != "raw":
            out[f"{name}_ratio"] = round(median["raw"] / median[name], 3)
    if "ratio" not in out and "backfill_ratio" in out:
        out["ratio"] = out["backfill_ratio"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--rows", type=int, default=1_000_000, help="PostgreSQL legacy rows")
    parser.add_argument(
        "--sqlite-rows", type=int, default=200_000, help="SQLite legacy rows (default 200k)"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--target-batch-ms", type=float, default=200.0, help="adaptive's target")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant")
    parser.add_argument("--database-url", help="a scratch PostgreSQL database to use instead")
    parser.add_argument("--server", default=SERVER, help="server for the throwaway database")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args()
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if not variants or set(variants) - set(VARIANTS):
        parser.error(f"--variants: choose among {', '.join(VARIANTS)}")
    how = {"variants": variants, "target_ms": args.target_batch_ms}
    results = []
    if args.backend in ("postgres", "both"):
        if args.database_url:
            results.append(bench(args.database_url, args.rows, args.batch_size, args.repeat, **how))
        else:
            with throwaway_postgres(args.server, "bench_backfill") as url:
                results.append(bench(url, args.rows, args.batch_size, args.repeat, **how))
    if args.backend in ("sqlite", "both"):
        with throwaway_sqlite("bench_backfill") as url:
            results.append(bench(url, args.sqlite_rows, args.batch_size, args.repeat, **how))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        figures = ", ".join(
            f"{name} {r[f'{name}_rows_per_second']:,} rows/s"
            + (f" ({r[f'{name}_ratio']:.2f}x raw)" if f"{name}_ratio" in r else "")
            for name in variants
        )
        print(
            f"{r['backend']}: {r['rows']:,} rows, batches from {r['batch_size']} "
            f"(adaptive: {r['target_batch_ms']:g} ms): {figures} (median of {r['repeat']})"
        )


if __name__ == "__main__":
    main()
