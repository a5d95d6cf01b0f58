"""What one ``create_transaction`` costs through the adapter, in one process.

Creates ``--creates`` cashouts one after another in ``--mode`` (after 50 to warm the
prepared statements) and prints creates/s and the mean time per create. It measures one
code against another, not against raw SQL: run it with each code's ``src`` first on
``PYTHONPATH``, alternated, e.g.

    PYTHONPATH=/path/to/base/src .venv/bin/python bench/create_cost.py --json
    PYTHONPATH=src .venv/bin/python bench/create_cost.py --json

Without ``--database-url`` a database is created on the local server
(postgresql://postgres@127.0.0.1:5432) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import time

from _databases import given_or_throwaway
from _timing import loadavg

from unistatus import DualWriteAdapter, DualWriteMode
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine

WARM_UP = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--creates", type=int, default=3000)
    parser.add_argument("--mode", default=DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY.value)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with given_or_throwaway(args.database_url, "create") as url:
        settings = load_settings(database_url=url)
        engine = create_engine(url)
        try:
            schema.upgrade(engine, settings)
            set_mode(engine, DualWriteMode(args.mode), reason="bench", actor="bench", force=True)
            adapter = DualWriteAdapter(engine, settings=settings, record_stats=False)
            for _ in range(WARM_UP):
                adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
            started = time.perf_counter()
            for _ in range(args.creates):
                result = adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
                assert result.overall_success, result.error
            seconds = time.perf_counter() - started
            adapter.close()
        finally:
            engine.dispose()
    figures = {
        "mode": args.mode,
        "creates": args.creates,
        "creates_per_second": round(args.creates / seconds, 1),
        "ms_per_create": round(seconds / args.creates * 1000, 4),
        "loadavg": loadavg(),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"{figures['creates_per_second']:.0f} creates/s, "
            f"{figures['ms_per_create']:.3f} ms each ({args.mode}; load {figures['loadavg']})"
        )


if __name__ == "__main__":
    main()
