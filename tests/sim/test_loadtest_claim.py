"""Two load tests at once: the second is refused while the first holds the write mode.

A load test sets its mode for the run and puts back the mode it found. Run beside
another, it found the other's temporary mode and "put back" that one (the tester's case:
A in LEGACY_ONLY, B started 3 s later records LEGACY_ONLY as the previous mode, A ends,
B restores LEGACY_ONLY: phase 2 with dual writes off, both exit 0). A load test holds
the mode (a claim: exclusive with --mode or --baseline, shared without, as the check's
runs are claimed) from before it reads the mode to after it put it back; another is
refused at once (exit 2, naming it), and the claim goes with its holder however it
ends: normally, Ctrl-C, an error, or the process killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import unistatus
from conftest import Database
from support.cli_run import cli
from unistatus.db.control import get_mode, set_mode
from unistatus.db.tables import control_log
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import InputError
from unistatus.sim.loadtest import run_load_test

PHASE_2 = DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
REFUSED = "another load test holds the write mode"


def _switches_by_load_tests(db: Database) -> list[str]:
    C = control_log
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(C.c.new_value)
            .where(C.c.actor == "loadtest", C.c.key == "mode.CASHOUT")
            .order_by(C.c.id)
        ).all()
    return [str(r.new_value) for r in rows]


def _env() -> dict[str, str]:
    src = str(Path(unistatus.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": src, "COLUMNS": "300"}


def _started(db: Database, *args: str) -> subprocess.Popen[str]:
    """`unistatus loadtest ARGS` as a process, returned once its first tenth is done."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "unistatus", "--database-url", db.url, "loadtest", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("load: "), first
    return proc


@pytest.mark.postgres
def test_a_second_load_test_is_refused_while_the_first_holds_the_mode(pg: Database) -> None:
    """The tester's case, two processes: A in LEGACY_ONLY; B (DUAL_WRITE_LEGACY_PRIMARY,
    or the current mode) started while A runs is refused at once, exit 2, naming A, and
    changes nothing; A ends and puts phase 2's mode back; then a load test runs again."""
    set_mode(pg.engine, PHASE_2, reason="phase 2")
    a = _started(pg, "-n", "600", "-c", "2", "--mode", "LEGACY_ONLY")
    try:
        for second in (["--mode", PHASE_2.value], []):
            b = cli(pg.url, "loadtest", "-n", "20", "-c", "2", *second)
            said = " ".join(b.output.split())
            assert b.exit_code == 2, (second, b.exit_code, said)
            assert REFUSED in said and "LEGACY_ONLY" in said, said
        assert get_mode(pg.engine) is DualWriteMode.LEGACY_ONLY  # A's, untouched
        out, err = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
    assert a.returncode == 0, (a.returncode, out, err)
    assert get_mode(pg.engine) is PHASE_2  # dual writes back on
    assert _switches_by_load_tests(pg) == ["LEGACY_ONLY", PHASE_2.value]  # A's two only
    again = cli(pg.url, "loadtest", "-n", "6", "-c", "2", "--mode", "LEGACY_ONLY")
    assert again.exit_code == 0, again.output  # A's claim went with A
    assert get_mode(pg.engine) is PHASE_2


def test_the_claim_goes_with_a_run_stopped_or_failed(db: Database) -> None:
    """In one process: a run holding the mode refuses another (InputError); once it has
    ended by Ctrl-C, or by an error, the next run is not refused."""
    set_mode(db.engine, PHASE_2, reason="phase 2")
    holding, tried = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def hold(_label: str, done: int, _total: int) -> None:
        if done == 1:
            holding.set()
            tried.wait(timeout=60)

    def first() -> None:
        try:
            run_load_test(
                db.url, db.settings, transactions=4, concurrent=1, mode="LEGACY_ONLY",
                on_progress=hold,
            )  # fmt: skip
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert holding.wait(timeout=60)
        with pytest.raises(InputError, match=REFUSED):
            run_load_test(db.url, db.settings, transactions=2, concurrent=1, mode=PHASE_2)
        with pytest.raises(InputError, match=REFUSED):
            run_load_test(db.url, db.settings, transactions=2, concurrent=1)
    finally:
        tried.set()
        thread.join(timeout=120)
    assert outcome == [None]
    assert get_mode(db.engine) is PHASE_2
    for stop in (KeyboardInterrupt(), RuntimeError("a walk failed")):

        def stopped(_label: str, done: int, _total: int, stop: BaseException = stop) -> None:
            raise stop

        with pytest.raises(type(stop)):
            run_load_test(
                db.url, db.settings, transactions=2, concurrent=1, mode="LEGACY_ONLY",
                on_progress=stopped,
            )  # fmt: skip
        assert get_mode(db.engine) is PHASE_2
    # Not refused: neither stop left the claim held.
    report = run_load_test(db.url, db.settings, transactions=2, concurrent=1, mode="LEGACY_ONLY")
    assert report.run.mode is DualWriteMode.LEGACY_ONLY
    assert get_mode(db.engine) is PHASE_2


def test_two_load_tests_in_the_current_mode_run_side_by_side(db: Database) -> None:
    """Without --mode (nor --baseline) a load test changes no mode: its claim is shared,
    and two such run at once."""
    set_mode(db.engine, PHASE_2, reason="phase 2")
    holding, tried = threading.Event(), threading.Event()

    def hold(_label: str, done: int, _total: int) -> None:
        if done == 1:
            holding.set()
            tried.wait(timeout=60)

    thread = threading.Thread(
        target=run_load_test,
        args=(db.url, db.settings),
        kwargs={"transactions": 3, "concurrent": 1, "on_progress": hold},
    )
    thread.start()
    try:
        assert holding.wait(timeout=60)
        report = run_load_test(db.url, db.settings, transactions=2, concurrent=1)
    finally:
        tried.set()
        thread.join(timeout=120)
    assert report.run.mode is PHASE_2 and report.run.errors == 0
    assert get_mode(db.engine) is PHASE_2


@pytest.mark.postgres
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_load_test_ended_by_a_signal_blocks_no_later_one(
    pg: Database, stop: signal.Signals
) -> None:
    """SIGTERM (the mode put back) or SIGKILL (nothing runs: the mode stays where the
    run left it): either way the claim is gone with the process, and the next load test
    runs instead of being refused for ever."""
    set_mode(pg.engine, PHASE_2, reason="phase 2")
    a = _started(pg, "-n", "2000", "-c", "2", "--mode", "LEGACY_ONLY")
    try:
        a.send_signal(stop)
        a.communicate(timeout=60)
    finally:
        if a.poll() is None:
            a.kill()
    left = get_mode(pg.engine)
    assert left is (PHASE_2 if stop is signal.SIGTERM else DualWriteMode.LEGACY_ONLY)
    after: Any = None
    for _ in range(50):  # the server ends a killed client's session as it notices
        after = cli(pg.url, "loadtest", "-n", "4", "-c", "2", "--mode", PHASE_2.value)
        if REFUSED not in after.output:
            break
        threading.Event().wait(0.1)
    assert after.exit_code == 0, after.output
    assert get_mode(pg.engine) is left  # the mode it found, put back
