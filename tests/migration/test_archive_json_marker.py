"""A JSON column's value ``{"$bytes": "<base64>"}`` is the application's JSON: the
archive read it back as the bytes it looked like (a BLOB on SQLite, a failed restore on
PostgreSQL: bytea into jsonb). The bytes marker is for the columns of other kinds only
(a review)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from conftest import Database
from unistatus.migration.archive import export_archive, restore_archive
from unistatus.migration.archive_format import decode, encode

LOOKS_LIKE_BYTES = '{"$bytes": "QUJD"}'
ROW = (
    "INSERT INTO cashouts (id, user_id, amount, currency, status, created_at, updated_at, "
    "extra) VALUES (7, 1, 10, 'USD', 'PENDING', '2026-01-01', '2026-01-01', {})"
)


def test_a_json_value_shaped_like_the_marker_decodes_as_itself() -> None:
    value = {"$bytes": "QUJD"}
    assert decode("json", encode("json", value)) == value
    assert decode("string", encode("string", b"ABC")) == b"ABC"


def _restored(url: str, query: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(query).all()]
    finally:
        engine.dispose()


def test_sqlite_json_column_round_trips(sqlite_db: Database, tmp_path: Path) -> None:
    db = sqlite_db
    with db.app_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ADD COLUMN extra JSON")
        conn.exec_driver_sql(ROW.format(f"'{LOOKS_LIKE_BYTES}'"))
        conn.exec_driver_sql(
            ROW.replace("(7,", "(8,").replace("'PENDING'", "X'414243'").format("'[1]'")
        )
    query = "SELECT id, typeof(extra), extra, typeof(status), status FROM cashouts ORDER BY id"
    with db.engine.connect() as conn:
        before = [tuple(r) for r in conn.exec_driver_sql(query).all()]
    export_archive(db.engine, db.settings, tmp_path / "a")
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    restore_archive(target, tmp_path / "a")
    after = _restored(target, query)
    assert after == before
    assert after[0][1] == "text" and after[1][3:] == ("blob", b"ABC")


def test_postgres_jsonb_column_round_trips(
    scratch_pg: Database, empty_pg: str, tmp_path: Path
) -> None:
    db = scratch_pg
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cashouts ADD COLUMN extra jsonb")
        conn.exec_driver_sql(ROW.format(f"'{LOOKS_LIKE_BYTES}'::jsonb"))
    export_archive(db.engine, db.settings, tmp_path / "a")
    restore_archive(empty_pg, tmp_path / "a")
    after = _restored(empty_pg, "SELECT id, extra FROM cashouts ORDER BY id")
    assert after == [(7, {"$bytes": "QUJD"})]
