"""Scale: N legacy rows on PostgreSQL, every long command as the user runs it, each
against the raw SQL limit in the same run.

Seeds ``--rows`` legacy rows across the three legacy tables, set-based
(``unistatus.sim.seed.seed_legacy``: one ``INSERT ... SELECT`` over ``generate_series``
per table), then, in this order, each step timed as a process (``_process.run_timed``:
wall time and the command's own peak RSS, its worker threads included) and its raw
statement timed in this process just before it:

- ``backfill --workers 1`` and ``backfill --workers 2`` (``--workers``), each into an
  emptied ``unified_transactions``; raw (once, before them): ONE ``INSERT ... SELECT``
  per legacy table, the backfill's row expression, one transaction.
- ``check`` (full); raw: ONE full outer join per legacy table with the rule's predicates
  (``bench/commands.py``).
- ``check --since <a minute ago>`` after ``--changed`` rows of each table were updated (legacy and
  unified, as live dual writes do); raw: the same join restricted to pairs updated since
  then. rows/s here is the table's rows over the time (the check reads every chunk).
- ``archive export``; raw: ``COPY (SELECT * FROM t ORDER BY id) TO STDOUT`` of each table
  written through the same gzip settings (level 9, no name or time).

Figures: seconds, rows/s, peak RSS (MB), ratio = raw seconds / command seconds.

    .venv/bin/python bench/scale.py --rows 1000000
    .venv/bin/python bench/scale.py --rows 10000000 --json > scale-10m.json
    .venv/bin/python bench/scale.py --rows 20000 --steps backfill,check --json   # smoke

Without ``--database-url`` a PostgreSQL database is created on the local server and
dropped afterwards (10M rows take about 6 GB while it runs: ``df -h`` first).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _databases import given_or_throwaway
from _process import Finished, run_timed, unistatus
from _timing import loadavg
from commands import empty_unified, raw_backfill, raw_check_statement, vacuum

from unistatus.clock import utcnow
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.engine import create_engine
from unistatus.db.legacy import LegacyTable, resolve_legacy_tables
from unistatus.db.tables import unified_transactions as U
from unistatus.sim.seed import seed_legacy

STEPS = ("backfill", "check", "since", "archive")


def raw_since(engine: sa.Engine, tables: list[LegacyTable], since: Any) -> int:
    """The full outer join per table, only the pairs updated since ``since``."""
    total = 0
    with engine.connect() as conn:
        for lt in tables:
            stmt = raw_check_statement(lt)
            u = stmt.get_final_froms()[0].right  # the join's unified subquery
            stmt = stmt.where(sa.or_(lt.column("updated_at") >= since, u.c.updated_at >= since))
            total += int(conn.execute(stmt).one()[0])
    return total


def touch(engine: sa.Engine, tables: list[LegacyTable], per_table: int) -> Any:
    """``per_table`` rows of each legacy table and their unified rows updated now."""
    now = utcnow()
    with engine.begin() as conn:
        for lt in tables:
            ids = sa.select(lt.id).order_by(lt.id.desc()).limit(per_table).scalar_subquery()
            conn.execute(
                sa.update(lt.table).where(lt.id.in_(ids)).values({lt.column("updated_at"): now})
            )
            conn.execute(
                sa.update(U)
                .where(U.c.legacy_system == lt.system.value, U.c.legacy_id.in_(ids))
                .values(updated_at=now)
            )
    return now  # every seeded row's updated_at is before it: the scope is exactly these


def raw_export(engine: sa.Engine, tables: list[LegacyTable], directory: Path) -> int:
    """Each table through COPY into a gzip file (level 9, like the archive's)."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for lt in tables:
            name = lt.table.name
            path = directory / f"{name}.copy.gz"
            with (
                path.open("wb") as out,
                gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz,
                cur.copy(f'COPY (SELECT * FROM "{name}" ORDER BY id) TO STDOUT') as copy,  # type: ignore[attr-defined]
            ):
                for block in copy:
                    gz.write(block)
        raw.rollback()
    finally:
        raw.close()
    return sum(p.stat().st_size for p in directory.iterdir())


def bench(
    url: str, rows: int, workers: list[int], steps: list[str], changed: int
) -> dict[str, Any]:
    settings = load_settings(database_url=url)
    engine = create_engine(url)
    schema.upgrade(engine, settings)
    out: dict[str, Any] = {"rows": rows, "loadavg": [loadavg()], "steps": {}}
    started = time.perf_counter()
    out["per_system"] = seed_legacy(engine, settings, rows, seed=1)
    out["seed_seconds"] = round(time.perf_counter() - started, 2)
    tables = list(resolve_legacy_tables(engine, settings).values())
    vacuum(engine)

    def record(
        name: str, raw_s: float, done: Finished, extra: dict[str, Any] | None = None
    ) -> None:
        assert done.returncode in (0, 1), done.stderr[-2000:]
        figures = {
            "raw_seconds": round(raw_s, 3),
            "command_seconds": round(done.seconds, 3),
            "raw_rows_per_second": round(rows / raw_s),
            "command_rows_per_second": round(rows / done.seconds),
            "ratio": round(raw_s / done.seconds, 3),
            "command_peak_rss_mb": round(done.max_rss_mb, 1),
            "loadavg": loadavg(),
            **(extra or {}),
        }
        out["steps"][name] = figures
        print(f"  {name:<22} {json.dumps(figures)}", file=sys.stderr)

    def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
        t0 = time.perf_counter()
        result = fn()
        return time.perf_counter() - t0, result

    if "backfill" in steps:
        empty_unified(engine)
        vacuum(engine)
        raw_s, copied = timed(lambda: raw_backfill(engine, tables))
        assert copied == rows, (copied, rows)
        for n in workers:  # every worker count against the one raw run (time: 10M rows)
            empty_unified(engine)
            vacuum(engine)
            done = run_timed(unistatus(url, "backfill", "--workers", str(n), "--json"))
            assert done.returncode == 0, done.stderr[-2000:]
            assert json.loads(done.stdout)["inserted"] == rows
            record(f"backfill --workers {n}", raw_s, done)
    else:  # the unified rows the checks need, by the raw statement (timed: a figure too)
        empty_unified(engine)
        raw_s, _ = timed(lambda: raw_backfill(engine, tables))
        out["raw_backfill_seconds"] = round(raw_s, 3)
        print(f"  raw backfill           {raw_s:.1f} s ({loadavg()})", file=sys.stderr)
    vacuum(engine)
    if "check" in steps:
        raw_s, _ = timed(lambda: _raw_check(engine, tables))
        done = run_timed(unistatus(url, "check", "--json"))
        assert json.loads(done.stdout)["total"] == rows
        record("check", raw_s, done)
    if "since" in steps:
        since = touch(engine, tables, changed)
        raw_s, in_scope = timed(lambda: raw_since(engine, tables, since))
        # What `check --since 1m` reads a minute after the changes, as an exact time (a
        # seeded row may have been updated within the last minute of a quick run).
        done = run_timed(unistatus(url, "check", "--since", since.isoformat(), "--json"))
        report = json.loads(done.stdout)
        assert report["total"] == in_scope == changed * len(tables), (report["total"], in_scope)
        record("check --since", raw_s, done, {"rows_in_scope": in_scope})
    if "archive" in steps:
        scratch = Path(tempfile.mkdtemp(prefix="unistatus_scale_"))
        try:
            (scratch / "raw").mkdir()
            raw_s, raw_bytes = timed(lambda: raw_export(engine, tables, scratch / "raw"))
            done = run_timed(
                unistatus(url, "archive", "export", "--out", str(scratch / "a"), "--json")
            )
            size = sum(p.stat().st_size for p in (scratch / "a").iterdir())
            record("archive export", raw_s, done, {"bytes": size, "raw_bytes": raw_bytes})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    out["loadavg"].append(loadavg())
    engine.dispose()
    return out


def _raw_check(engine: sa.Engine, tables: list[LegacyTable]) -> int:
    with engine.connect() as conn:
        return sum(int(conn.execute(raw_check_statement(lt)).one()[0]) for lt in tables)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="legacy rows (all systems)")
    parser.add_argument("--workers", default="1,2", help="backfill worker counts, comma-separated")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    parser.add_argument("--changed", type=int, default=1000, help="rows per table for --since")
    parser.add_argument("--database-url", help="a scratch PostgreSQL database instead")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if unknown := set(steps) - set(STEPS):
        parser.error(f"unknown steps: {sorted(unknown)}")
    workers = [int(w) for w in args.workers.split(",")]
    with given_or_throwaway(args.database_url, "bench_scale") as url:
        result = bench(url, args.rows, workers, steps, args.changed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.rows:,} legacy rows (seeded in {result['seed_seconds']} s), load {result['loadavg']}"
    )
    for name, f in result["steps"].items():
        print(
            f"  {name:<22} raw {f['raw_rows_per_second']:>9,} rows/s  command "
            f"{f['command_rows_per_second']:>9,} rows/s  ratio {f['ratio']:.2f}  "
            f"peak RSS {f['command_peak_rss_mb']} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
