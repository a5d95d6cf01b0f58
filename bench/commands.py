"""The command path: ``unistatus backfill`` and ``unistatus check`` as processes vs raw SQL.

What the user runs, timed from outside (process start, imports, settings, engine and
database checks, planning, progress, report storage and output all included), against
the raw statements over the same rows in the same run (PostgreSQL):

- ``backfill``: ``unistatus --database-url URL backfill --json`` into an emptied
  ``unified_transactions``, against ``raw_backfill``: ONE ``INSERT ... SELECT`` per legacy
  table in one transaction, the backfill's own row expression
  (``unistatus.backfill.statements.unified_insert``), timed in this process.
- ``check``: ``unistatus --database-url URL check --json`` (exit 1: the data has
  ``--damage`` of the unified rows mismatched on purpose), against ``raw_check``: ONE
  ``SELECT count(*), sum(...) FROM legacy FULL OUTER JOIN unified`` per legacy table
  with the rule's predicates (``unistatus.migration.check.rule_flags``), in this process.

Rows: ``--rows`` legacy rows across the three legacy tables (``unistatus.sim.seed``,
set-based). Rounds: ``--rounds`` rounds, each running backfill and its raw statement,
then check and its raw statement, in rotated order (``_timing.rotated``); the ratio is
raw seconds / command seconds per round (paired), then the median. Peak memory is the
command process's own maximum RSS (``os.wait4``).

    .venv/bin/python bench/commands.py                      # 500k rows, 3 rounds
    .venv/bin/python bench/commands.py --rows 100000 --rounds 1 --json
    .venv/bin/python bench/commands.py --only check --rounds 5

Without ``--database-url`` a PostgreSQL database is created on the local server and
dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import sqlalchemy as sa
from _databases import given_or_throwaway
from _process import run_timed, unistatus
from _timing import loadavg, rotated

from unistatus.backfill.statements import unified_insert
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_chunks, backfill_jobs, backfill_quarantine
from unistatus.migration.check import rule_flags
from unistatus.sim.seed import seed_legacy

BACKFILL = ("raw_backfill", "backfill")
CHECK = ("raw_check", "check")


def empty_unified(engine: sa.Engine) -> None:
    """A fresh target: no unified rows, no backfill state (then VACUUM: no dead tuples)."""
    tables = [U, backfill_chunks, backfill_jobs, backfill_quarantine]
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE " + ", ".join(f'"{t.name}"' for t in tables))


def raw_backfill(engine: sa.Engine, tables: list[LegacyTable]) -> int:
    ops = ops_for(engine)
    with ops.write_transaction() as conn:
        rows = 0
        for lt in tables:
            stmt = unified_insert(ops, lt, sa.true()).execution_options(preserve_rowcount=True)
            rows += int(conn.execute(stmt).rowcount)
    return rows


def raw_check_statement(lt: LegacyTable) -> sa.Select[Any]:
    """ONE full outer join of a legacy table and its unified rows, the rule's predicates."""
    assert lt.status is not None
    system = lt.system
    lcols = {n: lt.column(n) for n in ("id", "status", "user_id", "amount", "currency")}
    ucols = {n: U.c[n] for n in ("id", "status", "legacy_status", "user_id", "amount")}
    ucols["currency"] = U.c.currency
    flags = rule_flags(system, lcols, ucols)
    on = sa.and_(U.c.legacy_system == system.value, U.c.legacy_id == lt.id)
    mine = sa.or_(
        U.c.id.is_(None), sa.and_(U.c.legacy_system == system.value, U.c.legacy_id.is_not(None))
    )
    cols = [sa.func.count().label("total")]
    cols.append(sa.func.sum(sa.case((sa.or_(*flags.values()), 0), else_=1)).label("ok"))
    return sa.select(*cols).select_from(lt.table.join(U, on, full=True)).where(mine)


def raw_check(engine: sa.Engine, tables: list[LegacyTable]) -> tuple[int, int]:
    total = ok = 0
    with engine.connect() as conn:
        for lt in tables:
            t, k = conn.execute(raw_check_statement(lt)).one()
            total, ok = total + int(t), ok + int(k or 0)
    return total, ok


def damage(engine: sa.Engine, share: float) -> None:
    every = max(1, round(1 / share)) if share > 0 else 0
    if not every:
        return
    with engine.begin() as conn:
        conn.execute(
            sa.update(U)
            .where(sa.func.mod(U.c.legacy_id, every) == 0)
            .values(status=sa.case((U.c.status == "CANCELLED", "FAILED"), else_="CANCELLED"))
        )


def vacuum(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


def bench(url: str, rows: int, rounds: int, share: float, only: str | None) -> dict[str, Any]:
    settings = load_settings(database_url=url)
    engine = create_engine(url)
    schema.upgrade(engine, settings)
    started = time.perf_counter()
    seeded = seed_legacy(engine, settings, rows, seed=1)
    seed_s = time.perf_counter() - started
    tables = list(resolve_legacy_tables(engine, settings).values())
    vacuum(engine)
    loads = [loadavg()]
    seconds: dict[str, list[float]] = {v: [] for v in (*BACKFILL, *CHECK)}
    peak_mb: dict[str, list[float]] = {"backfill": [], "check": []}
    expected_ok: int | None = None

    def run_variant(variant: str) -> None:
        nonlocal expected_ok
        if variant in BACKFILL:
            empty_unified(engine)
            vacuum(engine)
        t0 = time.perf_counter()
        if variant == "raw_backfill":
            copied = raw_backfill(engine, tables)
            assert copied == rows, (copied, rows)
        elif variant == "raw_check":
            total, ok = raw_check(engine, tables)
            assert total == rows, (total, rows)
            expected_ok = ok
        elif variant == "backfill":
            done = run_timed(unistatus(url, "backfill", "--json"))
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["inserted"] == rows
            peak_mb["backfill"].append(done.max_rss_mb)
        else:
            done = run_timed(unistatus(url, "check", "--examples", "10", "--json"))
            assert done.returncode in (0, 1), done.stderr
            report = json.loads(done.stdout)
            assert report["total"] == rows, report["total"]
            if expected_ok is not None:
                assert report["consistent"] == expected_ok, (report["consistent"], expected_ok)
            peak_mb["check"].append(done.max_rss_mb)
        elapsed = time.perf_counter() - t0
        seconds[variant].append(elapsed)
        print(
            f"  {variant:<13} {elapsed:7.2f} s {rows / elapsed:>10,.0f} rows/s "
            f"(load {loadavg()})",
            file=sys.stderr,
        )

    groups = []
    if only in (None, "backfill"):
        groups.append(BACKFILL)
    if only in (None, "check"):
        groups.append(CHECK)
    for r in range(rounds):
        for group in groups:
            if group is CHECK and r == 0:
                # The check needs every unified row, damaged on purpose; a warm-up pair.
                empty_unified(engine)
                raw_backfill(engine, tables)
                damage(engine, share)
                vacuum(engine)
                raw_check(engine, tables)
            for variant in rotated(list(group), r):
                run_variant(variant)
        loads.append(loadavg())
    engine.dispose()

    def figures(raw: str, cmd: str) -> dict[str, Any]:
        if not seconds[cmd]:
            return {}
        paired = [a / b for a, b in zip(seconds[raw], seconds[cmd], strict=True)]
        med_raw, med_cmd = statistics.median(seconds[raw]), statistics.median(seconds[cmd])
        return {
            "raw_seconds": [round(x, 3) for x in seconds[raw]],
            "command_seconds": [round(x, 3) for x in seconds[cmd]],
            "raw_rows_per_second": round(rows / med_raw),
            "command_rows_per_second": round(rows / med_cmd),
            "ratio_paired": [round(x, 3) for x in paired],
            "ratio": round(statistics.median(paired), 3),
            "command_peak_rss_mb": max(peak_mb[cmd]),
        }

    return {
        "rows": rows,
        "per_system": seeded,
        "rounds": rounds,
        "seed_seconds": round(seed_s, 2),
        "loadavg": loads,
        "backfill": figures(*BACKFILL),
        "check": figures(*CHECK),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="legacy rows (all systems)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--damage", type=float, default=0.001, help="share of mismatched rows")
    parser.add_argument("--only", choices=["backfill", "check"], help="one command only")
    parser.add_argument("--database-url", help="a scratch PostgreSQL database instead")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args(argv)
    with given_or_throwaway(args.database_url, "bench_commands") as url:
        result = bench(url, args.rows, args.rounds, args.damage, args.only)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['rows']:,} legacy rows, {result['rounds']} rounds, load {result['loadavg']}")
    for name in ("backfill", "check"):
        f = result[name]
        if f:
            print(
                f"  {name:<9} raw {f['raw_rows_per_second']:>9,} rows/s  command "
                f"{f['command_rows_per_second']:>9,} rows/s  ratio {f['ratio']:.2f} "
                f"(per round {f['ratio_paired']}), peak RSS {f['command_peak_rss_mb']:.0f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
