"""The command line a person expects: --version, examples in every --help, flags without
a value placeholder, the documented exit codes, one story of the migration's order, and
errors that name the real problem.

The help checks walk the command tree Typer builds from the app, so a command added
later (by any module's ``register``) is held to the same rules without being listed here.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer.main
from typer.testing import CliRunner, Result

from conftest import Database
from unistatus.cli import app
from unistatus.version import VERSION

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "200"}  # rich wraps help at the terminal's width: one example per line


def command_paths() -> Iterator[list[str]]:
    """Every visible command and group of the app, as the words that name it."""

    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not getattr(sub, "hidden", False):
                yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


def help_of(path: list[str]) -> str:
    result = runner.invoke(app, [*path, "--help"], env=WIDE, catch_exceptions=False)
    assert result.exit_code == 0, (path, result.output)
    return result.stdout


def test_the_walk_sees_every_registered_command() -> None:
    paths = [" ".join(p) for p in command_paths()]
    # Spot checks that the walk reaches top-level commands, groups and subcommands.
    for expected in ("", "init", "tx", "tx update", "backfill undo", "retire legacy-columns"):
        assert expected in paths
    assert len(paths) > 30


def test_version() -> None:
    result = runner.invoke(app, ["--version"], catch_exceptions=False)
    assert result.exit_code == 0
    # The schema revision it installs: which release made a database is then plain.
    from unistatus.db.schema import INSTALL_REVISION

    assert result.stdout.strip() == f"unistatus {VERSION} (schema {INSTALL_REVISION})"
    assert "--version" in help_of([])


def test_every_help_has_an_examples_section_with_its_own_command() -> None:
    missing = []
    for path in command_paths():
        text = help_of(path)
        _, heading, after = text.partition("Examples:")
        prefix = " ".join(["unistatus", *path])
        lines = [line.strip() for line in after.splitlines()]
        if not heading or not any(line.startswith(prefix) for line in lines):
            missing.append(prefix)
    assert missing == [], f"no Examples section with `<command> ...` lines: {missing}"


def test_boolean_flags_show_no_value_placeholder() -> None:
    offenders = []
    for path in command_paths():
        for line in help_of(path).splitlines():
            if "<bool>" in line:
                offenders.append(f"{' '.join(path)}: {line.strip()}")
    assert offenders == []
    # Options that do take a value keep their placeholder.
    lines = [line for line in help_of(["tx", "update"]).splitlines() if line.startswith("│")]

    def line_of(option: str) -> str:
        return next(line for line in lines if option in line.split())

    assert "<str>" in line_of("--reason")
    assert "<" not in line_of("--force") and "<" not in line_of("--json")


def test_the_typical_order_is_the_runbooks_gated_story() -> None:
    text = " ".join(help_of([]).split())
    found = re.search(r"Typical order[^:]*:(.*?)\.\s", text)
    assert found, text
    order = found.group(1)
    assert "mode set" not in order
    steps = [re.sub(r"\(.*?\)", "", s).strip() for s in order.split("->")]
    assert steps.count("phase advance") == 4, steps
    # The same steps, in the same order, as the runbook's commands.
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    position = 0
    for step in steps:
        found = runbook.find(f"unistatus {step}", position)
        assert found >= 0, f"`unistatus {step}` not in docs/runbook.md after offset {position}"
        position = found + 1


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_serve_on_a_busy_port_exits_2_with_one_line(
    sqlite_db: Database, busy_port: int, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from unistatus.cli import main; main()",
         "--database-url", sqlite_db.url, "serve", "--port", str(busy_port),
         "--monitor-interval", "0"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert f"127.0.0.1:{busy_port}" in errors[0] and "in use" in errors[0]
    assert "Traceback" not in done.stderr and "Application startup" not in done.stderr


def test_serve_stopped_by_ctrl_c_exits_0(sqlite_db: Database, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen(
        [sys.executable, "-c", "from unistatus.cli import main; main()",
         "--database-url", sqlite_db.url, "serve", "--port", str(port),
         "--monitor-interval", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.1)
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, err


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    return err


def test_tx_update_on_an_unmappable_stored_status_blames_the_stored_value(db: Database) -> None:
    def run(*args: str) -> Result:
        return runner.invoke(app, ["--database-url", db.url, *args], env=WIDE)

    assert run("mode", "set", "DUAL_WRITE_LEGACY_PRIMARY", "--reason", "test").exit_code == 0
    created = run(
        "tx", "create", "--type", "cashout", "--user", "1", "--amount", "5", "--currency", "USD"
    )
    assert created.exit_code == 0, created.output
    with db.engine.begin() as conn:
        legacy_id = conn.execute(sa.text("SELECT max(id) FROM cashouts")).scalar_one()
        conn.execute(
            sa.text("UPDATE cashouts SET status = 'WEIRD' WHERE id = :i"), {"i": legacy_id}
        )
    history_before = db.count("unified_status_history")

    err = _one_line_error(
        run("tx", "update", f"cashout:{legacy_id}", "OTP_PENDING", "--reason", "r")
    )
    assert f"cashout:{legacy_id}" in err and "stored" in err and "'WEIRD'" in err
    assert "OTP_PENDING" in err  # the argument is named as fine, not as the problem
    assert "--force" in err and "quarantine" in err
    assert "values are exact and upper case" not in err  # that reads as the argument's fault
    assert db.count("unified_status_history") == history_before

    # The way out it names works: --force overrides the unmappable value, audited.
    forced = run("tx", "update", f"cashout:{legacy_id}", "FAILED", "--reason", "INC-7", "--force")
    assert forced.exit_code == 0, forced.output
    assert db.count("unified_status_history") == history_before + 1


def test_help_prose_is_wrapped_at_the_terminals_width_not_at_the_docstrings() -> None:
    """At 80 columns a docstring's own line breaks cut the prose into fragments ("mean
    and p95 latency" / "< 200 ms": `loadtest --help`, exploratory review). A short line
    of prose is followed by a blank line (its paragraph ends), never by more prose;
    examples and lists (indented, or starting with "-") keep their lines."""
    fragments = []
    for path in command_paths():
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        body = result.stdout.split("╭")[0].split("Examples:")[0].splitlines()
        for line, following in zip(body, body[1:], strict=False):
            text = line.rstrip()
            prose = text.startswith(" ") and not text.startswith("   ") and not text[1:2] == "-"
            if prose and 0 < len(text.strip()) < 40 and following.strip():
                fragments.append(f"{' '.join(path)}: {text.strip()!r}")
    assert fragments == []


def test_a_repeatable_option_shows_its_values_type_not_a_python_list() -> None:
    """`--system <list[str]>` in every --help that takes a system: Python's annotation,
    not what to type (one value per occurrence)."""
    offenders = [
        f"{' '.join(path)}: {line.strip()}"
        for path in command_paths()
        for line in help_of(path).splitlines()
        if "list[" in line
    ]
    assert offenders == []
    assert any("--system" in line and "<str>" in line for line in help_of(["check"]).splitlines())
