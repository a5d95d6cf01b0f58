"""`archive restore --replace` deletes the target's rows of each archived table, and
only those: a foreign key ON DELETE CASCADE from another table emptied that table, and
a table inheriting from a legacy table lost its rows into the parent's (a probe).
Refused with either (nothing restored, nothing deleted)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from test_archive import seed

from conftest import Database
from unistatus.db.engine import create_engine
from unistatus.errors import InputError
from unistatus.migration.archive import export_archive, restore_archive


def _restored_once(db: Database, url: str, tmp_path: Path) -> Path:
    """``db`` seeded and archived, the archive restored into ``url`` (its tables made)."""
    seed(db)
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    restore_archive(url, out)
    return out


@pytest.mark.postgres
def test_a_replace_deletes_no_row_of_a_table_outside_the_archive(
    pg: Database, empty_pg: str, tmp_path: Path
) -> None:
    out = _restored_once(pg, empty_pg, tmp_path)
    target = create_engine(empty_pg)
    try:
        with target.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE cashout_notes (id serial PRIMARY KEY, cashout_id bigint "
                "REFERENCES cashouts (id) ON DELETE CASCADE, note text)"
            )
            conn.exec_driver_sql(
                "INSERT INTO cashout_notes (cashout_id, note) SELECT id, 'n' FROM cashouts"
            )
            conn.exec_driver_sql("CREATE TABLE cashouts_old () INHERITS (cashouts)")
            # Columns named: a retirement's undo, by an earlier test on the shared
            # database, puts the status column last (its archive keeps that order).
            conn.exec_driver_sql(
                "INSERT INTO cashouts_old (id, user_id, amount, currency, status, created_at, "
                "updated_at) SELECT 9000 + id, user_id, amount, currency, status, created_at, "
                "updated_at FROM cashouts"
            )
        notes = _count(target, "cashout_notes")
        assert notes > 0
        with pytest.raises(InputError, match="cashout_notes.*ON DELETE CASCADE"):
            restore_archive(empty_pg, out, replace=True)
        assert _count(target, "cashout_notes") == notes
        with target.begin() as conn:
            conn.exec_driver_sql("DROP TABLE cashout_notes")
        old = _count(target, "ONLY cashouts_old")
        with pytest.raises(InputError, match=r"cashouts_old \(inheriting from cashouts\)"):
            restore_archive(empty_pg, out, replace=True)
        assert _count(target, "ONLY cashouts_old") == old > 0
        with target.begin() as conn:
            conn.exec_driver_sql("DROP TABLE cashouts_old")
        report = restore_archive(empty_pg, out, replace=True)
        assert report.verify.ok, report.verify.problems
    finally:
        target.dispose()


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def test_a_replace_into_sqlite_deletes_no_row_through_a_cascade(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """unistatus's SQLite connections turn foreign keys on: the cascade emptied the
    notes there too (a review)."""
    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    out = _restored_once(sqlite_db, url, tmp_path)
    target = create_engine(url)
    try:
        with target.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, cashout_id INTEGER "
                "REFERENCES cashouts (id) ON DELETE CASCADE)"
            )
            conn.exec_driver_sql("INSERT INTO notes (cashout_id) SELECT id FROM cashouts")
        notes = _count(target, "notes")
        with pytest.raises(InputError, match=r"notes \(ON DELETE CASCADE on cashouts\)"):
            restore_archive(url, out, replace=True)
        assert _count(target, "notes") == notes > 0
    finally:
        target.dispose()


@pytest.mark.postgres
def test_a_reference_between_restored_tables_is_no_refusal_in_a_named_schema(
    pg: Database, empty_pg: str, tmp_path: Path
) -> None:
    """Both tables restored, one referring to the other: refused when the config named
    the schema ("public.escrows" against the catalog's "escrows": a review)."""
    out = _restored_once(pg, empty_pg, tmp_path)
    target = create_engine(empty_pg)
    try:
        with target.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE escrows ADD COLUMN cashout_id bigint REFERENCES cashouts (id) "
                "ON DELETE CASCADE"
            )
    finally:
        target.dispose()
    import json

    raw = json.loads((out / "manifest.json").read_text())
    for table in raw["tables"]:
        table["schema"] = "public"  # as an export with legacy_tables.*.schema names them
    (out / "manifest.json").write_text(json.dumps(raw))
    report = restore_archive(empty_pg, out, replace=True)
    assert report.verify.ok, report.verify.problems


def test_a_cascade_between_two_restored_tables_loses_no_row(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Each table was emptied and loaded in turn: emptying escrows then cascaded into
    the cashouts just loaded (a second review). Every table is emptied first."""
    import shutil

    with sqlite_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE cashouts ADD COLUMN escrow_ref INTEGER "
            "REFERENCES escrows (id) ON DELETE CASCADE"
        )
    seed(sqlite_db)
    with sqlite_db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE cashouts SET escrow_ref = (SELECT min(id) FROM escrows)")
    out = tmp_path / "archive"
    export_archive(sqlite_db.engine, sqlite_db.settings, out)
    copy = tmp_path / "copy.db"
    with sqlite_db.engine.connect() as conn:  # the WAL's pages into the file copied
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(sa.engine.make_url(sqlite_db.url).database or "", copy)
    report = restore_archive(f"sqlite:///{copy}", out, replace=True, overwrite_live=True)
    assert report.verify.ok, report.verify.problems
    assert (
        _count(create_engine(f"sqlite:///{copy}"), "cashouts")
        == _count(sqlite_db.engine, "cashouts")
        > 0
    )


def test_a_mismatch_file_of_another_user_is_written_as_before(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its mode not ours to change (PermissionError): the file was cut, then refused (a
    second review). Written, its mode left."""
    import os

    from unistatus.migration.check import run_check

    def not_permitted(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", not_permitted)
    out = tmp_path / "mismatches.jsonl"
    out.write_text("")
    run_check(db.engine, db.settings, out=out, store=False)
    assert out.exists()
