"""The load test through a connection pooler (PgBouncer, transaction mode) against the
same load test reaching the server directly, in one run.

Behind a transaction pooler unistatus prepares no statement on the server (README,
"Behind a connection pooler"): this measures what that costs the user, and what the
pooler itself adds. Variants, rotated each round, each ``unistatus loadtest
--transactions N --concurrent C --mode M --json`` as a process on the same database:

- ``direct``: the server itself (statements prepared after 5 runs, psycopg's default);
- ``direct_unprepared``: the server itself, ``UNISTATUS_PREPARED_STATEMENTS=false``;
- ``pooler``: through a private PgBouncer (``pool_mode = transaction``, 20 server
  connections), started for the run on a port of its own (Debian's ``pgbouncer``).

Reported per variant: op/s, p50, p95, errors and consistency per round, their medians,
and each variant's throughput and p95 against ``direct`` (paired per round).

    .venv/bin/python bench/pooler.py                        # 3000 transactions, 4 rounds
    .venv/bin/python bench/pooler.py --transactions 10000 --concurrent 50 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from _databases import given_or_throwaway
from _process import run_timed, unistatus
from _timing import loadavg, rotated

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.pgbouncer import pgbouncer  # noqa: E402 - the tests' private PgBouncer

VARIANTS = ("direct", "direct_unprepared", "pooler")


def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    done = run_timed(unistatus(url, "init"))
    assert done.returncode == 0, done.stderr
    load = ["loadtest", "-n", str(args.transactions), "-c", str(args.concurrent)]
    load += ["--mode", args.mode, "--json"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    loads = [loadavg()]
    with pgbouncer(url) as pooled:
        for r in range(args.rounds):
            for variant in rotated(VARIANTS, r):
                env = dict(os.environ)
                if variant == "direct_unprepared":
                    env["UNISTATUS_PREPARED_STATEMENTS"] = "false"
                target = pooled if variant == "pooler" else url
                done = run_timed(unistatus(target, *load), env)
                report = json.loads(done.stdout)
                latency = report["latency_ms"]
                runs[variant].append(
                    {
                        "operations_per_s": report["operations_per_s"],
                        "p50": latency["p50"],
                        "p95": latency["p95"],
                        "errors": report["errors"],
                        "consistency_rate": report["consistency_rate"],
                    }
                )
            loads.append(loadavg())

    def median(variant: str, figure: str) -> float:
        return round(statistics.median(f[figure] for f in runs[variant]), 3)

    def paired(variant: str, figure: str) -> float:
        ratios = [v[figure] / d[figure] for v, d in zip(runs[variant], runs["direct"], strict=True)]
        return round(statistics.median(ratios), 3)

    return {
        "transactions": args.transactions,
        "concurrent": args.concurrent,
        "mode": args.mode,
        "runs": runs,
        "median": {
            v: {f: median(v, f) for f in ("operations_per_s", "p50", "p95")} for v in VARIANTS
        },
        "over_direct": {
            v: {"operations_per_s": paired(v, "operations_per_s"), "p95": paired(v, "p95")}
            for v in VARIANTS[1:]
        },
        "loadavg": loads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=3_000)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--mode", default="DUAL_WRITE_LEGACY_PRIMARY", help="load test's mode")
    parser.add_argument("--database-url", help="a scratch PostgreSQL database instead")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args(argv)
    with given_or_throwaway(args.database_url, "bench_pooler") as url:
        result = bench(url, args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for variant, runs in result["runs"].items():
        for i, f in enumerate(runs, 1):
            print(
                f"  {variant:<17} round {i}: {f['operations_per_s']:>8,.0f} op/s  p50 "
                f"{f['p50']:.1f}  p95 {f['p95']:.1f} ms  errors {f['errors']}  "
                f"consistency {f['consistency_rate']:.4f}"
            )
    for variant, ratio in result["over_direct"].items():
        print(f"  {variant} / direct: op/s {ratio['operations_per_s']}, p95 {ratio['p95']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
