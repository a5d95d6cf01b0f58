"""The ``schema`` setting: unistatus's own tables in a PostgreSQL schema of their own.

``init`` creates the schema and everything of ours in it (tables, indexes, the function,
Alembic's version table) and nothing in public; the legacy tables stay the application's;
two installations side by side in one database are independent; the default (public)
is what every installation has always had, and an existing one upgrades in place. The
whole lifecycle in a schema runs in the tests marked ``IN_EVERY_LAYOUT`` /
``PG_IN_EVERY_LAYOUT`` (conftest), the demo's full migration among them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import OWN_SCHEMA, Database, _drop_database, _throwaway_database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.cli import app
from unistatus.config import LegacyTableSpec, load_settings
from unistatus.db import schema
from unistatus.db.binding import schema_of
from unistatus.db.catalog import all_tables, qualified_name
from unistatus.db.control import get_mode, set_mode
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.mode_lock_keys import MODE_LOCK_KEY, mode_lock_key
from unistatus.db.prepared import Prepared
from unistatus.db.tables import unified_transactions
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import ConfigError
from unistatus.migration.archive import (
    export_archive,
    record_verified,
    restore_archive,
    verify_archive,
)
from unistatus.migration.check import run_check
from unistatus.migration.retire import retire_legacy_columns, status_checksum, undo_cleanup

LEGACY = {"cashouts", "escrows", "exchanges"}
OURS = {t.name for t in all_tables()} | {schema.VERSION_TABLE}

# --- the setting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Unistatus", "would need quoting"),
        ("my-schema", "would need quoting"),
        ("1st", "would need quoting"),
        ("two words", "would need quoting"),
        ("select", "reserved word"),
        ("pg_unistatus", "reserved by PostgreSQL"),
        ("information_schema", "reserved by PostgreSQL"),
        ("a" * 64, "63-byte"),
    ],
)
def test_a_name_that_needs_quoting_or_is_invalid_is_a_config_error(name: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid setting schema: .*{why}"):
        load_settings(schema=name)


def test_the_setting_comes_from_the_environment_and_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().schema == "public"  # the default: every existing installation
    monkeypatch.setenv("UNISTATUS_SCHEMA", "payments_status")
    assert load_settings().schema == "payments_status"
    monkeypatch.delenv("UNISTATUS_SCHEMA")
    config = tmp_path / "unistatus.toml"
    config.write_text(
        'schema = "unistatus"\n[legacy_tables.CASHOUT]\ntable = "payouts"\nschema = "App"\n'
    )
    monkeypatch.setenv("UNISTATUS_CONFIG", str(config))
    settings = load_settings()
    assert settings.schema == "unistatus"
    # The application's schema is its own business: any name, quoted where needed.
    assert settings.legacy_tables["CASHOUT"] == LegacyTableSpec(table="payouts", schema="App")
    config.write_text('schema = "Unistatus"\n')
    with pytest.raises(ConfigError, match="would need quoting"):
        load_settings()


def test_the_cli_refuses_a_bad_name_with_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(
        app, ["--database-url", url, "init"], env={"UNISTATUS_SCHEMA": "Bad-Name"}
    )
    assert result.exit_code == 2, result.output
    assert "would need quoting" in result.stderr and "Traceback" not in result.output


def test_sqlite_refuses_a_schema_of_its_own(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ConfigError, match="needs PostgreSQL; sqlite has no schemas"):
        create_engine(url, schema="unistatus")
    with pytest.raises(ConfigError, match="needs PostgreSQL"):
        DualWriteAdapter(url, settings=load_settings(database_url=url, schema="unistatus"))
    assert schema_of(create_engine(url, schema="public")) is None  # the default is fine


# --- an engine and its settings ----------------------------------------------------------


@pytest.mark.postgres
def test_an_engine_that_does_not_match_the_settings_is_refused(pg_schema: Database) -> None:
    plain = create_engine(pg_schema.url)  # made without the setting: public, unqualified
    try:
        with pytest.raises(ConfigError, match="create_engine\\(url, schema=settings.schema\\)"):
            run_check(plain, pg_schema.settings)
        default = load_settings(database_url=pg_schema.url, schema="public")
        with pytest.raises(ConfigError, match="the settings say schema = 'public'"):
            resolve_legacy_tables(pg_schema.engine, default)
        with pytest.raises(ConfigError, match="keeps unistatus's tables in schema 'unistatus'"):
            create_engine(pg_schema.engine, schema="other")
    finally:
        plain.dispose()


@pytest.mark.postgres
def test_adapters_on_the_applications_engine_share_one_bound_engine(pg_schema: Database) -> None:
    """Binding one engine twice gives one engine: the adapters of a process on it share
    their statistics recorder, as they do without the setting."""
    application = sa.create_engine(pg_schema.url)
    first = DualWriteAdapter(application, settings=pg_schema.settings)
    second = DualWriteAdapter(application, settings=pg_schema.settings)
    try:
        assert first.engine is second.engine and schema_of(first.engine) == OWN_SCHEMA
        assert first.stats is not None and first.stats is second.stats
    finally:
        first.close()
        second.close()
        application.dispose()


@pytest.mark.postgres
def test_names_for_hand_written_sql(pg_schema: Database, pg: Database) -> None:
    assert qualified_name(unified_transactions, pg_schema.engine) == (
        "unistatus.unified_transactions"
    )
    assert qualified_name(unified_transactions, pg.engine) == "unified_transactions"
    with pg_schema.engine.connect() as conn:
        assert qualified_name("unistatus_control", conn) == "unistatus.unistatus_control"
    # Statements compiled ahead of time carry the schema; the default's are unqualified,
    # byte for byte what they were before the setting existed.
    query = sa.select(unified_transactions.c.id)
    assert (
        "FROM unistatus.unified_transactions" in Prepared(query, pg_schema.engine).compiled.string
    )
    assert "FROM unified_transactions" in Prepared(query, pg.engine).compiled.string
    assert "public." not in Prepared(query, pg.engine).compiled.string
    # The legacy tables keep the application's schema, named explicitly so no
    # translation can move them.
    legacy = resolve_legacy_tables(pg_schema.engine, pg_schema.settings)
    assert {lt.table.schema for lt in legacy.values()} == {"public"}
    assert {lt.table.schema for lt in resolve_legacy_tables(pg.engine, pg.settings).values()} == {
        None
    }


# --- installing ----------------------------------------------------------------------------


@pytest.fixture
def fresh_pg() -> Iterator[Callable[[], str]]:
    """Makes empty PostgreSQL databases (nothing installed); drops them after."""
    made: list[tuple[sa.Engine, str]] = []

    def make() -> str:
        admin, url, name = _throwaway_database(f"_fresh{len(made)}")
        made.append((admin, name))
        return url

    yield make
    for admin, name in made:
        _drop_database(admin, name)


def where_things_are(engine: sa.Engine) -> dict[str, set[str]]:
    """Every relation (table, index, ...) and function of the database, by schema."""
    found: dict[str, set[str]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT n.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' "
                "UNION ALL SELECT n.nspname, p.proname || '()' FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"
            )
        ).all()
    for namespace, name in rows:
        found.setdefault(namespace, set()).add(name)
    return found


def relation_names(engine: sa.Engine, namespace: str) -> set[str]:
    return set(sa.inspect(engine).get_table_names(schema=namespace))


@pytest.mark.postgres
def test_init_creates_the_schema_and_everything_of_ours_in_it(
    fresh_pg: Callable[[], str],
) -> None:
    url = fresh_pg()
    env = {"UNISTATUS_SCHEMA": OWN_SCHEMA}
    first = CliRunner().invoke(app, ["--database-url", url, "init", "--json"], env=env)
    assert first.exit_code == 0, first.output
    assert '"schema": "unistatus"' in first.stdout and '"upgraded": true' in first.stdout
    again = CliRunner().invoke(app, ["--database-url", url, "init", "--json"], env=env)
    assert again.exit_code == 0 and '"upgraded": false' in again.stdout
    # The commands that follow find the installation in its schema ...
    mode = CliRunner().invoke(app, ["--database-url", url, "mode", "get", "--json"], env=env)
    assert mode.exit_code == 0 and "LEGACY_ONLY" in mode.stdout, mode.output
    # ... and, without the setting, say where it is (nothing is created in public).
    bare = CliRunner().invoke(app, ["--database-url", url, "mode", "get"])
    said = " ".join(bare.output.split())
    assert bare.exit_code == 2 and 'set schema = "unistatus"' in said, bare.output

    engine = create_engine(url, schema=OWN_SCHEMA)
    plain = create_engine(url)
    try:
        assert relation_names(engine, OWN_SCHEMA) == OURS
        assert relation_names(engine, "public") == LEGACY  # the application's, nothing else
        found = where_things_are(engine)
        assert "unistatus_locked_mode()" in found[OWN_SCHEMA]
        assert {"ix_history_transaction", "uq_unified_legacy_ref"} <= found[OWN_SCHEMA]
        ours_in_public = {n for n in found["public"] if n.startswith(("unistatus", "unified"))}
        assert ours_in_public == set()
        assert set(found) == {"public", OWN_SCHEMA}
        # Alembic's version table is in the schema, and says the install revision.
        assert schema.current_heads(engine) == (schema.INSTALL_REVISION,)
        assert schema.current_heads(plain) == ()  # public: nothing installed there
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT version_num FROM unistatus.unistatus_alembic_version")
            )
            assert stored.scalar_one() == schema.INSTALL_REVISION
            # The function of revision 0007 reads the control table of its own schema,
            # whatever the caller's search_path.
            conn.exec_driver_sql("SET search_path TO pg_catalog")
            locked = conn.execute(sa.text("SELECT unistatus.unistatus_locked_mode()"))
            assert locked.scalar_one() == "LEGACY_ONLY"
            conn.exec_driver_sql("RESET search_path")
            assert ops_for(engine).has_locked_mode_function(conn)
    finally:
        engine.dispose()
        plain.dispose()


@pytest.mark.postgres
@pytest.mark.usefixtures("staging_old_revisions")
def test_an_existing_default_installation_upgrades_without_moving_anything(
    fresh_pg: Callable[[], str],
) -> None:
    url = fresh_pg()
    settings = load_settings(database_url=url)  # schema = public: the default
    engine = create_engine(url, schema=settings.schema)
    try:
        assert schema_of(engine) is None  # no translation at all: names stay bare
        assert schema.upgrade(engine, settings, "0009") == "0009"  # installed long ago
        set_mode(engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="old", settings=settings)
        before = where_things_are(engine)
        assert set(before) == {"public"}

        assert schema.upgrade(engine, settings) == schema.INSTALL_REVISION  # `init` today
        after = where_things_are(engine)
        assert set(after) == {"public"}  # no schema created, nothing moved
        # Only what revisions 0010 to 0018 add (the capture's, the backfill workers' and the
        # check runs' tables), in public.
        added = after["public"] - before["public"]
        assert added and all(
            n.startswith(
                (
                    "unistatus_capture_",
                    "unistatus_writer_marks",
                    "ix_capture_",
                    "unistatus_backfill_workers",
                    "unistatus_check_runs",
                    "ix_backfill_workers",
                    "ix_check_runs",
                    "uq_check_runs_",
                    "unistatus_control_summary_guard",  # revision 0021's function
                )
            )
            for n in added
        ), sorted(added)
        assert relation_names(engine, "public") == OURS | LEGACY
        assert get_mode(engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY
        with engine.connect() as conn:
            assert ops_for(engine).has_locked_mode_function(conn)
        assert ops_for(engine).mode_lock_key == MODE_LOCK_KEY  # the key it always had
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_init_in_a_schema_refuses_when_another_installation_exists(
    fresh_pg: Callable[[], str],
) -> None:
    """The setting turned on (or misspelt in one process's config) over an existing
    installation: init made a second, empty one, in LEGACY_ONLY over the same legacy
    tables, and every process with the setting used it from then on."""
    url = fresh_pg()
    first = CliRunner().invoke(app, ["--database-url", url, "init"])
    assert first.exit_code == 0, first.output
    engine = create_engine(url)
    try:
        set_mode(engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="live")
        env = {"UNISTATUS_SCHEMA": OWN_SCHEMA}
        done = CliRunner().invoke(app, ["--database-url", url, "init"], env=env)
        said = " ".join(done.output.split())
        assert done.exit_code == 2, done.output
        assert "already installed in this database, in schema public" in said, said
        assert "nothing was created" in said and "--alongside" in said, said
        assert not sa.inspect(engine).has_schema(OWN_SCHEMA), "a second installation was made"
        assert get_mode(engine) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY

        # Asked for, it is made; then it upgrades in place like any other.
        args = ["--database-url", url, "init", "--json"]
        made = CliRunner().invoke(app, [*args, "--alongside"], env=env)
        assert made.exit_code == 0 and '"upgraded": true' in made.stdout, made.output
        again = CliRunner().invoke(app, args, env=env)
        assert again.exit_code == 0 and '"upgraded": false' in again.stdout, again.output
        assert CliRunner().invoke(app, args).exit_code == 0  # public's upgrades as ever
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_init_in_public_beside_one_in_a_schema_only_when_asked_for(
    fresh_pg: Callable[[], str],
) -> None:
    """The other way round: the default layout refused it already (the search_path does
    not reach the installation); --alongside is the way to ask for it there too."""
    url = fresh_pg()
    first = CliRunner().invoke(
        app, ["--database-url", url, "init"], env={"UNISTATUS_SCHEMA": OWN_SCHEMA}
    )
    assert first.exit_code == 0, first.output
    done = CliRunner().invoke(app, ["--database-url", url, "init"])
    said = " ".join(done.output.split())
    assert done.exit_code == 2 and "installed in schema unistatus" in said, said
    assert "`unistatus init --alongside`" in said and "nothing was created" in said, said
    made = CliRunner().invoke(app, ["--database-url", url, "init", "--alongside", "--json"])
    assert made.exit_code == 0 and '"upgraded": true' in made.stdout, made.output
    plain = create_engine(url)
    try:
        assert schema.current_heads(plain) == (schema.INSTALL_REVISION,)
    finally:
        plain.dispose()


@pytest.mark.postgres
def test_two_installations_side_by_side_are_independent(fresh_pg: Callable[[], str]) -> None:
    """Two applications in one database: A's legacy tables in public, B's in schema
    "shop"; unistatus for each in a schema of its own."""
    url = fresh_pg()
    plain = create_engine(url)
    with plain.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA shop")
    plain.dispose()
    settings_a = load_settings(database_url=url, schema="unistatus_a")
    shop = {s.value: {"table": LEGACY_NAME[s], "schema": "shop"} for s in LegacySystemType}
    settings_b = load_settings(database_url=url, schema="unistatus_b", legacy_tables=shop)
    a = create_engine(url, schema=settings_a.schema)
    b = create_engine(url, schema=settings_b.schema)
    adapters: list[DualWriteAdapter] = []
    try:
        assert schema.upgrade(a, settings_a) == schema.INSTALL_REVISION
        with pytest.raises(ConfigError, match="already installed .* in schema unistatus_a"):
            schema.upgrade(b, settings_b)  # the second one only when asked for
        assert schema.upgrade(b, settings_b, alongside=True) == schema.INSTALL_REVISION
        found = where_things_are(a)
        assert relation_names(a, "unistatus_a") == relation_names(a, "unistatus_b") == OURS
        assert relation_names(a, "public") == relation_names(a, "shop") == LEGACY
        assert "unistatus_locked_mode()" in found["unistatus_a"] & found["unistatus_b"]
        assert ops_for(a).mode_lock_key != ops_for(b).mode_lock_key != MODE_LOCK_KEY
        assert mode_lock_key("unistatus_a") == ops_for(a).mode_lock_key

        set_mode(a, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="a", settings=settings_a)
        assert get_mode(b) is DualWriteMode.LEGACY_ONLY
        adapter_a = DualWriteAdapter(a, settings=settings_a, record_stats=False)
        adapter_b = DualWriteAdapter(b, settings=settings_b, record_stats=False)
        adapters += [adapter_a, adapter_b]
        made = adapter_a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert made.overall_success and made.entity_id
        assert rows(a, "unistatus_a.unified_transactions") == 1
        assert rows(a, "unistatus_b.unified_transactions") == 0
        assert (rows(a, "public.cashouts"), rows(a, "shop.cashouts")) == (1, 0)

        set_mode(b, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="b", settings=settings_b)
        other = adapter_b.create_transaction("WALLET_CASHOUT", 2, "7", "EUR")
        assert other.overall_success and other.entity_id
        assert (rows(a, "public.cashouts"), rows(a, "shop.cashouts")) == (1, 1)
        assert rows(a, "unistatus_b.unified_transactions") == 1

        # Each has its own mode lock: while a transaction of B's application holds B's
        # (shared, until it commits), A's mode switch goes through at once.
        with b.connect() as conn, conn.begin():
            moved = adapter_b.update_status(other.entity_id, "APPROVED", "t", "t", connection=conn)
            assert moved.overall_success
            done = threading.Event()

            def switch_a() -> None:
                set_mode(a, DualWriteMode.LEGACY_ONLY, reason="a alone", settings=settings_a)
                done.set()

            worker = threading.Thread(target=switch_a)
            worker.start()
            assert done.wait(5.0), "A's mode switch waited for B's transaction"
            worker.join()
        assert get_mode(a) is DualWriteMode.LEGACY_ONLY
        assert get_mode(b) is DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY

        # Two migration histories: one goes down and back up, the other never notices.
        assert schema.downgrade(a, settings_a, "0009") == "0009"
        assert schema.current_heads(b) == (schema.INSTALL_REVISION,)
        stats = sa.inspect(b).get_columns("unistatus_operation_stats", schema="unistatus_b")
        assert "rolled_back" in {c["name"] for c in stats}
        assert schema.upgrade(a, settings_a) == schema.INSTALL_REVISION
    finally:
        for adapter in adapters:
            adapter.close()
        a.dispose()
        b.dispose()


LEGACY_NAME = {
    LegacySystemType.CASHOUT: "cashouts",
    LegacySystemType.ESCROW: "escrows",
    LegacySystemType.EXCHANGE: "exchanges",
}


def rows(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


# --- the caller's own connection -------------------------------------------------------------


@pytest.mark.postgres
def test_a_callers_connection_from_its_own_engine_is_left_as_it_was(pg_schema: Database) -> None:
    """The application's engine knows nothing of the setting: the adapter names its
    tables in its schema for its own statements only, then the connection is the
    application's again."""
    set_mode(pg_schema.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    adapter = DualWriteAdapter(pg_schema.engine, settings=pg_schema.settings)
    application = sa.create_engine(pg_schema.url)  # the application's own engine
    cashouts = sa.table("cashouts", sa.column("id"), sa.column("status"))
    try:
        made = adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert made.entity_id
        with application.connect() as conn, conn.begin():
            before = dict(conn.get_execution_options())
            result = adapter.update_status(made.entity_id, "APPROVED", "t", "t", connection=conn)
            assert result.overall_success
            assert not conn.get_execution_options().get("schema_translate_map")
            assert {
                k: v for k, v in conn.get_execution_options().items() if k != "schema_translate_map"
            } == before
            # The application's statements find its tables where they always were.
            status = conn.execute(sa.select(cashouts.c.status)).scalar_one()
            assert status == "APPROVED"
        assert pg_schema.count("unified_status_history") == 2
        assert adapter.check_consistency(made.entity_id)["consistent"]
    finally:
        adapter.close()
        application.dispose()


@pytest.mark.postgres
def test_the_schema_is_refused_when_the_database_lacks_it(pg: Database) -> None:
    """Settings naming a schema that was never installed: a clear error, not a write to
    public's tables (at the start: where the installation is, not a failed mode read)."""
    settings = load_settings(database_url=pg.url, schema="never_installed")
    engine = create_engine(pg.url, schema=settings.schema)
    try:
        with pytest.raises(ConfigError, match="installed in this database, in schema public"):
            DualWriteAdapter(engine, settings=settings)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_legacy_tables_in_a_schema_the_config_names_archive_retire_and_restore(
    fresh_pg: Callable[[], str], tmp_path: Path
) -> None:
    """The application keeps its tables in schema "shop" (legacy_tables.X.schema),
    unistatus in its own: the archive records where they are, retirement drops and its
    undo restores the status columns there, and a restore puts them back there."""
    url, target = fresh_pg(), fresh_pg()
    for each in (url, target):
        plain = create_engine(each)
        with plain.begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA shop")
        plain.dispose()
    shop = {s.value: {"table": LEGACY_NAME[s], "schema": "shop"} for s in LegacySystemType}
    settings = load_settings(database_url=url, schema=OWN_SCHEMA, legacy_tables=shop)
    engine = create_engine(url, schema=settings.schema)
    try:
        schema.upgrade(engine, settings)
        assert relation_names(engine, "shop") == LEGACY and not relation_names(engine, "public")
        set_mode(engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t", settings=settings)
        with DualWriteAdapter(engine, settings=settings, record_stats=False) as adapter:
            for ttype, step in (("WALLET_CASHOUT", "APPROVED"), ("ESCROW", "PAYMENT_PENDING")):
                made = adapter.create_transaction(ttype, 1, "5", "USD")
                assert made.entity_id
                assert adapter.update_status(made.entity_id, step, "t", "t").overall_success
        set_mode(engine, DualWriteMode.UNIFIED_ONLY, reason="phase 4", settings=settings)

        out = tmp_path / "archive"
        manifest = export_archive(engine, settings, out)
        assert {t.schema for t in manifest.tables} == {"shop"}
        report = verify_archive(engine, out)
        assert report.ok, report.problems
        record_verified(engine, report, actor="t")
        before = status_checksum(engine, settings)
        assert before["rows"] == 2

        assert retire_legacy_columns(engine, settings, actor="t", reason="t")["dropped"]
        columns = sa.inspect(engine).get_columns("cashouts", schema="shop")
        assert "status" not in {c["name"] for c in columns}
        undone = undo_cleanup(engine, settings, actor="t", reason="drill")
        assert undone["undone"] and undone["checksum_after"] == before

        restored = restore_archive(target, out)
        assert restored.verify.ok, restored.verify.problems
        check = create_engine(target)
        try:
            assert relation_names(check, "shop") == LEGACY
            assert not relation_names(check, "public")
        finally:
            check.dispose()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_capture_of_tables_another_installation_captures_names_it(
    fresh_pg: Callable[[], str],
) -> None:
    """Two installations over one set of legacy tables (`init --alongside`): enabling
    the capture in the second failed with the driver's 'trigger ... already exists'
    (exploratory review). It names the installation whose triggers are there."""
    url = fresh_pg()
    runner = CliRunner()
    assert runner.invoke(app, ["--database-url", url, "init"]).exit_code == 0
    first = runner.invoke(app, ["--database-url", url, "capture", "enable", "--reason", "t"])
    assert first.exit_code == 0, first.output
    env = {"UNISTATUS_SCHEMA": OWN_SCHEMA}
    made = runner.invoke(app, ["--database-url", url, "init", "--alongside"], env=env)
    assert made.exit_code == 0, made.output
    done = runner.invoke(
        app, ["--database-url", url, "capture", "enable", "--reason", "t"], env=env
    )
    assert done.exit_code == 2, done.output
    said = " ".join(done.output.split())
    assert "already exists" not in said, said
    assert "installation in schema public" in said and "capture disable" in said, said


@pytest.mark.postgres
@pytest.mark.parametrize("theirs", ["public", "tenant_42"])
def test_an_applications_own_schema_map_is_named_as_its_own(pg: Database, theirs: str) -> None:
    """An application's engine with a schema_translate_map of its own ({None: 'public'},
    a tenant's) was refused saying "this engine keeps unistatus's tables in schema
    'public', but the settings say schema = 'public'" (a probe): the message names the
    map as the engine's and says how to hand the engine over without it."""
    engine = sa.create_engine(pg.url).execution_options(schema_translate_map={None: theirs})
    try:
        with pytest.raises(ConfigError, match="schema_translate_map") as refused:
            DualWriteAdapter(engine, settings=pg.settings)
        assert "execution_options(schema_translate_map=None)" in str(refused.value)
        as_said = DualWriteAdapter(
            engine.execution_options(schema_translate_map=None), settings=pg.settings
        )
        assert as_said.create_transaction("ESCROW", 1, "5", "USD").overall_success
        as_said.close()
    finally:
        engine.dispose()
