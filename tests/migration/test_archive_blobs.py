"""SQLite keeps a BLOB in any column: ``archive export`` wrote a blob status as the
Python repr ``"b'PENDING'"``, ``archive verify`` passed, and a restore wrote that text.
A value its column's kind does not hold as bytes is now kept typed in the JSON line
(``{"$bytes": "<base64>"}``) and restored as the same blob (an exploratory tester)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app
from unistatus.migration.archive import export_archive, restore_archive

VALUES = "SELECT id, typeof(status), status, typeof(amount), amount, typeof(currency), currency"


def test_a_blob_round_trips_through_the_archive(sqlite_db: Database, tmp_path: Path) -> None:
    db = sqlite_db
    with db.app_engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, "
            "updated_at) VALUES (1025, 1, 10, 'USD', X'50454E44494E47', '2026-01-01', "
            "'2026-01-01'), (1020, 1, X'3130', X'555344', 'PENDING', '2026-01-01', "
            "'2026-01-01'), (1021, 1, '10.5', 'USD', 'b''x''', '2026-01-01', '2026-01-01')"
        )
        before = conn.exec_driver_sql(f"{VALUES} FROM cashouts ORDER BY id").all()
    out = tmp_path / "a"
    export_archive(db.engine, db.settings, out)
    verified = CliRunner().invoke(app, ["--database-url", db.url, "archive", "verify", str(out)])
    assert verified.exit_code == 0, verified.output
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    restore_archive(target, out)
    import sqlalchemy as sa

    engine = sa.create_engine(target)
    try:
        with engine.connect() as conn:
            after = conn.exec_driver_sql(f"{VALUES} FROM cashouts ORDER BY id").all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in after] == [tuple(r) for r in before]
    assert ("blob", b"PENDING") in [(r[1], r[2]) for r in after]
