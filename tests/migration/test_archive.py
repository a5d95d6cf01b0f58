"""Archive: export, verify, restore on SQLite and PostgreSQL (real databases)."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import IN_EVERY_LAYOUT, Database
from support.legacy_columns import legacy_columns
from unistatus.cli import app
from unistatus.config import load_settings
from unistatus.db.engine import create_engine
from unistatus.db.tables import cashouts, escrows, exchanges
from unistatus.errors import InputError, StorageError
from unistatus.migration import archive as archive_module
from unistatus.migration.archive import (
    export_archive,
    read_manifest,
    record_verified,
    recorded_archive,
    restore_archive,
    verify_archive,
)

T0 = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
LEGACY = (cashouts, escrows, exchanges)


def seed(db: Database) -> None:
    rows = {
        cashouts: [
            ("12.5", "PENDING"),
            ("0.00000001", None),  # NULL status: must stay NULL
            ("1234567.89012345", "OTP_PENDING"),
            ("100", "pending "),  # a raw, unmappable value is archived as it is
        ],
        escrows: [("250.75", "ACTIVE"), ("3", None)],
        exchanges: [("0.5", "RATE_LOCKED")],
    }
    with db.app_engine.begin() as conn:
        for table, values in rows.items():
            conn.execute(
                sa.insert(table),
                [
                    {
                        "user_id": 10 + i,
                        "amount": Decimal(amount),
                        "currency": "USDT",
                        "status": status,
                        "created_at": T0 + timedelta(seconds=i),
                        "updated_at": T0 + timedelta(minutes=i, microseconds=7),
                    }
                    for i, (amount, status) in enumerate(values)
                ],
            )


def exact_rows(engine: sa.Engine, table: sa.Table) -> list[tuple[str, ...]]:
    """Every value as its repr: Decimal scale, None and timestamps compared exactly."""
    with engine.connect() as conn:
        found = sa.Table(table.name, sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(found).order_by(found.c.id)).all()
    return [tuple(repr(v) for v in row) for row in rows]


@pytest.fixture(scope="module")
def _pg_restore_url(postgres_url: str) -> Iterator[str]:
    """A second PostgreSQL database for restores (created once here, dropped after)."""
    url = sa.engine.make_url(postgres_url)
    name = f"{url.database}_restore_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def other_db(db: Database, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty second database on the same backend."""
    if db.backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    url: str = request.getfixturevalue("_pg_restore_url")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in LEGACY:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table.name}"')
    finally:
        engine.dispose()
    yield url


@IN_EVERY_LAYOUT
def test_export_restore_identical(db: Database, other_db: str, tmp_path: Path) -> None:
    seed(db)
    out = tmp_path / "archive"
    manifest = export_archive(db.engine, db.settings, out)
    assert {t.name: t.rows for t in manifest.tables} == {
        "cashouts": 4,
        "escrows": 2,
        "exchanges": 1,
    }
    on_disk = read_manifest(out)
    assert on_disk.sha256 == manifest.sha256
    amount = next(c for c in on_disk.tables[0].columns if c.name == "amount")
    assert (amount.kind, amount.precision, amount.scale) == ("decimal", 20, 8)
    # Exact text in the file: full scale, JSON null, ISO timestamps.
    lines = gzip.open(out / "cashouts.jsonl.gz").read().decode().splitlines()
    names = [c.name for c in on_disk.tables[0].columns]
    second = dict(zip(names, json.loads(lines[1]), strict=True))
    assert second["amount"] == "0.00000001" and second["status"] is None
    assert second["created_at"].startswith("2026-03-01")

    report = restore_archive(other_db, out)
    assert report.verify.ok, report.verify.problems
    if db.backend != "sqlite":  # the engine it made for the URL is closed with it
        with db.engine.connect() as conn:
            name = sa.engine.make_url(other_db).database
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": name}
            ).scalar_one()
        assert left == 0, f"restore left {left} connections open"
    target = create_engine(other_db)
    try:
        for table in LEGACY:
            assert exact_rows(target, table) == exact_rows(db.app_engine, table)
        with target.connect() as conn:  # new rows get ids after the restored ones
            cols = sa.Table("cashouts", sa.MetaData(), autoload_with=conn)
        with target.begin() as conn:
            new_id = conn.execute(
                sa.insert(cols)
                .values(
                    user_id=1, amount=1, currency="USD", status="X", created_at=T0, updated_at=T0
                )
                .returning(cols.c.id)
            ).scalar_one()
        assert new_id == 5
    finally:
        target.dispose()
    # The same rows exported again give the same bytes.
    again = export_archive(db.engine, db.settings, tmp_path / "again")
    assert [t.sha256 for t in again.tables] == [t.sha256 for t in manifest.tables]


@IN_EVERY_LAYOUT
def test_verify_detects_changes_and_records(db: Database, tmp_path: Path) -> None:
    seed(db)
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    report = verify_archive(db.engine, out)
    assert report.ok and report.manifest_sha256 == read_manifest(out).sha256
    assert recorded_archive(db.engine) is None
    record_verified(db.engine, report, actor="test")
    recorded = recorded_archive(db.engine)
    assert recorded is not None
    assert recorded["manifest_sha256"] == report.manifest_sha256
    assert recorded["path"] == str(out.resolve())

    # A live value changed (same row count): the content digest catches it.
    with db.app_engine.begin() as conn:
        conn.execute(sa.update(cashouts).where(cashouts.c.id == 2).values(status="PENDING"))
    changed = verify_archive(db.engine, out)
    assert not changed.ok and "escrows" not in " ".join(changed.problems)
    assert any("cashouts: row values differ" in p for p in changed.problems)
    with pytest.raises(InputError):
        record_verified(db.engine, changed)
    # Rows deleted: the counts differ.
    with db.app_engine.begin() as conn:
        conn.execute(sa.delete(exchanges))
    assert any("exchanges: 0 rows" in p for p in verify_archive(db.engine, out).problems)


def test_damaged_archive_is_refused(db: Database, other_db: str, tmp_path: Path) -> None:
    seed(db)
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    path = out / "escrows.jsonl.gz"
    data = bytearray(path.read_bytes())
    data[-9] ^= 0xFF
    path.write_bytes(bytes(data))
    assert any("escrows.jsonl.gz" in p for p in verify_archive(db.engine, out).problems)
    with pytest.raises(InputError, match="damaged"):
        restore_archive(other_db, out)
    target = create_engine(other_db)
    try:
        assert not sa.inspect(target).has_table("cashouts")  # nothing written
    finally:
        target.dispose()


def test_restore_refuses_non_empty_unless_replace(db: Database, tmp_path: Path) -> None:
    seed(db)
    out = tmp_path / "archive"
    export_archive(db.engine, db.settings, out)
    before = exact_rows(db.app_engine, cashouts)
    with db.app_engine.begin() as conn:
        conn.execute(sa.update(cashouts).values(status="FAILED"))
    changed = exact_rows(db.app_engine, cashouts)
    with pytest.raises(InputError, match="not empty"):
        restore_archive(db.engine, out)
    assert exact_rows(db.app_engine, cashouts) == changed  # nothing written
    # A live installation: --replace would delete the rows written since the export.
    with pytest.raises(InputError, match=r"live unistatus installation.*--overwrite-live"):
        restore_archive(db.engine, out, replace=True)
    assert exact_rows(db.app_engine, cashouts) == changed  # nothing written
    report = restore_archive(db.engine, out, replace=True, overwrite_live=True)
    assert report.verify.ok
    assert exact_rows(db.app_engine, cashouts) == before


def test_bad_input(db: Database, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no manifest.json"):
        verify_archive(db.engine, tmp_path)
    (tmp_path / "junk").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        export_archive(db.engine, db.settings, tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        export_archive(db.engine, db.settings, tmp_path / "junk")
    (tmp_path / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not a unistatus-archive"):
        read_manifest(tmp_path)


def test_cli_export_verify_restore(sqlite_db: Database, tmp_path: Path) -> None:
    seed(sqlite_db)
    runner = CliRunner()
    base = ["--database-url", sqlite_db.url, "archive"]
    out = str(tmp_path / "a")
    r = runner.invoke(app, [*base, "export", "--out", out, "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["manifest_sha256"]) == 64
    r = runner.invoke(app, [*base, "verify", out, "--json"], catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(r.stdout)["recorded"] is True
    with sqlite_db.engine.begin() as conn:
        conn.execute(sa.delete(escrows))
    r = runner.invoke(app, [*base, "verify", out], catch_exceptions=False)
    assert r.exit_code == 1
    target = f"sqlite:///{tmp_path / 'r.db'}"
    r = runner.invoke(
        app, [*base, "restore", out, "--database-url", target, "--json"], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verified"] is True
    r = runner.invoke(app, [*base, "restore", out, "--database-url", target])
    assert r.exit_code == 2 and "not empty" in r.output
    # The default target is the database unistatus runs on: never replaced by accident.
    r = runner.invoke(app, [*base, "restore", out, "--replace"])
    assert r.exit_code == 2 and "live unistatus installation" in r.output, r.output
    assert exact_rows(sqlite_db.app_engine, escrows) == []  # still as it was


def test_the_next_command_printed_after_an_export_runs_as_pasted(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """`archive export --out "arch dir/a1"` printed `next: unistatus archive verify arch
    dir/a1`: pasted, two arguments (exploratory review). The path is quoted."""
    import shlex

    seed(sqlite_db)
    out = tmp_path / "arch dir" / "a1"
    r = CliRunner().invoke(app, ["--database-url", sqlite_db.url, "archive", "export", "--out",
                                 str(out)], env={"COLUMNS": "300"})  # fmt: skip
    assert r.exit_code == 0, r.output
    line = next(x for x in r.stdout.splitlines() if x.startswith("next:"))
    assert shlex.split(line.removeprefix("next:"))[-1] == str(out), line


@pytest.fixture
def same_name_twice(pg: Database) -> Iterator[Any]:
    """Two legacy systems whose tables are both called ``orders``, in schemas a and b
    (200 and 300 rows), and settings naming them; dropped afterwards."""
    with pg.engine.begin() as conn:
        for schema, rows in (("a", 200), ("b", 300)):
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            conn.exec_driver_sql(f"CREATE TABLE {schema}.orders (LIKE cashouts INCLUDING ALL)")
            conn.exec_driver_sql(
                f"INSERT INTO {schema}.orders (id, user_id, amount, currency, status, "
                f"created_at, updated_at) SELECT g, g, g, 'USD', 'PENDING', now(), now() "
                f"FROM generate_series(1, {rows}) g"
            )
    tables = {
        "CASHOUT": {"table": "orders", "schema": "a"},
        "ESCROW": {"table": "orders", "schema": "b"},
        "EXCHANGE": {"table": "exchanges"},
    }
    try:
        yield pg.settings.model_copy(
            update={"legacy_tables": load_settings(legacy_tables=tables).legacy_tables}
        )
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA a CASCADE; DROP SCHEMA b CASCADE")


def test_tables_of_one_name_in_two_schemas_get_a_file_each(
    pg: Database, same_name_twice: Any, tmp_path: Path
) -> None:
    """a.orders and b.orders were both written to orders.jsonl.gz: the second replaced
    the first (its 200 rows lost from the archive), and verify then called the file
    altered."""
    manifest = export_archive(pg.engine, same_name_twice, tmp_path / "out")
    files = {entry.schema: entry.file for entry in manifest.tables if entry.name == "orders"}
    assert len(set(files.values())) == 2, files
    for schema, rows in (("a", 200), ("b", 300)):
        with gzip.open(tmp_path / "out" / files[schema]) as f:
            assert sum(1 for _ in f) == rows, (schema, files)
    assert verify_archive(pg.engine, tmp_path / "out").ok


def test_compat_views_of_two_tables_of_one_name_are_refused(
    pg: Database, same_name_twice: Any
) -> None:
    """--compat-views names each view after its table: a.orders and b.orders both became
    unistatus_compat.orders, the last one's (a probe: cashout readers read escrows, the
    retirement said done). Refused before anything changes, naming both tables."""
    from unistatus.migration.compat_views import view_selects  # noqa: PLC0415
    from unistatus.migration.retire import retire_legacy_columns  # noqa: PLC0415

    with pytest.raises(InputError, match=r"a\.orders.*b\.orders"):
        retire_legacy_columns(pg.engine, same_name_twice, actor="test", compat=True)
    with pytest.raises(InputError, match="unistatus_compat.orders"):
        view_selects(pg.engine, same_name_twice)
    with pg.engine.connect() as conn:
        left = conn.exec_driver_sql(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema IN ('a', 'b') "
            "AND table_name = 'orders' AND column_name = 'status'"
        ).scalar_one()
    assert left == 2


def test_an_export_that_fails_leaves_nothing_behind(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the second table is written: the files already written are
    removed (and the directory, when the export made it), so that the same command can
    run again once the cause is fixed."""
    seed(db)
    real = archive_module.compress_lines
    written: list[int] = []

    def disk_full_on_the_second(
        lines: Any, gz: Any, content: Any = None, on_block: Any = None
    ) -> int:
        written.append(1)
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        return real(lines, gz, content, on_block)

    monkeypatch.setattr(archive_module, "compress_lines", disk_full_on_the_second)
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        written.clear()
        with pytest.raises(StorageError, match="No space left on device"):
            export_archive(db.engine, db.settings, out)
        assert not out.exists() if out.name == "new" else not any(out.iterdir())
    monkeypatch.setattr(archive_module, "compress_lines", real)
    assert export_archive(db.engine, db.settings, tmp_path / "empty").tables


def test_infinite_times_are_archived_and_restored_as_they_are(
    pg: Database, _pg_restore_url: str, tmp_path: Path
) -> None:
    """PostgreSQL's 'infinity' and '-infinity' (an application's "valid until" column,
    say) failed the export ("timestamp too large (after year 10K)"), naming no table,
    and so blocked the archive and the retirement."""
    seed(pg)
    columns = {"valid_until": "TIMESTAMPTZ", "valid_from": "TIMESTAMP", "due": "DATE"}
    with legacy_columns(pg, columns, table="escrows"):
        with pg.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE escrows SET valid_until = 'infinity', valid_from = '-infinity', "
                "due = 'infinity' WHERE status = 'ACTIVE'"
            )
            conn.exec_driver_sql(
                "UPDATE escrows SET valid_until = '2030-01-01T00:00:00Z', "
                "valid_from = '2020-01-01', due = '2031-02-03' WHERE status IS NULL"
            )
        manifest = export_archive(pg.engine, pg.settings, tmp_path / "out")
        assert verify_archive(pg.engine, tmp_path / "out").ok
        assert {t.name: t.rows for t in manifest.tables}["escrows"] == 2
        report = restore_archive(_pg_restore_url, tmp_path / "out", replace=True)
        assert report.verify.ok, report.verify.problems
        target = create_engine(_pg_restore_url)
        try:
            with target.connect() as conn:
                restored = conn.exec_driver_sql(
                    "SELECT valid_until::text, valid_from::text, due::text FROM escrows ORDER BY id"
                ).all()
        finally:
            target.dispose()
        with pg.engine.connect() as conn:
            live = conn.exec_driver_sql(
                "SELECT valid_until::text, valid_from::text, due::text FROM escrows ORDER BY id"
            ).all()
        assert restored == live
        assert ("infinity", "-infinity", "infinity") in [tuple(r) for r in restored]


def test_sqlite_times_its_columns_cannot_read_are_archived_as_stored(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """unistatus's SQLite engine reads a time column loosely for the adapter (a number as
    a Unix time, no time at all as NULL): the archive must not. It stored NULL for
    'not a time' and a converted time for 1700000000, and verify, reading the same way,
    called the archive good."""
    with sqlite_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO cashouts (user_id, amount, currency, status, created_at, updated_at) "
            "VALUES (1, 1, 'USD', 'PENDING', 'not a time', 1700000000)"
        )
    export_archive(sqlite_db.engine, sqlite_db.settings, tmp_path / "out")
    line = gzip.open(tmp_path / "out" / "cashouts.jsonl.gz").read().decode().splitlines()[0]
    assert json.loads(line)[-2:] == ["not a time", "1700000000"], line


@pytest.mark.postgres
def test_values_of_other_postgres_types_are_archived_as_the_database_writes_them(
    pg: Database, tmp_path: Path
) -> None:
    """An array, an interval and money were archived as Python's str() of what the
    driver made of them ("[1, None, 3]", "32 days, 3:04:05.6": the month lost, "$12.34"):
    verify, reading the same way, said "verified", and the restore into the table as it
    was failed ("invalid input syntax for type integer") (a probe). They are archived in
    PostgreSQL's own text form, which its input reads back exactly."""
    seed(pg)
    columns = {"tags": "INTEGER[]", "grace": "INTERVAL", "fee": "MONEY"}
    read_back = "SELECT id, tags::text, grace::text, fee::text FROM escrows ORDER BY id"
    with legacy_columns(pg, columns, table="escrows"):
        with pg.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE escrows SET tags = '{1,NULL,3}', grace = '1 mon 2 days 03:04:05.6', "
                "fee = '12.34'"
            )
            live = conn.exec_driver_sql(read_back).all()
        export_archive(pg.engine, pg.settings, tmp_path / "out")
        assert verify_archive(pg.engine, tmp_path / "out").ok
        manifest = read_manifest(tmp_path / "out")
        entry = next(t for t in manifest.tables if t.name == "escrows")
        names = [c.name for c in entry.columns]
        first = json.loads(gzip.open(tmp_path / "out" / entry.file).read().splitlines()[0])
        row = dict(zip(names, first, strict=True))
        assert (row["tags"], row["grace"]) == ("{1,NULL,3}", "1 mon 2 days 03:04:05.6")
        report = restore_archive(pg.engine, tmp_path / "out", replace=True, overwrite_live=True)
        assert report.verify.ok, report.verify.problems
        with pg.engine.connect() as conn:
            assert conn.exec_driver_sql(read_back).all() == live
