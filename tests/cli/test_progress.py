"""Long commands say how far they got while they work: `repair` (one entity at a time:
minutes for a long list) and `archive export` (minutes for millions of rows). The
library calls back with what it knows; the command shows it on stderr (a line every
few seconds in a log), never in --json's stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from support.check_data import damage, populate
from unistatus.cli import app, progress_view
from unistatus.migration import archive_blocks
from unistatus.migration.archive import export_archive
from unistatus.migration.repair import run_repair
from unistatus.migration.repair_report import RepairReport
from unistatus.sim.seed import seed_legacy

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


def test_archive_export_tells_the_rows_written_so_far(
    db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_legacy(db.engine, db.settings, 75)  # across the three tables
    monkeypatch.setattr(archive_blocks, "WRITE_BLOCK_LINES", 10)
    seen: list[int] = []
    manifest = export_archive(db.engine, db.settings, tmp_path / "a", on_rows=seen.append)
    rows = sum(t.rows for t in manifest.tables)
    assert rows == 75 and seen[-1] == rows
    assert seen == sorted(seen) and len(seen) > len(manifest.tables)  # within tables too
    monkeypatch.setattr(progress_view, "LINE_EVERY_SECONDS", 0.0)
    base = ["--database-url", db.url, "archive", "export", "--out"]
    run = CliRunner().invoke(app, [*base, str(tmp_path / "b")])
    assert run.exit_code == 0, run.output
    said = [line for line in run.stderr.splitlines() if line.startswith("archive export: ")]
    assert said and said[-1].startswith("archive export: 75 rows, "), run.stderr
    quiet = CliRunner().invoke(app, [*base, str(tmp_path / "c"), "--json"])
    assert json.loads(quiet.stdout)["tables"] and "archive export: " not in quiet.stderr
