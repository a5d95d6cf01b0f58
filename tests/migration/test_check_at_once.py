"""One check, every system at once (PostgreSQL), and what it must not change.

Where the database runs statements side by side (PostgreSQL), ``run_check`` walks the
systems at once, each on its own connection, and counts each range with one FULL JOIN
(``pair_flags(full_join=True)``) instead of the two halves it counts a system alone
with. These tests hold what that must keep: both forms count every range alike (kinds,
recent pairs, where the mismatches are), the walks really overlap, the report (counts
and examples, in system order) is the one the systems give one after another, an error
in one walk stops the others and is raised, and a resumed run keeps each system's
examples once.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from support.check_data import T1, damage, populate, tables
from unistatus.migration.check import run_check
from unistatus.migration.check_sql import chunk_keys, count_chunk, pair_flags

N = 60
CHUNK = 10


class Stop(Exception):
    """Raised by a range callback: the run is interrupted there."""


@pytest.mark.parametrize("since", [None, T1], ids=["all", "since"])
@pytest.mark.parametrize("bounds", [(None, None), (10, 40)], ids=["whole", "range"])
def test_the_full_join_counts_every_range_as_the_two_halves_do(
    db: Any, since: Any, bounds: tuple[int | None, int | None]
) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    lo, hi = bounds
    for lt in tables(db.engine, db.settings).values():
        with db.engine.connect() as conn:
            _, span = chunk_keys(conn, lt, lo, (hi or N) - (lo or 0))
            counted = [
                count_chunk(
                    conn,
                    pair_flags(lt, lo, hi, since, project_pending=project, full_join=full),
                    T1 - timedelta(seconds=1),  # the damaged rows are the recent ones
                    span,
                )
                for project in (False, True)
                for full in (False, True)
            ]
        halves, full, halves_projected, full_projected = counted
        assert full == halves, lt.system
        assert full_projected == halves_projected, lt.system
        counts, recent, spots = full
        assert counts["total"] > counts["ok"] and recent and spots  # something to agree on


@pytest.mark.postgres
def test_the_systems_are_walked_at_once_and_report_as_one_after_another(
    pg: Any, tmp_path: Path
) -> None:
    populate(pg.engine, pg.settings, N)
    damage(pg.engine, pg.settings, N)
    # --out walks the systems one after another (one file, cut at one offset on resume).
    after = run_check(pg.engine, pg.settings, chunk=CHUNK, examples=500, out=tmp_path / "o.jsonl")
    escrow_started = threading.Event()
    overlapped: list[bool] = []

    def on_range(system: Any, pos: Any) -> None:
        if system.value == "ESCROW":
            escrow_started.set()
        elif system.value == "CASHOUT" and pos.ranges == 1:
            # One after another, escrow would start only once cashout is done: never.
            overlapped.append(escrow_started.wait(timeout=20))

    at_once = run_check(pg.engine, pg.settings, chunk=CHUNK, examples=500, on_range=on_range)
    assert overlapped == [True]
    assert at_once.complete and after.complete
    assert (at_once.total, at_once.consistent) == (after.total, after.consistent)
    assert at_once.inconsistencies == after.inconsistencies
    for system, figures in after.per_system.items():
        for key in ("total", "consistent", "inconsistencies", "ranges", "complete"):
            assert at_once.per_system[system][key] == figures[key], (system, key)
    assert at_once.examples == after.examples  # in system order, then key order
    assert len({e["system"] for e in at_once.examples}) == 3


@pytest.mark.postgres
def test_an_error_in_one_walk_stops_the_others_and_is_raised(pg: Any) -> None:
    populate(pg.engine, pg.settings, N)
    seen: dict[str, int] = {}

    def on_range(system: Any, pos: Any) -> None:
        seen[system.value] = pos.ranges
        if system.value == "ESCROW":
            raise Stop("escrow's walk failed")

    with pytest.raises(Stop):
        run_check(pg.engine, pg.settings, chunk=1, on_range=on_range)
    # The others stopped at their next range, far from their 60 ranges.
    assert seen["ESCROW"] == 1
    assert seen.get("CASHOUT", 0) < N and seen.get("EXCHANGE", 0) < N


def test_a_resumed_run_keeps_each_systems_examples_once(db: Any) -> None:
    """Each system's position kept every example found so far, other systems' too: a
    resumed run then listed the first systems' examples twice."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    whole = run_check(db.engine, db.settings, chunk=CHUNK, examples=1000)

    def stop_in_escrow(system: Any, pos: Any) -> None:
        if system.value == "ESCROW" and pos.ranges == 2:
            raise Stop

    with pytest.raises(Stop):
        run_check(db.engine, db.settings, chunk=CHUNK, examples=1000, on_range=stop_in_escrow)
    resumed = run_check(db.engine, db.settings, resume=True)
    assert resumed.complete and resumed.inconsistent == whole.inconsistent
    keys = [(e["system"], e["legacy_id"]) for e in resumed.examples]
    assert len(keys) == len(set(keys)), "an example listed twice"
    assert resumed.examples == whole.examples
