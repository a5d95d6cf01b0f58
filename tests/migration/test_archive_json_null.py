"""A JSON column's SQL NULL and its JSON ``null`` are two values: the archive wrote both
as ``null`` and restored both as JSON ``null``, so a row whose JSON column was NULL came
back ``IS NOT NULL`` (an application's ``WHERE extra IS NULL`` lost it). And a BLOB
SQLite keeps in a JSON column round-trips as one."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import Database
from unistatus.migration import archive_format
from unistatus.migration.archive import export_archive, restore_archive, verify_archive

ROW = (
    "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, updated_at, "
    "extra) VALUES ({}, 1, 10, 'USD', 'PENDING', '2026-01-01', '2026-01-01', {})"
)


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(query).all()]
    finally:
        engine.dispose()


def _archived(directory: Path) -> str:
    return "".join(gzip.open(p, "rt").read() for p in sorted(directory.glob("*.jsonl.gz")))


def test_postgres_sql_null_and_json_null_round_trip(
    scratch_pg: Database, empty_pg: str, tmp_path: Path
) -> None:
    db = scratch_pg
    values = ["NULL", "'null'", '\'{"a": 1.10, "b": [null, "x"]}\'', "'\"text\"'"]
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ADD COLUMN extra jsonb")
        conn.exec_driver_sql("ALTER TABLE cashouts ADD COLUMN doc json")
        for i, value in enumerate(values, start=1):
            conn.exec_driver_sql(ROW.format(i, f"{value}::jsonb"))
            conn.exec_driver_sql(f"UPDATE cashouts SET doc = {value}::json WHERE id = {i}")
    query = (
        "SELECT id, extra IS NULL, extra::text, doc IS NULL, doc::text FROM cashouts ORDER BY id"
    )
    before = _rows(db.url, query)
    assert [r[1] for r in before] == [True, False, False, False]
    export_archive(db.engine, db.settings, tmp_path / "a")
    assert verify_archive(db.engine, tmp_path / "a").ok
    restore_archive(empty_pg, tmp_path / "a")
    assert _rows(empty_pg, query) == before


def test_sqlite_sql_null_json_null_and_a_blob_in_a_json_column(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A BLOB SQLite keeps in a JSON column (SQLite 3.45's JSONB is one) came back as the
    text of its bytes, and bytes that are no UTF-8 failed the export ("Could not decode
    to UTF-8"): it is archived as the bytes marker and restored as the same BLOB. A JSON
    column's value is archived as its text, a string in the line: an object there is
    only ever the marker, and the application's own JSON shaped like it stays its text."""
    db = sqlite_db
    values = ["NULL", "'null'", "'[1, 2]'", "X'414243'", "X'FF00FE'", '\'{"$bytes": "QUJD"}\'']
    with db.app_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ADD COLUMN extra JSON")
        for i, value in enumerate(values, start=1):
            conn.exec_driver_sql(ROW.format(i, value))
    query = "SELECT id, extra IS NULL, typeof(extra), extra FROM cashouts ORDER BY id"
    before = _rows(db.url, query)
    assert before[0][1:] == (1, "null", None)
    assert before[3][1:] == (0, "blob", b"ABC") and before[4][2] == "blob"
    export_archive(db.engine, db.settings, tmp_path / "a")
    assert verify_archive(db.engine, tmp_path / "a").ok
    archived = [json.loads(line)[-1] for line in _archived(tmp_path / "a").splitlines()]
    assert archived[:3] == [None, "null", "[1, 2]"]
    assert [type(v) for v in archived[3:]] == [dict, dict, str]  # the BLOBs marked
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    restore_archive(target, tmp_path / "a")
    assert _rows(target, query) == before


def test_an_archive_written_before_the_json_text_kind_still_verifies_and_restores(
    scratch_pg: Database, empty_pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Archives written before have the kind "json" (the value itself in the line): the
    retirement's recorded archive is verified against the live tables by it, and a
    restore reads it as written (where the two nulls were one: JSON null)."""
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ADD COLUMN extra jsonb")
        conn.exec_driver_sql(ROW.format(1, '\'{"a": [1, "x"]}\'::jsonb'))
        conn.exec_driver_sql(ROW.format(2, "NULL"))
    with monkeypatch.context() as patched:
        old = archive_format.column_kind
        patched.setattr(
            archive_format,
            "column_kind",
            lambda t: "json" if isinstance(t, sa.JSON) else old(t),
        )
        manifest = export_archive(db.engine, db.settings, tmp_path / "a")
    kinds = {c.name: c.kind for t in manifest.tables for c in t.columns}
    assert kinds["extra"] == "json"
    assert '{"a":[1,"x"]}' in _archived(tmp_path / "a")
    assert verify_archive(db.engine, tmp_path / "a").ok
    restore_archive(empty_pg, tmp_path / "a")
    restored = _rows(empty_pg, "SELECT id, extra::text FROM cashouts ORDER BY id")
    assert restored == [(1, '{"a": [1, "x"]}'), (2, "null")]
