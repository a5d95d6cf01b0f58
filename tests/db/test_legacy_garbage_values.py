"""A legacy row whose value its column's type does not hold: SQLite keeps ``'abc'`` in a
NUMERIC column (type affinity). One such row crashed `check`, `repair`, `tx show` and
`archive export` with "unexpected InvalidOperation" (exploratory review), which closed
every gate. It is reported, never read as a crash."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app
from unistatus.migration.check import run_check
from unistatus.migration.repair import run_repair
from unistatus.sim.seed import seed_legacy

runner = CliRunner()


def test_a_non_numeric_amount_is_reported_not_a_crash(sqlite_db: Database, tmp_path: Path) -> None:
    db = sqlite_db
    seed_legacy(db.engine, db.settings, 30, systems=["CASHOUT"])
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
                "updated_at) VALUES (1000, 1, 'abc', 'USD', 'PENDING', :t, :t)"
            ),
            {"t": "2026-12-01 10:00:00.000000"},
        )
    url = ["--database-url", db.url]
    assert runner.invoke(app, [*url, "backfill"]).exit_code == 0
    report = run_check(db.engine, db.settings)
    assert report.total >= 31 and report.consistent < report.total
    run_repair(db.engine, db.settings, strategy="legacy_wins", dry_run=True)
    for args in (["check"], ["tx", "show", "cashout:1000"], ["archive", "export", "--out",
                 str(tmp_path / "a")]):  # fmt: skip
        done = runner.invoke(app, [*url, *args])
        assert "unexpected" not in done.output, (args, done.output)
        assert done.exit_code in (0, 1), (args, done.output)


def test_a_text_in_a_date_column_is_archived_as_text(sqlite_db: Database, tmp_path: Path) -> None:
    """'not a date' in a SQLite DATETIME column: the archive export failed with
    "'str' object has no attribute 'isoformat'" (review)."""
    db = sqlite_db
    seed_legacy(db.engine, db.settings, 10, systems=["CASHOUT"])
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cashouts SET created_at = 'not a date' WHERE id = 1"))
    done = runner.invoke(app, ["--database-url", db.url, "archive", "export", "--out",
                               str(tmp_path / "a")])  # fmt: skip
    assert done.exit_code == 0, done.output
