"""Resolving the legacy tables: one reflection per schema, the outcome of one per table.

:func:`unistatus.db.legacy.resolve_legacy_tables` runs at the start of nearly every
command; reflected one table at a time it cost a round trip per catalog query per table
(and reflected the tables their foreign keys point at). These tests keep it in bulk and
keep what it returns: a missing table is the same ConfigError, a view or a table in a
schema of its own still resolves, a foreign key's target is not reflected; and the
columns-only form (``columns_only=True``, for the commands that only read the tables)
resolves to the same columns from fewer statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from conftest import PG_IN_EVERY_LAYOUT, Database
from unistatus.config import Settings, load_settings
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ConfigError

DEFAULT_NAMES = {"CASHOUT": "cashouts", "ESCROW": "escrows", "EXCHANGE": "exchanges"}


def settings_with(db: Database, **tables: dict[str, str]) -> Settings:
    """``db``'s settings with some systems' legacy tables named otherwise."""
    legacy = {system: {"table": name} for system, name in DEFAULT_NAMES.items()}
    legacy.update(tables)
    return load_settings(database_url=db.url, schema=db.settings.schema, legacy_tables=legacy)


BOTH_FORMS = pytest.mark.parametrize("columns_only", [False, True], ids=["whole", "columns"])


def statements(
    engine: sa.Engine,
    settings: Settings,
    systems: list[LegacySystemType],
    columns_only: bool = False,
) -> int:
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(str(args[2]))

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        resolve_legacy_tables(engine, settings, systems=systems, columns_only=columns_only)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return len(seen)


@contextmanager
def app_ddl(db: Database, create: list[str], drop: list[str]) -> Iterator[None]:
    """The application's own DDL for one test (the PostgreSQL database is shared by the
    session: it is undone afterwards)."""
    with db.app_engine.begin() as conn:
        for sql in create:
            conn.exec_driver_sql(sql)
    try:
        yield
    finally:
        with db.app_engine.begin() as conn:
            for sql in drop:
                conn.exec_driver_sql(sql)


@PG_IN_EVERY_LAYOUT
def test_three_tables_cost_about_the_statements_of_one(pg: Database) -> None:
    """One catalog query per kind for every table of a schema, not one per table (each
    table by itself: 11 statements, the three: 33 before; now 13 either way, one of them
    the look at whether the compatibility views are on the search_path)."""
    one = statements(pg.engine, pg.settings, [LegacySystemType.CASHOUT])
    three = statements(pg.engine, pg.settings, list(LegacySystemType))
    assert three < 2 * one, (one, three)


@BOTH_FORMS
def test_every_system_resolves_to_its_own_table(db: Database, columns_only: bool) -> None:
    tables = resolve_legacy_tables(db.engine, db.settings, columns_only=columns_only)
    assert {s.value: lt.name for s, lt in tables.items()} == DEFAULT_NAMES
    for lt in tables.values():
        assert lt.table.c[lt.id.name] is lt.id
        assert lt.status is not None and lt.status.table is lt.table


def test_a_foreign_keys_target_is_not_reflected(db: Database) -> None:
    with app_ddl(
        db,
        [
            "CREATE TABLE customers (id INTEGER PRIMARY KEY)",
            "ALTER TABLE cashouts ADD COLUMN customer_id INTEGER REFERENCES customers (id)",
        ],
        ["ALTER TABLE cashouts DROP COLUMN customer_id", "DROP TABLE customers"],
    ):
        lt = resolve_legacy_tables(db.engine, db.settings)[LegacySystemType.CASHOUT]
        assert "customer_id" in lt.extra_columns  # the application's column is known
        assert not any(t.name == "customers" for t in lt.table.metadata.tables.values())


@BOTH_FORMS
def test_a_missing_table_is_the_same_config_error(db: Database, columns_only: bool) -> None:
    settings = settings_with(db, ESCROW={"table": "no_such_escrows"})
    with pytest.raises(ConfigError, match="legacy table 'no_such_escrows' for ESCROW does not"):
        resolve_legacy_tables(db.engine, settings, columns_only=columns_only)
    # Only the systems asked for are looked at.
    cashout = [LegacySystemType.CASHOUT]
    assert resolve_legacy_tables(db.engine, settings, systems=cashout, columns_only=columns_only)


@BOTH_FORMS
def test_a_view_still_resolves_as_a_legacy_table(db: Database, columns_only: bool) -> None:
    """Not a table for the bulk reflection: found one by one, as before. Only the capture
    and the retirement refuse it (tests/db/test_legacy_table_kinds.py)."""
    with app_ddl(
        db,
        ["CREATE VIEW cashouts_seen AS SELECT * FROM cashouts"],
        ["DROP VIEW cashouts_seen"],
    ):
        settings = settings_with(db, CASHOUT={"table": "cashouts_seen"})
        tables = resolve_legacy_tables(db.engine, settings, columns_only=columns_only)
        assert tables[LegacySystemType.CASHOUT].name == "cashouts_seen"
        assert tables[LegacySystemType.ESCROW].name == "escrows"


@pytest.mark.postgres
@BOTH_FORMS
def test_tables_in_several_schemas_each_resolve_in_their_own(
    pg: Database, columns_only: bool
) -> None:
    with app_ddl(
        pg,
        [
            "CREATE SCHEMA shop",
            "CREATE TABLE shop.payouts (LIKE public.cashouts INCLUDING ALL)",
            "ALTER TABLE shop.payouts ADD COLUMN shop_note TEXT",
        ],
        ["DROP SCHEMA shop CASCADE"],
    ):
        settings = settings_with(pg, CASHOUT={"table": "payouts", "schema": "shop"})
        tables = resolve_legacy_tables(pg.engine, settings, columns_only=columns_only)
        cashout = tables[LegacySystemType.CASHOUT]
        assert (cashout.table.schema, cashout.name) == ("shop", "payouts")
        assert "shop_note" in cashout.extra_columns
        assert tables[LegacySystemType.ESCROW].name == "escrows"
        missing = settings_with(pg, CASHOUT={"table": "cashouts", "schema": "shop"})
        with pytest.raises(ConfigError, match="legacy table 'shop.cashouts' for CASHOUT"):
            resolve_legacy_tables(pg.engine, missing, columns_only=columns_only)


def test_the_columns_only_form_has_the_same_columns_from_fewer_statements(db: Database) -> None:
    with app_ddl(
        db,
        ["ALTER TABLE cashouts ADD COLUMN destination VARCHAR(64) NOT NULL DEFAULT 'x'"],
        ["ALTER TABLE cashouts DROP COLUMN destination"],
    ):
        whole = resolve_legacy_tables(db.engine, db.settings)
        columns = resolve_legacy_tables(db.engine, db.settings, columns_only=True)
        for system, lt in whole.items():
            seen = columns[system]
            assert [c.name for c in seen.table.c] == [c.name for c in lt.table.c]
            for mine, theirs in zip(seen.table.c, lt.table.c, strict=True):
                assert type(mine.type) is type(theirs.type), mine.name
                assert mine.nullable == theirs.nullable, mine.name
            assert seen.extra_columns == lt.extra_columns
            assert not seen.table.indexes and not seen.table.primary_key.columns
        all_systems = list(LegacySystemType)
        fewer = statements(db.engine, db.settings, all_systems, columns_only=True)
        assert fewer < statements(db.engine, db.settings, all_systems)
