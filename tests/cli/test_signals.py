"""How `unistatus` ends when it is told to stop or its reader leaves, run as a process:
SIGTERM (systemd, Kubernetes) as Ctrl-C, an interrupted command saying what it kept,
and `unistatus ... | head` not taken for a failed check."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.cli_run import as_json, cli, runner
from support.slow_statement import SRC, start, the_interruption_line, wait_for
from unistatus.backfill import progress, run_backfill
from unistatus.cli import app
from unistatus.db.tables import unified_transactions as U
from unistatus.sim.seed import seed_legacy


def _done(db: Any) -> int:
    return sum(int(p["done"]) for p in progress(db.engine, db.settings).values())


@pytest.mark.postgres
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_stops_a_backfill_as_ctrl_c_does(pg: Any, signum: int) -> None:
    """SIGTERM (systemd, Kubernetes) ended `backfill` at once with nothing said and its
    worker rows left "running" (then "stalled"), so that `backfill undo` was refused as
    "a backfill is running": it is Ctrl-C's end, its line, its exit code (130). The same
    for SIGHUP (the terminal of a backfill started by hand closed: a dropped SSH
    session), which ended it with 129 and its workers "running" (a probe)."""
    seed_legacy(pg.engine, pg.settings, 5_000, seed=5)
    proc = start(pg.url, "backfill", "--batch-size", "200", "--max-rows-per-second", "1000")
    try:
        wait_for(proc, lambda: _done(pg) >= 400, "copied 400 rows")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    assert "interrupted:" in err and "unistatus backfill" in err, err
    status = as_json(cli(pg.url, "backfill", "status", "--json"))
    states = {p["state"] for p in status["systems"].values() if not p["complete"]}
    assert states == {"interrupted"}, status
    undone = cli(pg.url, "backfill", "undo", "--reason", "start again", "--json")
    assert undone.exit_code == 0, undone.output


def test_sigterm_stops_monitor_as_ctrl_c_does(sqlite_db: Any) -> None:
    """A live view stopped by SIGTERM ends as Ctrl-C ends it: "monitor stopped", exit 0."""
    proc = start(sqlite_db.url, "monitor", "--interval", "60")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first evaluation: now in its sleep
        assert "rules" in first, first
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, (proc.returncode, out, err)
    assert "monitor stopped" in out, out


def test_sigterm_stops_serve_at_once_and_as_ctrl_c_does(sqlite_db: Any, tmp_path: Path) -> None:
    """`serve` took ~10 s to die of SIGTERM (exit -15): it shuts down as on Ctrl-C, exit 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    proc = start(sqlite_db.url, "serve", "--port", str(port), "--monitor-interval", "0")

    def health() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return True
        except OSError:
            return False

    try:
        wait_for(proc, health, "served /health")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        proc.kill()
    assert proc.returncode == 0, (proc.returncode, err)
    assert waited < 5, f"SIGTERM took {waited:.1f} s"
    assert "Traceback" not in err, err


def test_a_reader_that_left_is_no_failure(db: Any) -> None:
    """`unistatus check | head -3` on a consistent database exited 1, "a check found a
    problem" (Rich's own broken-pipe exit): a reader that left ends the command with 141
    (128 + SIGPIPE, as a shell reports any program its reader left), without a word,
    whatever the command and its output (Rich's or --json's). Not 0: the command did not
    say its verdict, and an inconsistent check cut short would read as a good one."""
    seed_legacy(db.engine, db.settings, 30, seed=2)
    run_backfill(db.engine, db.settings)
    with db.engine.connect() as conn:
        some_id = conn.execute(sa.select(U.c.id).limit(1)).scalar_one()
    commands = [
        ["mapping"],
        ["phase", "status", "--system", "cashout"],
        ["check"],
        ["check", "--json"],
        ["tx", "show", str(some_id)],
        # Typer's help and the live view print through consoles of their own.
        ["--help"],
        ["check", "--help"],
        ["dashboard", "--once"],
    ]
    for command in commands:
        read, write = os.pipe()
        os.close(read)  # the reader has left before the first line
        try:
            proc = start(db.url, *command, stdout=write)
        finally:
            os.close(write)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 141, (command, proc.returncode, err)
        assert "Traceback" not in err and "Exception ignored" not in err, (command, err)


@pytest.mark.postgres
def test_ctrl_c_of_a_repair_says_how_many_it_repaired(pg: Any) -> None:
    """Ctrl-C of `repair` ended it with exit 130 and not a word, even with --json, while
    1,154 entities had been repaired: one line says how many were and that a new run
    goes on; --json prints the report so far, marked interrupted."""
    seed_legacy(pg.engine, pg.settings, 3_000, seed=4)
    run_backfill(pg.engine, pg.settings)
    with pg.engine.begin() as conn:
        conn.execute(sa.delete(U).where(U.c.legacy_id % 2 == 0))  # missing_unified
    before = pg.count("unified_transactions")
    proc = start(pg.url, "repair", "--strategy", "legacy_wins", "--reason", "t", "--json")
    try:
        wait_for(proc, lambda: pg.count("unified_transactions") >= before + 50, "repaired 50")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    repaired = pg.count("unified_transactions") - before
    line = the_interruption_line(proc, out, err)
    assert "unistatus repair" in line, line
    report = json.loads(out)
    assert report["interrupted"] is True
    # The entity in hand may be counted and then rolled back by the interruption.
    assert repaired <= report["repaired"] <= repaired + 1, (report["repaired"], repaired)
    assert f"{report['repaired']:,} repaired" in line, line


def test_ctrl_c_of_the_other_long_commands_says_what_is_kept(
    sqlite_db: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`archive export`, `phase advance`, `init`, `tx create` and `backfill undo` ended
    on Ctrl-C with exit 130 and nothing said: one line each, what is kept, how to go on."""
    from unistatus import backfill  # noqa: PLC0415
    from unistatus.cli import tx_cmd  # noqa: PLC0415
    from unistatus.db import schema  # noqa: PLC0415
    from unistatus.migration import archive, phases  # noqa: PLC0415

    def interrupted(*_args: object, **_kwargs: object) -> Any:
        raise KeyboardInterrupt

    class Adapter:
        create_transaction = staticmethod(interrupted)

    monkeypatch.setattr(archive, "export_archive", interrupted)
    monkeypatch.setattr(phases, "advance", interrupted)
    monkeypatch.setattr(schema, "upgrade", interrupted)
    monkeypatch.setattr(backfill, "undo", interrupted)
    monkeypatch.setattr(tx_cmd, "_adapter", lambda _ctx: Adapter())
    commands = [
        ["archive", "export", "--out", str(tmp_path / "archive")],
        ["phase", "advance", "--reason", "t"],
        ["init"],
        ["tx", "create", "--type", "cashout", "--user", "1", "--amount", "5", "--currency", "USD"],
        ["backfill", "undo", "--reason", "t"],
    ]
    for command in commands:
        result = runner.invoke(app, ["--database-url", sqlite_db.url, *command])
        assert result.exit_code == 130, (command, result.output)
        lines = [line for line in result.stderr.splitlines() if line.startswith("interrupted:")]
        assert len(lines) == 1, (command, result.stderr)
        assert "again" in lines[0], (command, lines[0])


def test_an_interrupted_command_under_json_says_so_on_stdout(
    sqlite_db: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SIGTERM (as Ctrl-C) of `backfill --json` or `archive export --json` ended with exit
    130 and an empty stdout: a script parsing it read nothing. Now one JSON object, marked
    interrupted (as `repair --json` does), saying what is kept."""
    from unistatus import backfill  # noqa: PLC0415
    from unistatus.migration import archive  # noqa: PLC0415

    def interrupted(*_args: object, **_kwargs: object) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(archive, "export_archive", interrupted)
    monkeypatch.setattr(backfill, "run_backfill", interrupted)
    for command in (["archive", "export", "--out", str(tmp_path / "a")], ["backfill"]):
        result = runner.invoke(app, ["--database-url", sqlite_db.url, *command, "--json"])
        assert result.exit_code == 130, (command, result.output)
        said = json.loads(result.stdout)
        assert said["interrupted"] is True and said["exit_code"] == 130, said
        assert "again" in said["detail"], said
        assert [x for x in result.stderr.splitlines() if x.startswith("interrupted:")]
        # Without --json, stdout stays empty.
        result = runner.invoke(app, ["--database-url", sqlite_db.url, *command])
        assert result.exit_code == 130 and result.stdout == "", result.stdout


def test_an_interrupted_load_test_under_json_says_the_mode_on_stdout(
    sqlite_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or SIGTERM) of `loadtest --mode ... --json` after 2 s ended with exit 130,
    its line on stderr and an empty stdout (a probe): the one command given --json whose
    interruption a script parsing stdout could not read. Now the JSON object every other
    command prints, its detail the line's: the mode the database is back in."""
    from unistatus.db.control import get_mode  # noqa: PLC0415
    from unistatus.domain.statuses import DualWriteMode  # noqa: PLC0415
    from unistatus.sim import loadtest  # noqa: PLC0415

    walk, walks = loadtest._walk, []

    def interrupted_third(*args: Any) -> Any:
        walks.append(args)
        if len(walks) == 3:  # mid-run: walks done, the mode switched
            raise KeyboardInterrupt
        return walk(*args)

    monkeypatch.setattr(loadtest, "_walk", interrupted_third)
    before = get_mode(sqlite_db.engine)
    run = ["loadtest", "-n", "50", "-c", "1", "--mode", "DUAL_WRITE_LEGACY_PRIMARY", "--json"]
    result = runner.invoke(app, ["--database-url", sqlite_db.url, *run])
    assert result.exit_code == 130, (result.exit_code, result.output)
    detail = f"the load test stopped early; the write mode is back to {before.value}"
    lines = [line for line in result.stderr.splitlines() if line.startswith("interrupted:")]
    assert lines == [f"interrupted: {detail}"], result.stderr
    said = json.loads(result.stdout)
    assert said == {"interrupted": True, "detail": detail, "exit_code": 130}, said
    assert get_mode(sqlite_db.engine) is before is not DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY


# Run in the child: Ctrl-C while the program imports its commands (half a second of
# every start on a loaded machine), then the program as `unistatus` runs it.
_INTERRUPTED_WHILE_IMPORTING = """
import sys
class Interrupting:
    def find_spec(self, name, path=None, target=None):
        if name == "unistatus.cli":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupting())
from unistatus.launch import main
main()
"""


@pytest.mark.parametrize("json_asked", [False, True])
def test_ctrl_c_while_the_program_starts_is_said_without_a_traceback(
    sqlite_db: Any, json_asked: bool
) -> None:
    """Ctrl-C during the imports at start printed Python's traceback and ended the
    process by the signal (-2): now one line, exit 130, under --json one object."""
    args = ["check", *(["--json"] if json_asked else [])]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _INTERRUPTED_WHILE_IMPORTING,
            "--database-url",
            sqlite_db.url,
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=60,
    )
    assert done.returncode == 130, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted:"), done.stderr
    if json_asked:
        said = json.loads(done.stdout)
        assert said["interrupted"] is True and said["exit_code"] == 130, said
    else:
        assert done.stdout == "", done.stdout


# Run in the child: the signal (argv[2]) raised in the process as the program reaches a
# point of its start-up (argv[1], ``module:name`` or ``module:Class.name``, called), then
# the program as `unistatus` runs it; "import": as it imports its commands. Raised by
# the process itself (``signal.raise_signal``: its handler runs before the call returns),
# not by a sleep hoping to hit the moment.
_SIGNALLED_WHILE_STARTING = """
import importlib, signal, sys
where, signum = sys.argv.pop(1), int(sys.argv.pop(1))
if where == "import":
    class Signalling:
        def find_spec(self, name, path=None, target=None):
            if name == "unistatus.cli":
                signal.raise_signal(signum)
    sys.meta_path.insert(0, Signalling())
else:
    module, _, path = where.partition(":")
    *outer, name = path.split(".")
    owner = importlib.import_module(module)
    for attr in outer:
        owner = getattr(owner, attr)
    reached = getattr(owner, name)
    def signalled(*args, **kwargs):
        signal.raise_signal(signum)
        return reached(*args, **kwargs)
    setattr(owner, name, signalled)
from unistatus.launch import main
main()
"""

# Where the start-up is stopped: after the imports, before the command's own handling of
# an interruption is in place (the imports: the test above).
_WHILE_STARTING = {
    "importing": "import",
    "starting-the-cli": "unistatus.cli:run_program",
    "building-the-command-tree": "typer.main:get_command",
    "parsing-the-command-line": "unistatus.cli.errors_shown:ErrorsShownGroup.make_parser",
    "about-to-invoke": "unistatus.cli.errors_shown:ErrorsShownGroup.invoke",
}


@pytest.mark.parametrize(
    ("when", "signum", "json_asked"),
    [
        ("importing", signal.SIGTERM, False),
        ("importing", signal.SIGTERM, True),
        ("starting-the-cli", signal.SIGINT, False),
        ("building-the-command-tree", signal.SIGINT, False),
        ("building-the-command-tree", signal.SIGINT, True),
        ("building-the-command-tree", signal.SIGTERM, True),
        ("parsing-the-command-line", signal.SIGINT, False),
        ("parsing-the-command-line", signal.SIGINT, True),
        ("parsing-the-command-line", signal.SIGTERM, True),
        ("about-to-invoke", signal.SIGINT, True),
    ],
    ids=lambda value: getattr(value, "name", None) or {True: "json", False: "text"}.get(value),
)
def test_an_interruption_anywhere_in_the_start_up_is_said_as_one(
    sqlite_db: Any, when: str, signum: signal.Signals, json_asked: bool
) -> None:
    """Ctrl-C in the first ~0.4 s of a command, once the imports were done (a probe:
    `unistatus check --json` sent SIGINT after 0.2-0.4 s), printed a 41-line traceback
    through Typer's building of the command tree, or ended with exit 130 and not a word
    (Typer's own end of an interrupted parse), no JSON under --json; SIGTERM before the
    program had installed its handler ended it with Python's 143 and not a word. From
    the start until the command's own handling takes over, every interruption (Ctrl-C,
    SIGTERM) is said as one during the imports is: one line, exit 130, under --json one
    JSON object."""
    from unistatus.launch import INTERRUPTED_WHILE_STARTING  # noqa: PLC0415

    args = ["--database-url", sqlite_db.url, "check", *(["--json"] if json_asked else [])]
    done = subprocess.run(
        [sys.executable, "-c", _SIGNALLED_WHILE_STARTING, _WHILE_STARTING[when], str(signum)]
        + args,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=60,
    )
    assert done.returncode == 130, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.splitlines() == [f"interrupted: {INTERRUPTED_WHILE_STARTING}"], done.stderr
    if json_asked:
        said = json.loads(done.stdout)
        assert said == {
            "interrupted": True,
            "detail": INTERRUPTED_WHILE_STARTING,
            "exit_code": 130,
        }, said
    else:
        assert done.stdout == "", done.stdout
