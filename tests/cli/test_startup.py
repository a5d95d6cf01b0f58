"""The command starts fast: `--help` loads no database, settings, HTTP or adapter code,
and `mode get` loads the database but not the adapter or the HTTP service.

Asserted on the modules Python reports with ``-X importtime`` in a fresh process, never
on time (time is flaky on a shared machine; BENCHMARKS.md has the figures).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from unistatus.launch import collect_after_startup

HEAVY = ("sqlalchemy", "pydantic_settings", "fastapi", "unistatus.adapter")
MAIN = "import sys; from unistatus.cli import main; sys.argv[0] = 'unistatus'; main()"


def imported_modules(*args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Run ``python -X importtime ARGS`` in a fresh process; the modules it imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISTATUS_")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    names.discard("imported package")  # the header line
    return names, done


def loaded(names: set[str], package: str) -> list[str]:
    return sorted(n for n in names if n == package or n.startswith(f"{package}."))


def test_the_probe_sees_imports() -> None:
    names, done = imported_modules("-c", "import sqlalchemy")
    assert done.returncode == 0, done.stderr
    assert loaded(names, "sqlalchemy")


def test_importing_the_cli_loads_nothing_heavy() -> None:
    names, done = imported_modules("-c", "import unistatus.cli")
    assert done.returncode == 0, done.stderr
    assert "unistatus.cli" in names
    for package in HEAVY:
        assert loaded(names, package) == [], f"`import unistatus.cli` imports {package}"


def test_help_loads_nothing_heavy() -> None:
    for argv in (["--help"], ["mode", "--help"], ["tx", "create", "--help"]):
        names, done = imported_modules("-c", MAIN, *argv)
        assert done.returncode == 0, done.stderr
        assert "Usage:" in done.stdout
        for package in HEAVY:
            assert loaded(names, package) == [], f"`unistatus {' '.join(argv)}` imports {package}"


def test_version_loads_nothing_heavy() -> None:
    """--version names the schema revision too, read without SQLAlchemy or Alembic."""
    names, done = imported_modules("-c", MAIN, "--version")
    assert done.returncode == 0, done.stderr
    assert "(schema 0" in done.stdout
    for package in (*HEAVY, "alembic"):
        assert loaded(names, package) == [], f"`unistatus --version` imports {package}"


def test_mode_get_loads_no_adapter_and_no_http(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'startup.db'}"
    _, done = imported_modules("-c", MAIN, "--database-url", url, "init")
    assert done.returncode == 0, done.stderr
    names, done = imported_modules("-c", MAIN, "--database-url", url, "mode", "get")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "LEGACY_ONLY"
    assert loaded(names, "sqlalchemy")  # it does read the database
    for package in ("fastapi", "unistatus.adapter"):
        assert loaded(names, package) == [], f"`unistatus mode get` imports {package}"


def test_check_and_backfill_load_only_what_they_run(tmp_path: Path) -> None:
    """The commands that run long (timed as commands against their raw SQL in
    BENCHMARKS.md, "Issue 14") load no phase machinery, adapter facade, Alembic or HTTP,
    and none of the help's rendering (Typer's rich help and the Markdown parser it brings):
    a second of imports was a fifth of a 500,000-row check."""
    url = f"sqlite:///{tmp_path / 'startup.db'}"
    _, done = imported_modules("-c", MAIN, "--database-url", url, "init")
    assert done.returncode == 0, done.stderr
    unneeded = (
        "unistatus.migration.phases",
        "unistatus.adapter.core",
        "alembic",
        "fastapi",
        "typer.rich_utils",
        "markdown_it",
    )
    for argv in (["check", "--json"], ["check", "--since", "1h"], ["backfill", "--json"]):
        names, done = imported_modules("-c", MAIN, "--database-url", url, *argv)
        assert done.returncode == 0, done.stderr
        for package in unneeded:
            assert loaded(names, package) == [], f"`unistatus {' '.join(argv)}` imports {package}"


def test_the_process_ends_without_walking_its_objects_again() -> None:
    """run_program freezes what is left when the command ends (``gc.freeze``): the
    interpreter's exit then skips them in its collections."""
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count(), file=sys.stderr))\n"
        "from unistatus.cli import main\n"
        "sys.argv[0] = 'unistatus'\n"
        "main()\n"
    )
    for argv in (["--version"], ["check", "--help"], ["no-such-command"]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        frozen = [line for line in done.stderr.splitlines() if line.startswith("frozen ")]
        assert frozen and int(frozen[0].split()[1]) > 10_000, (argv, done.stderr)


def test_the_start_up_runs_without_the_cyclic_collector_and_then_collects() -> None:
    """The programs' entry point (the console script, ``python -m unistatus``) turns the
    collector off for the start-up's imports and on again after a moment: a command
    that runs on (serve, monitor, backfill) collects as always."""
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "unistatus"]
    assert script.value == "unistatus.launch:main"
    assert (
        "unistatus.launch"
        in Path(__file__).parents[2].joinpath("src/unistatus/__main__.py").read_text()
    )
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('collecting', gc.isenabled(), file=sys.stderr))\n"
        "import unistatus.launch as launch\n"
        "launch.STARTUP_SECONDS = 600\n"  # however slow the machine, --version ends first
        "sys.argv[0] = 'unistatus'\n"
        "launch.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "collecting False" in done.stderr  # the start-up ran without it
    frozen = gc.get_freeze_count()
    timer = collect_after_startup(0.2)
    try:
        assert not gc.isenabled() and timer.daemon  # nothing waits for it at exit
    finally:
        timer.join(timeout=10)
    assert gc.isenabled()
    assert gc.get_freeze_count() > frozen  # what the start-up made is not walked again
    gc.unfreeze()
