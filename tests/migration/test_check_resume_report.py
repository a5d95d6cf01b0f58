"""A check interrupted once every range is counted but before its report is stored.

On PostgreSQL the systems are walked at once; Ctrl-C stops them "after their current
range". A system of up to one range (250,000 rows by default) is then done anyway: every
position is stored as done, but the report (and the run's end) never is. ``--resume``
of such a run stores its report from the counts kept, as the check would have; and the
interruption says so instead of promising ranges still to walk.

The Ctrl-C is real on PostgreSQL: the CLI runs as a child process, its walks held (all
of them counted, done) until the SIGINT has reached the main thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import unistatus
from support.check_data import damage, populate
from support.cli_run import cli
from unistatus.db.tables_check import check_reports, check_runs
from unistatus.migration.check import run_check

N = 60

# `unistatus check` (defaults: one range a system), its walks held once every system
# has counted its last range until the SIGINT has been handled by the main thread.
CHILD = textwrap.dedent(
    """
    import signal, sys, threading
    import unistatus.migration.check as check
    from unistatus.cli import app

    interrupted = threading.Event()

    def on_sigint(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    walk = check.walk_systems

    def walk_systems(scans, run, tables, deadline, on_range, at_once):
        assert at_once, "the systems are walked at once on PostgreSQL"
        every = threading.Barrier(len(scans))

        def counted(system, pos):
            on_range(system, pos)
            if pos.done:
                if every.wait(timeout=30) == 0:
                    print("counted", file=sys.stderr, flush=True)
                interrupted.wait(timeout=30)  # Ctrl-C while the walks end their range

        return walk(scans, run, tables, deadline, counted, at_once)

    check.walk_systems = walk_systems
    app(["--database-url", sys.argv[1], "check"])
    """
)


def _runs(db: Any) -> list[Any]:
    R = check_runs
    with db.engine.connect() as conn:
        return conn.execute(sa.select(R.c.run, R.c.done, R.c.finished_at)).all()


def _reports(db: Any) -> list[Any]:
    C = check_reports
    with db.engine.connect() as conn:
        return conn.execute(sa.select(C.c.id, C.c.run, C.c.complete, C.c.total)).all()


def _assert_resume_stores_the_report(db: Any, whole: Any) -> None:
    """The run left every range counted and no report: --resume stores it, printed as
    a check's is, and the run is finished (a second --resume has nothing to take)."""
    runs = _runs(db)
    assert runs and all(r.done and r.finished_at is None for r in runs), runs
    assert _reports(db) == []
    name = runs[0].run
    resumed = cli(db.url, "check", "--resume", "--json")
    assert resumed.exit_code == 1, resumed.output  # the damage: inconsistent, a full check
    data = json.loads(resumed.stdout)
    assert data["run"] == name and data["complete"] is True
    assert data["total"] == whole.total and data["consistent"] == whole.consistent
    assert data["inconsistencies"] == whole.inconsistencies
    assert data["examples"] == whole.examples
    stored = _reports(db)
    assert [(r.id, r.run, r.complete, r.total) for r in stored] == [
        (data["id"], name, True, whole.total)
    ]
    assert all(r.finished_at is not None for r in _runs(db))
    again = cli(db.url, "check", "--resume")
    assert again.exit_code == 2 and "no interrupted check run" in again.output, again.output


def test_a_run_stopped_after_its_last_range_is_finished_by_resume(db: Any) -> None:
    """Stopped (Ctrl-C) once the last system's last range was committed: --resume
    stores the report from the counts kept instead of refusing (nothing to resume)."""
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    whole = run_check(db.engine, db.settings, store=False)
    done: set[str] = set()

    def ctrl_c_once_all_counted(system: Any, pos: Any) -> None:
        if pos.done:
            done.add(system.value)
        if len(done) == len(whole.per_system):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_check(db.engine, db.settings, on_range=ctrl_c_once_all_counted)
    _assert_resume_stores_the_report(db, whole)


@pytest.mark.postgres
def test_ctrl_c_of_a_check_whose_walks_end_their_last_range_then_resume(
    pg: Any, tmp_path: Path
) -> None:
    """The tester's case: Ctrl-C of `unistatus check` while the systems, walked at once,
    end their one range. The interruption says every range was counted and that
    --resume stores the report; --resume then does."""
    populate(pg.engine, pg.settings, N)
    damage(pg.engine, pg.settings, N)
    whole = run_check(pg.engine, pg.settings, store=False)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    src = str(Path(unistatus.__file__).parents[1])
    with subprocess.Popen(
        [sys.executable, str(script), pg.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([src, *sys.path]), "COLUMNS": "300"},
    ) as child:
        assert child.stderr is not None
        seen = []
        for line in child.stderr:
            seen.append(line)
            if line.strip() == "counted":
                break
        else:
            pytest.fail(f"the child never counted every range: {''.join(seen)}")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    assert child.returncode == 130, (child.returncode, out, err)
    said = " ".join(err.split())
    assert "interrupted:" in said, said
    assert "every key range was counted" in said, said
    assert "`unistatus check --resume` stores its report" in said, said
    assert "goes on from there" not in said, said
    _assert_resume_stores_the_report(pg, whole)
