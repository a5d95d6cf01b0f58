"""The load test alone, and with a backfill and continuous verification running beside it.

Issue 14 asks for the live p95 and error rate with and without a backfill (and the
verification that keeps the consistency rate fresh) running at the same time: the
backfill's throttle should keep the live p95 within 20% of the run without one.

Setup: a PostgreSQL database with ``--legacy-rows`` legacy rows (set-based seed), not
backfilled. Each round runs two variants in rotated order, each on the same database:

- ``alone``: ``unistatus loadtest --transactions N --concurrent C --mode M --json``;
- ``busy``: the same command while, as separate processes, ``unistatus backfill
  BACKFILL_ARGS`` copies the legacy rows (``--backfill``, from scratch: its state and
  unified rows are emptied first) and the verification runs (``--verify``):
  ``VERIFY_COMMAND`` started once (e.g. ``monitor`` once continuous verification lands:
  ``--verify-command "monitor --interval 5"``), or by default ``check --since 2m``
  started every ``--verify-interval`` seconds. Whatever is still running when the load
  test ends is stopped (SIGTERM; the backfill resumes from its checkpoint next time).

Reported per variant: the load test's op/s, p50/p95/p99, error rate, consistency; for
``busy`` the rows the backfill committed during the load test and the verification runs
completed; and p95 busy / alone per round (paired), with its median.

    .venv/bin/python bench/loadtest_busy.py                           # both on, 2 rounds
    .venv/bin/python bench/loadtest_busy.py --no-verify --backfill-args "--max-rows-per-second 20000"
    .venv/bin/python bench/loadtest_busy.py --verify-command "monitor --interval 5" --no-backfill
    .venv/bin/python bench/loadtest_busy.py --verify-command "monitor --interval 5" --settle 3

``--settle S`` starts the load test S seconds after the processes beside it (default 0:
all at once, their start-ups inside the load test's first seconds).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from _databases import given_or_throwaway
from _process import run_timed, unistatus
from _timing import loadavg, rotated
from commands import empty_unified, vacuum

from unistatus.backfill.activity import read_workers
from unistatus.clock import utcnow
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.engine import create_engine
from unistatus.db.tables_backfill import backfill_chunks
from unistatus.sim.seed import seed_legacy

VARIANTS = ("alone", "busy")


class Beside:
    """The processes that run beside the load test in the ``busy`` variant."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url, self.args = url, args
        self.backfill: subprocess.Popen[bytes] | None = None
        self.verify: subprocess.Popen[bytes] | None = None
        self.verify_runs = 0
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None

    def start(self) -> None:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        if self.args.backfill:
            extra = shlex.split(self.args.backfill_args)
            self.backfill = subprocess.Popen(unistatus(self.url, "backfill", *extra), **quiet)
        if self.args.verify and self.args.verify_command:
            cmd = shlex.split(self.args.verify_command)
            self.verify = subprocess.Popen(unistatus(self.url, *cmd), **quiet)
        elif self.args.verify:
            self._loop = threading.Thread(target=self._check_every, daemon=True)
            self._loop.start()

    def _check_every(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            done = run_timed(unistatus(self.url, "check", "--since", "2m", "--json"))
            if done.returncode in (0, 1):
                self.verify_runs += 1
            self._stop.wait(max(0.0, self.args.verify_interval - (time.monotonic() - started)))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        out: dict[str, Any] = {}
        for name, proc in (("backfill", self.backfill), ("verify", self.verify)):
            if proc is None:
                continue
            out[f"{name}_finished_before_the_load_test"] = proc.poll() is not None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            out[f"{name}_exit"] = proc.wait(timeout=60)
        if self._loop is not None:
            self._loop.join(timeout=120)
            out["verify_runs"] = self.verify_runs
        return out


def backfilled_rows(engine: sa.Engine) -> int:
    q = sa.select(sa.func.coalesce(sa.func.sum(backfill_chunks.c.rows), 0)).where(
        backfill_chunks.c.state == "done"
    )
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def held_back(engine: sa.Engine, since: datetime) -> dict[str, float]:
    """Seconds the backfill workers started at or after ``since`` held back, per reason
    (``p95_latency``, ``max_rows_per_second``, ...): what the throttle did in the run."""
    held: dict[str, float] = {}
    for worker in read_workers(engine, include_finished=True):
        if datetime.fromisoformat(worker["started_at"]) < since:
            continue
        for reason, seconds in worker["throttled_seconds"].items():
            held[reason] = round(held.get(reason, 0.0) + float(seconds), 3)
    return held


def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(database_url=url)
    engine = create_engine(url)
    schema.upgrade(engine, settings)
    seed_legacy(engine, settings, args.legacy_rows, seed=1)
    vacuum(engine)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    loads = [loadavg()]
    for r in range(args.rounds):
        for variant in rotated(list(VARIANTS), r):
            empty_unified(engine)  # the backfill starts from scratch in each busy run
            vacuum(engine)
            beside = Beside(url, args) if variant == "busy" else None
            variant_started = utcnow()
            if beside is not None:
                beside.start()
                # Running, not starting: their interpreters' start-ups and first
                # statements fall before the load test, as in production, where the
                # traffic meets a backfill and a monitor already at work.
                time.sleep(args.settle)
            done = run_timed(
                unistatus(
                    url,
                    "loadtest",
                    "--transactions",
                    str(args.transactions),
                    "--concurrent",
                    str(args.concurrent),
                    "--mode",
                    args.mode,
                    "--seed",
                    str(r),
                    "--json",
                )
            )
            extra = beside.stop() if beside is not None else {}
            if beside is not None and args.backfill:
                extra["backfill_rows_committed"] = backfilled_rows(engine)
                extra["backfill_held_back_seconds"] = held_back(engine, variant_started)
            assert done.returncode in (0, 1), done.stderr[-2000:]
            report = json.loads(done.stdout)
            figures = {
                "operations_per_s": report["operations_per_s"],
                **report["latency_ms"],
                "error_rate": report["error_rate"],
                "consistency_rate": report["consistency_rate"],
                "loadavg": loadavg(),
                **extra,
            }
            runs[variant].append(figures)
            print(f"  round {r + 1} {variant:<6} {json.dumps(figures)}", file=sys.stderr)
        loads.append(loadavg())
    engine.dispose()
    paired = [b["p95"] / a["p95"] for a, b in zip(runs["alone"], runs["busy"], strict=True)]
    return {
        "transactions": args.transactions,
        "concurrent": args.concurrent,
        "legacy_rows": args.legacy_rows,
        "backfill": args.backfill,
        "backfill_args": args.backfill_args,
        "verify": args.verify,
        "verify_command": args.verify_command or f"check --since 2m every {args.verify_interval} s",
        "settle_seconds": args.settle,
        "runs": runs,
        "p95_busy_over_alone": [round(x, 3) for x in paired],
        "p95_busy_over_alone_median": round(statistics.median(paired), 3),
        "loadavg": loads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--legacy-rows", type=int, default=1_000_000, help="rows to backfill")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", default="DUAL_WRITE_LEGACY_PRIMARY", help="load test's mode")
    parser.add_argument("--backfill", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--backfill-args", default="", help="extra `unistatus backfill` options")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--verify-command", default="", help="a long-running unistatus command instead"
    )
    parser.add_argument("--verify-interval", type=float, default=10.0, help="seconds")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds between starting the backfill and verification and the load test",
    )
    parser.add_argument("--database-url", help="a scratch PostgreSQL database instead")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args(argv)
    with given_or_throwaway(args.database_url, "bench_loadtest_busy") as url:
        result = bench(url, args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for variant, runs in result["runs"].items():
        for i, f in enumerate(runs, 1):
            print(
                f"  {variant:<6} round {i}: {f['operations_per_s']:>8,.0f} op/s  p50 "
                f"{f['p50']:.1f}  p95 {f['p95']:.1f}  p99 {f['p99']:.1f} ms  errors "
                f"{f['error_rate']:.3%}"
            )
    print(
        f"  p95 busy / alone: {result['p95_busy_over_alone']} "
        f"(median {result['p95_busy_over_alone_median']}; target <= 1.2)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
