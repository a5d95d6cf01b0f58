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

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.check_data import T1, damage, populate, tables
from unistatus.clock import utcnow
from unistatus.db.engine import create_engine
from unistatus.db.tables import pending_legacy_changes
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_check import check_runs
from unistatus.migration.check import run_check
from unistatus.migration.check_runs import latest_unfinished
from unistatus.migration.check_scan import room_for_walks
from unistatus.migration.check_sql import chunk_keys, count_chunk, pair_flags

N = 60
CHUNK = 10


class Stop(Exception):
    """Raised by a range callback: the run is interrupted there."""


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(*args: Any) -> None:
        seen.append(str(args[2]))

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def pending_replays(db: Any) -> None:
    """Changes awaiting replay whose image differs from legacy (an unmappable one): the
    projected legacy status then differs from the stored one (matched pairs ending in 6,
    and orphans, ending in 5)."""
    with db.engine.begin() as conn:
        chosen = sa.or_(U.c.legacy_id % 10 == 6, U.c.legacy_id % 10 == 5)
        conn.execute(sa.update(U).where(chosen).values(legacy_status="bogus"))
        ids = conn.execute(sa.select(U.c.id).where(chosen)).scalars().all()
        conn.execute(
            sa.insert(pending_legacy_changes),
            [
                {
                    "transaction_id": i,
                    "kind": "status",
                    "legacy_status": "bogus",
                    "operation_id": str(uuid.uuid4()),
                    "created_at": utcnow(),
                }
                for i in ids
            ],
        )


@pytest.mark.parametrize("since", [None, T1], ids=["all", "since"])
@pytest.mark.parametrize("bounds", [(None, None), (10, 40)], ids=["whole", "range"])
def test_the_full_join_counts_every_range_as_the_two_halves_do(
    db: Any, since: Any, bounds: tuple[int | None, int | None]
) -> None:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    pending_replays(db)
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
        if since is None:  # the projection changed something to agree on too
            assert full_projected[0]["unmappable_legacy"] > counts["unmappable_legacy"]


@pytest.mark.postgres
def test_the_systems_are_walked_at_once_and_report_as_one_after_another(
    pg: Any, tmp_path: Path
) -> None:
    populate(pg.engine, pg.settings, N)
    damage(pg.engine, pg.settings, N)
    # --out walks the systems one after another (one file, cut at one offset on resume).
    with statements(pg.engine) as one_by_one:
        after = run_check(
            pg.engine, pg.settings, chunk=CHUNK, examples=500, out=tmp_path / "o.jsonl"
        )
    assert not any("FULL OUTER JOIN" in s for s in one_by_one)  # the halves
    escrow_started = threading.Event()
    overlapped: list[bool] = []

    def on_range(system: Any, pos: Any) -> None:
        if system.value == "ESCROW":
            escrow_started.set()
        elif system.value == "CASHOUT" and pos.ranges == 1:
            # One after another, escrow would start only once cashout is done: never.
            overlapped.append(escrow_started.wait(timeout=20))

    with statements(pg.engine) as seen:
        at_once = run_check(pg.engine, pg.settings, chunk=CHUNK, examples=500, on_range=on_range)
    assert overlapped == [True]
    counting = [s for s in seen if "AS detail" in s]  # the counting statements
    assert counting and all("FULL OUTER JOIN" in s for s in counting)
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


def whole_then_stopped_in_escrow(db: Any) -> Any:
    """A damaged database's whole report (every mismatch an example), then a run of the
    same check stopped in escrow's second range, left to resume."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    whole = run_check(db.engine, db.settings, chunk=CHUNK, examples=1000)

    def stop_in_escrow(system: Any, pos: Any) -> None:
        if system.value == "ESCROW" and pos.ranges == 2:
            raise Stop

    with pytest.raises(Stop):
        run_check(db.engine, db.settings, chunk=CHUNK, examples=1000, on_range=stop_in_escrow)
    return whole


def test_a_resumed_run_keeps_each_systems_examples_once(db: Any) -> None:
    """Each system's position kept every example found so far, other systems' too: a
    resumed run then listed the first systems' examples twice."""
    whole = whole_then_stopped_in_escrow(db)
    resumed = run_check(db.engine, db.settings, resume=True)
    assert resumed.complete and resumed.inconsistent == whole.inconsistent
    keys = [(e["system"], e["legacy_id"]) for e in resumed.examples]
    assert len(keys) == len(set(keys)), "an example listed twice"
    assert resumed.examples == whole.examples


def test_the_examples_are_the_first_in_system_order_either_way(db: Any, tmp_path: Path) -> None:
    """Five examples: all the first system's, whether the systems were walked at once
    or one after another; one after another, the later systems keep none of their own."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    one_by_one = run_check(db.engine, db.settings, chunk=CHUNK, examples=5, out=tmp_path / "o")
    either = run_check(db.engine, db.settings, chunk=CHUNK, examples=5)
    assert either.examples == one_by_one.examples
    assert [e["system"] for e in either.examples] == ["CASHOUT"] * 5
    with db.engine.connect() as conn:
        kept = dict(
            conn.execute(
                sa.select(check_runs.c.system, check_runs.c.examples).where(
                    check_runs.c.run == one_by_one.run
                )
            ).all()
        )
    assert len(kept["CASHOUT"]) == 5 and kept["ESCROW"] == [] and kept["EXCHANGE"] == []


@pytest.mark.postgres
def test_a_pool_too_small_for_the_walks_walks_one_after_another(pg: Any) -> None:
    """Each walk holds a connection and takes a second to re-check: an application's
    engine with a small pool walks the systems one after another instead of waiting on
    its own connections."""
    populate(pg.engine, pg.settings, N)
    damage(pg.engine, pg.settings, N)
    small = create_engine(pg.url, pool_size=2, max_overflow=0, pool_timeout=5)
    try:
        assert not room_for_walks(small, 3) and room_for_walks(pg.engine, 3)
        with statements(small) as seen:
            report = run_check(small, pg.settings, chunk=CHUNK)
        assert report.complete
        assert not any("FULL OUTER JOIN" in s for s in seen)
        assert report.total == run_check(pg.engine, pg.settings, chunk=CHUNK).total
    finally:
        small.dispose()


def test_a_pool_of_two_connections_still_checks(pg: Any) -> None:
    """A run's claim (one process walks it) takes no connection of the caller's pool: a
    walk and its re-check fit in two, as they did before the claim."""
    populate(pg.engine, pg.settings, N)
    damage(pg.engine, pg.settings, N)
    with pg.engine.begin() as conn:  # a mismatch written just now: the range re-checks it
        conn.execute(
            sa.text(
                "UPDATE unified_transactions SET status = 'CANCELLED', updated_at = now() "
                "WHERE legacy_system = 'CASHOUT' AND legacy_id = 3"
            )
        )
    two = create_engine(pg.url, pool_size=1, max_overflow=1, pool_timeout=5)
    try:
        report = run_check(two, pg.settings, chunk=CHUNK)
        assert report.complete and report.total == run_check(pg.engine, pg.settings).total
    finally:
        two.dispose()


INTERRUPTED = textwrap.dedent(
    """
    import sys, time
    from unistatus.config import DEFAULT_SCHEMA, load_settings
    from unistatus.db.engine import create_engine
    from unistatus.migration.check import run_check

    url = sys.argv[1]
    settings = load_settings(database_url=url, schema=DEFAULT_SCHEMA)
    engine = create_engine(url)

    def on_range(system, pos):
        if pos.ranges == 1 and system.value == "CASHOUT":
            print("walking", flush=True)
        time.sleep(0.2)  # 60 ranges a system: 12 s to the end

    try:
        run_check(engine, settings, chunk=1, on_range=on_range)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    print("finished", flush=True)
    """
)


@pytest.mark.postgres
def test_ctrl_c_stops_every_walk_after_its_range(pg: Any, tmp_path: Path) -> None:
    """Ctrl-C reaches the thread that waits for the walks: it stops them after their
    current range (before, the interrupt waited for every walk to reach its end)."""
    populate(pg.engine, pg.settings, N)
    script = tmp_path / "child.py"
    script.write_text(INTERRUPTED)
    child = subprocess.Popen(
        [sys.executable, str(script), pg.url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "walking"
        started = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        out, _ = child.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130 and "interrupted" in out, out
    assert waited < 5, f"the interrupt waited {waited:.1f} s for the walks to end"


def test_a_run_interrupted_before_the_fix_resumes_with_each_example_once(db: Any) -> None:
    """Positions stored by the code before kept the earlier systems' examples too: a
    resumed run reads each system's own."""
    whole = whole_then_stopped_in_escrow(db)
    R = check_runs
    with db.engine.begin() as conn:
        name = latest_unfinished(conn)
        stored = dict(
            conn.execute(sa.select(R.c.system, R.c.examples).where(R.c.run == name)).all()
        )
        # As the code before stored them: every earlier system's examples in front.
        conn.execute(
            sa.update(R)
            .where(R.c.run == name, R.c.system == "ESCROW")
            .values(examples=stored["CASHOUT"] + stored["ESCROW"])
        )
    resumed = run_check(db.engine, db.settings, resume=True)
    assert resumed.examples == whole.examples
