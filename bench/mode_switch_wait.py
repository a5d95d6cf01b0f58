"""What live writers meet while a mode switch waits for an application's open transaction.

Writer threads change cashouts' statuses through the adapter without pause
(DUAL_WRITE_LEGACY_PRIMARY). After ``--before`` seconds an application transaction (the
caller's, ``update_status(..., connection=conn)``) opens and stays open ``--hold``
seconds; half a second into it an operator's switch (``set_mode`` of the cashouts to
LEGACY_ONLY) begins waiting for it. The report gives the writers' latency and
throughput before the switch, while it waits, and after the caller's commit, the longest
any write took, and how long the switch waited.

    .venv/bin/python bench/mode_switch_wait.py            # throwaway local database
    .venv/bin/python bench/mode_switch_wait.py --writers 8 --hold 4 --json

Without ``--database-url`` a database is created on the local server and dropped
afterwards. With one, the schema is upgraded in place and the benchmark's rows are left
behind: use a scratch database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

from _databases import given_or_throwaway
from _timing import loadavg

from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine

FLIP = {"PROCESSING": "AWAITING_RESPONSE", "AWAITING_RESPONSE": "PROCESSING"}


def _figures(samples: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    """Writes that began in [start, end): count, per second, p50 / p99 / max in ms."""
    ms = sorted(took for began, took in samples if start <= began < end)
    if not ms:
        return {"writes": 0, "per_second": 0.0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "writes": len(ms),
        "per_second": round(len(ms) / max(end - start, 1e-9), 1),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max_ms": round(ms[-1], 2),
    }


def run(url: str, writers: int, before: float, hold: float, after: float) -> dict[str, Any]:
    settings = load_settings(database_url=url)
    engine = create_engine(url, pool_size=writers + 4)
    schema.upgrade(engine, settings)
    set_mode(engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="bench", actor="bench")
    adapter = DualWriteAdapter(engine, settings=settings)
    adapter.modes.refresh()
    own = [
        [
            str(adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id)
            for _ in range(20)
        ]
        for _ in range(writers + 1)
    ]
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def write(ids: list[str]) -> None:
        state = dict.fromkeys(ids, "PENDING")
        i = 0
        while not stop.is_set():
            entity = ids[i % len(ids)]
            target = "PROCESSING" if state[entity] == "PENDING" else FLIP[state[entity]]
            began = time.monotonic()
            result = adapter.update_status(entity, target, "bench", "bench")
            samples.append((began - t0, (time.monotonic() - began) * 1000))
            if result.overall_success:
                state[entity] = target
            else:
                errors.append(str(result.error))
            i += 1

    threads = [threading.Thread(target=write, args=(own[n],)) for n in range(writers)]
    for t in threads:
        t.start()
    time.sleep(before)
    caller_open = time.monotonic() - t0
    switch: dict[str, Any] = {}

    def switch_mode() -> None:
        began = time.monotonic()
        try:
            set_mode(engine, DualWriteMode.LEGACY_ONLY, system="CASHOUT", reason="b", actor="b")
            switch["outcome"] = "switched"
        except Exception as exc:  # the figure is what happened, whatever it was
            switch["outcome"] = f"{type(exc).__name__}: {exc}"
        switch["waited_s"] = round(time.monotonic() - began, 2)

    with engine.connect() as conn:
        conn.begin()
        adapter.update_status(own[writers][0], "PROCESSING", "app", "app", connection=conn)
        time.sleep(0.5)
        switch_began = time.monotonic() - t0
        switcher = threading.Thread(target=switch_mode)
        switcher.start()
        time.sleep(max(hold - 0.5, 0.0))
        conn.commit()
    caller_commit = time.monotonic() - t0
    switcher.join(120)
    time.sleep(after)
    stop.set()
    for t in threads:
        t.join(30)
    end = time.monotonic() - t0
    adapter.close()
    engine.dispose()
    return {
        "writers": writers,
        "hold_seconds": hold,
        "caller_open_at_s": round(caller_open, 2),
        "switch_began_at_s": round(switch_began, 2),
        "caller_commit_at_s": round(caller_commit, 2),
        "switch": switch,
        "before_switch": _figures(samples, 0.2, switch_began),
        "while_switch_waits": _figures(samples, switch_began, caller_commit),
        "after_commit": _figures(samples, caller_commit, end),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "loadavg": loadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: throwaway local DB)")
    parser.add_argument("--writers", type=int, default=8, help="writer threads (default 8)")
    parser.add_argument("--before", type=float, default=1.0, help="seconds before (default 1)")
    parser.add_argument(
        "--hold", type=float, default=4.0, help="seconds the caller's transaction stays open"
    )
    parser.add_argument("--after", type=float, default=1.0, help="seconds after (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with given_or_throwaway(args.database_url, "bench_switch_wait") as url:
        report = run(url, args.writers, args.before, args.hold, args.after)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
