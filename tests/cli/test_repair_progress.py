"""`repair` says how far it got while it works (one entity at a time: minutes for a
long list): the library calls back per entity with what it knows of the whole, the
command shows it on stderr (a line every few seconds in a log), never in --json's
stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from support.check_data import damage, populate
from unistatus.cli import app, progress_view
from unistatus.migration.repair import RepairReport, run_repair

N = 60


def _mismatches(db: Any, tmp_path: Path) -> Path:
    populate(db.engine, db.settings, N)
    damage(db.engine, db.settings, N)
    out = tmp_path / "mismatches.jsonl"
    result = CliRunner().invoke(app, ["--database-url", db.url, "check", "--out", str(out)])
    assert result.exit_code == 1, result.output
    return out


def test_the_library_calls_back_per_entity_with_the_files_total(db: Any, tmp_path: Path) -> None:
    listed = _mismatches(db, tmp_path)
    lines = sum(1 for line in listed.read_text().splitlines() if line.strip())
    seen: list[tuple[int, int | None]] = []

    def on_progress(report: RepairReport, total: int | None) -> None:
        seen.append((report.examined, total))

    report = run_repair(
        db.engine,
        db.settings,
        strategy="legacy_wins",
        dry_run=True,
        from_file=listed,
        on_progress=on_progress,
    )
    assert seen == [(n, lines) for n in range(1, report.examined + 1)]
    assert report.examined == lines
    # A repair of what a detection finds knows no total ahead.
    seen.clear()
    run_repair(
        db.engine, db.settings, strategy="legacy_wins", dry_run=True, on_progress=on_progress
    )
    assert seen and {total for _, total in seen} == {None}


def test_the_command_says_how_far_it_got_on_stderr_and_never_in_json(
    db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = _mismatches(db, tmp_path)
    monkeypatch.setattr(progress_view, "LINE_EVERY_SECONDS", 0.0)
    base = ["--database-url", db.url, "repair", "--from", str(listed), "--strategy"]
    run = CliRunner().invoke(app, [*base, "legacy_wins", "--dry-run"])
    said = [line for line in run.stderr.splitlines() if line.startswith("repair: ")]
    assert said and said[-1].startswith(f"repair: {len(said)} of "), run.stderr
    assert " examined, " in said[-1]
    quiet = CliRunner().invoke(app, [*base, "legacy_wins", "--dry-run", "--json"])
    assert json.loads(quiet.stdout)["dry_run"] is True
    assert "repair: " not in quiet.stderr
