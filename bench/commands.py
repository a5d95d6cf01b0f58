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
  with the rule's predicates (``unistatus.migration.check.rule``), in this process.

Rows: ``--rows`` legacy rows across the three legacy tables (``unistatus.sim.seed``,
set-based). Rounds: ``--rounds`` rounds, each running backfill and its raw statement,
then check and its raw statement, in rotated order (``_timing.rotated``); the ratio is
raw seconds / command seconds per round (paired), then the median. Peak memory is the
command process's own maximum RSS (``os.wait4``). Every variant starts settled (VACUUM
ANALYZE, CHECKPOINT); the WAL it wrote and the checkpoints that ran during it are
recorded beside its time (``pg_current_wal_lsn``, ``pg_stat_bgwriter``).

    .venv/bin/python bench/commands.py                      # 500k rows, 3 rounds
    .venv/bin/python bench/commands.py --rows 100000 --rounds 1 --json
    .venv/bin/python bench/commands.py --only check --rounds 5
    .venv/bin/python bench/commands.py --base-src /tmp/base/src   # before/after, same run

``--library`` adds ``backfill@lib`` and ``check@lib``: ``run_backfill`` / ``run_check`` called
in this process (what ``bench/backfill.py`` and ``bench/check.py`` time), so the gap splits
into the library's and the process's share. ``--bars`` runs the commands with
``FORCE_COLOR=1``: Rich then draws the backfill's progress bars as on a terminal.

``--workers N`` adds ``backfill@wN``: the backfill command with ``--workers N``.

``--base-src DIR`` adds the variants ``backfill@base`` and ``check@base``: the same
commands with ``PYTHONPATH=DIR`` (e.g. ``git archive <commit> src | tar -x -C /tmp/base``),
so a change is measured against its base in the same rounds.

Without ``--database-url`` a PostgreSQL database is created on the local server and
dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import sqlalchemy as sa
from _databases import given_or_throwaway
from _process import run_timed, unistatus, with_bytecode
from _timing import loadavg, rotated

from unistatus.backfill import run_backfill
from unistatus.backfill.statements import unified_insert
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_chunks, backfill_jobs, backfill_quarantine
from unistatus.migration.check import rule, run_check
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
    """ONE full outer join of a legacy table and its system's unified rows (the rule's
    predicates, as ``bench/check.py``; the unified side filtered to the system first, so
    each table's join reads only its own unified rows)."""
    assert lt.status is not None
    system = lt.system
    names = ("id", "status", "user_id", "amount", "currency")
    unames = ("id", "legacy_id", "status", "legacy_status", "user_id", "amount", "currency")
    unames += ("updated_at",)  # for the --since variant (bench/scale.py)
    mine = sa.select(*[U.c[n] for n in unames]).where(
        U.c.legacy_system == system.value, U.c.legacy_id.is_not(None)
    )
    u = mine.subquery("u")
    lcols = {n: lt.column(n) for n in names}
    inconsistent = rule(system, lcols, {n: u.c[n] for n in unames}).any()
    cols = [sa.func.count().label("total")]
    cols.append(sa.func.sum(sa.case((inconsistent, 0), else_=1)).label("ok"))
    return sa.select(*cols).select_from(lt.table.join(u, u.c.legacy_id == lt.id, full=True))


def raw_check(engine: sa.Engine, tables: list[LegacyTable]) -> tuple[int, int]:
    total = ok = 0
    with engine.connect() as conn:
        for lt in tables:
            t, k = conn.execute(raw_check_statement(lt)).one()
            total, ok = total + int(t), ok + int(k or 0)
    return total, ok


def server_counters(engine: sa.Engine) -> tuple[int, int]:
    """(WAL bytes written so far, checkpoints so far) on the server: what a variant cost
    the server besides its time, and whether a checkpoint ran while it did."""
    with engine.connect() as conn:
        wal, checkpoints = conn.exec_driver_sql(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, "
            "checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
        ).one()
    return int(wal), int(checkpoints)


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
    """No dead tuples, fresh statistics, and no dirty buffers left for the next variant.

    The CHECKPOINT matters: a variant that wrote millions of rows leaves a checkpoint
    writing its buffers in the background, and whichever variant ran next paid for it
    (the paired ratios swung by 0.1 with the order). Every variant starts settled.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        conn.exec_driver_sql("CHECKPOINT")


def bench(
    url: str,
    rows: int,
    rounds: int,
    share: float,
    only: str | None,
    base_src: str | None = None,
    library: bool = False,
    bars: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    settings = load_settings(database_url=url)
    engine = create_engine(url)
    schema.upgrade(engine, settings)
    started = time.perf_counter()
    seeded = seed_legacy(engine, settings, rows, seed=1)
    seed_s = time.perf_counter() - started
    tables = list(resolve_legacy_tables(engine, settings).values())
    vacuum(engine)
    loads = [loadavg()]
    backfill_group, check_group = list(BACKFILL), list(CHECK)
    env: dict[str, str] | None = {**os.environ, "FORCE_COLOR": "1"} if bars else None
    base_env: dict[str, str] | None = None
    if library:
        backfill_group.append("backfill@lib")
        check_group.append("check@lib")
    if workers is not None:
        backfill_group.append(f"backfill@w{workers}")
    if base_src is not None:
        with_bytecode(base_src)
        base_env = {**(env or os.environ), "PYTHONPATH": base_src}
        backfill_group.append("backfill@base")
        check_group.append("check@base")
    seconds: dict[str, list[float]] = {v: [] for v in (*backfill_group, *check_group)}
    peak_mb: dict[str, list[float]] = {v: [] for v in seconds}
    wal_mb: dict[str, list[float]] = {v: [] for v in seconds}
    checkpoints: dict[str, list[int]] = {v: [] for v in seconds}
    json_flag = [] if bars else ["--json"]  # --json turns the bars off
    expected_ok: int | None = None

    def run_variant(variant: str) -> None:
        nonlocal expected_ok
        cmd_env = base_env if variant.endswith("@base") else env
        if variant in backfill_group:
            empty_unified(engine)
        vacuum(engine)
        wal0, ckpt0 = server_counters(engine)
        t0 = time.perf_counter()
        if variant == "raw_backfill":
            copied = raw_backfill(engine, tables)
            assert copied == rows, (copied, rows)
        elif variant == "raw_check":
            total, ok = raw_check(engine, tables)
            assert total == rows, (total, rows)
            expected_ok = ok
        elif variant == "backfill@lib":
            assert run_backfill(engine, settings).inserted == rows
        elif variant == "check@lib":
            assert run_check(engine, settings, examples=10).total == rows
        elif variant.startswith("backfill"):
            more = ["--workers", str(workers)] if variant.startswith("backfill@w") else []
            done = run_timed(unistatus(url, "backfill", *more, *json_flag), cmd_env)
            assert done.returncode == 0, done.stderr
            if not bars:
                assert json.loads(done.stdout)["inserted"] == rows
            peak_mb[variant].append(done.max_rss_mb)
        else:
            done = run_timed(unistatus(url, "check", "--examples", "10", "--json"), cmd_env)
            assert done.returncode in (0, 1), done.stderr
            report = json.loads(done.stdout)
            assert report["total"] == rows, report["total"]
            if expected_ok is not None:
                assert report["consistent"] == expected_ok, (report["consistent"], expected_ok)
            peak_mb[variant].append(done.max_rss_mb)
        elapsed = time.perf_counter() - t0
        wal1, ckpt1 = server_counters(engine)
        seconds[variant].append(elapsed)
        wal_mb[variant].append(round((wal1 - wal0) / 2**20, 1))
        checkpoints[variant].append(ckpt1 - ckpt0)
        print(
            f"  {variant:<13} {elapsed:7.2f} s {rows / elapsed:>10,.0f} rows/s "
            f"WAL {wal_mb[variant][-1]:,.0f} MB, checkpoints {ckpt1 - ckpt0} "
            f"(load {loadavg()})",
            file=sys.stderr,
        )

    groups = []
    if only in (None, "backfill"):
        groups.append(backfill_group)
    if only in (None, "check"):
        groups.append(check_group)
    for r in range(rounds):
        for group in groups:
            fresh = backfill_group in groups  # the backfills just left every row undamaged
            if group is check_group and (r == 0 or fresh):
                # The check needs every unified row, damaged on purpose (once per copy:
                # damage twice would undo it), and a warm-up.
                if not fresh:
                    empty_unified(engine)
                    raw_backfill(engine, tables)
                damage(engine, share)
                vacuum(engine)
                raw_check(engine, tables)
            for variant in rotated(group, r):
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
            "command_peak_rss_mb": max(peak_mb[cmd], default=None),
            "wal_mb": {"raw": wal_mb[raw], "command": wal_mb[cmd]},
            "checkpoints_during": {"raw": checkpoints[raw], "command": checkpoints[cmd]},
        }

    out = {
        "rows": rows,
        "per_system": seeded,
        "rounds": rounds,
        "seed_seconds": round(seed_s, 2),
        "loadavg": loads,
        "backfill": figures(*BACKFILL),
        "check": figures(*CHECK),
    }
    for variant in ("backfill@lib", "check@lib", f"backfill@w{workers}"):
        if variant in seconds:
            out[variant] = figures("raw_" + variant.split("@")[0], variant)
    if base_src is not None:
        out["backfill@base"] = figures("raw_backfill", "backfill@base")
        out["check@base"] = figures("raw_check", "check@base")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="legacy rows (all systems)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--damage", type=float, default=0.001, help="share of mismatched rows")
    parser.add_argument("--only", choices=["backfill", "check"], help="one command only")
    parser.add_argument("--base-src", help="also run the commands with PYTHONPATH=DIR")
    parser.add_argument("--library", action="store_true", help="also time the library calls")
    parser.add_argument("--bars", action="store_true", help="FORCE_COLOR=1: progress bars on")
    parser.add_argument(
        "--workers", type=int, help="also run the backfill command with --workers N"
    )
    parser.add_argument("--database-url", help="a scratch PostgreSQL database instead")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args(argv)
    with given_or_throwaway(args.database_url, "bench_commands") as url:
        result = bench(
            url,
            args.rows,
            args.rounds,
            args.damage,
            args.only,
            args.base_src,
            args.library,
            args.bars,
            args.workers,
        )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['rows']:,} legacy rows, {result['rounds']} rounds, load {result['loadavg']}")
    names = ("backfill", "backfill@lib", "backfill@base", f"backfill@w{args.workers}")
    names += ("check", "check@lib", "check@base")
    for name in names:
        f = result.get(name)
        if f:
            print(
                f"  {name:<14} raw {f['raw_rows_per_second']:>9,} rows/s  command "
                f"{f['command_rows_per_second']:>9,} rows/s  ratio {f['ratio']:.2f} "
                f"(per round {f['ratio_paired']}), peak RSS {f['command_peak_rss_mb']} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
