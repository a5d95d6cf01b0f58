"""Run one action per legacy system at the same moment, round after round."""

from __future__ import annotations

import threading
from collections.abc import Callable

from unistatus.domain.statuses import LegacySystemType


def in_lockstep(
    action: Callable[[LegacySystemType, int], None],
    rounds: int,
    after_round: Callable[[int], None],
    systems: tuple[LegacySystemType, ...] = tuple(LegacySystemType),
) -> list[BaseException]:
    """Call ``action(system, round)`` in one thread per system, every thread starting
    each round together (a barrier), then ``after_round(round)`` once they all finished
    it. Returns what the actions raised (empty: nothing), after the first round in
    which one raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(systems) + 1, timeout=60)
    done = threading.Barrier(len(systems) + 1, timeout=60)

    def run(system: LegacySystemType) -> None:
        for n in range(rounds):
            try:
                start.wait()
            except threading.BrokenBarrierError:
                return  # the test gave up (after_round raised)
            try:
                action(system, n)
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                errors.append(exc)
            try:
                done.wait()
            except threading.BrokenBarrierError:
                return

    threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in systems]
    for t in threads:
        t.start()
    try:
        for n in range(rounds):
            start.wait()
            done.wait()
            if errors:
                break  # the test reports them
            after_round(n)
    finally:
        start.abort()
        done.abort()
        for t in threads:
            t.join(timeout=60)
    return errors
