"""What recording an operation costs the adapter: ``OperationStats.record`` per event.

Every adapter operation hands its event to the process's recorder, which adds it to an
in-memory aggregate (flushed every few seconds). This times ``record`` alone, on events
of which ``--failed`` percent failed (each with a kind, as a connection limit's), in
``--rounds`` rounds of ``--events`` events; the median and best of the rounds, in µs
per event. To compare two trees, run it with each on ``PYTHONPATH``, alternating:

    PYTHONPATH=/tmp/base/src .venv/bin/python bench/stats_record.py --label base
    PYTHONPATH=src .venv/bin/python bench/stats_record.py --label this
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import sqlalchemy as sa

from unistatus.adapter.model import OperationEvent
from unistatus.adapter.stats import OperationStats
from unistatus.domain.statuses import DualWriteMode, LegacySystemType


def _event(success: bool) -> OperationEvent:
    return OperationEvent(
        operation="update_status",
        mode=DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY,
        success=success,
        duration_ms=3.0,
        system=LegacySystemType.CASHOUT,
        error_kind=None if success else "connection_limit",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=1, help="percent of the events")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--label", default="this")
    args = parser.parse_args()
    stats = OperationStats(sa.create_engine("sqlite://"), flush_seconds=3600, start=False)
    batch = [_event(True)] * (100 - args.failed) + [_event(False)] * args.failed
    per_event = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for _ in range(args.events // len(batch)):
            for event in batch:
                stats.record(event)
        per_event.append((time.perf_counter() - started) / args.events * 1e6)
    print(
        json.dumps(
            {
                "label": args.label,
                "us_per_event_median": round(statistics.median(per_event), 3),
                "us_per_event_best": round(min(per_event), 3),
                "rounds": args.rounds,
                "events": args.events,
                "failed_percent": args.failed,
            }
        )
    )


if __name__ == "__main__":
    main()
