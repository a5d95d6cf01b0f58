"""The Alembic layout: a main chain `init` installs, retirement on its own branch, and
databases made by the release (installed at 0009, retired at 0006) upgrading cleanly.

The release's migrations are kept verbatim in ``old_layout/`` (see its README).
"""

from __future__ import annotations

import ast
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from conftest import Database
from unistatus.adapter.core import DualWriteAdapter
from unistatus.config import load_settings
from unistatus.db import schema
from unistatus.db.control import set_mode
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine
from unistatus.db.tables import cashouts
from unistatus.db.tables_ops import ERROR_KIND_COLUMNS, FINE_COLUMNS
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import StorageError
from unistatus.migration.archive import export_archive, record_verified, verify_archive
from unistatus.migration.retire import (
    legacy_columns_dropped,
    retire_legacy_columns,
    status_checksum,
    undo_cleanup,
)

OLD_LAYOUT = Path(__file__).parent / "old_layout"
# The indexes revision 0012 drops, so that status changes can be HOT.
DROPPED_BY_0012 = {
    "unified_transactions": {"ix_unified_status", "ix_unified_updated_at"},
    "unified_status_history": {"ix_history_legacy"},
}
VERSIONS = schema.MIGRATIONS / "versions"
LEGACY = ("cashouts", "escrows", "exchanges")

# --- the files --------------------------------------------------------------------------


def package_imports(path: Path) -> list[str]:
    """Every import of ``unistatus`` (or a relative one) in a file, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        else:
            continue
        found += [
            f"{path.name}:{node.lineno} {name}"
            for name in names
            if name.startswith(".") or name.split(".")[0] == "unistatus"
        ]
    return found


def test_no_migration_runs_application_code() -> None:
    """A revision is frozen when written: it imports nothing from the package."""
    files = sorted(VERSIONS.glob("*.py"))
    assert len(files) >= 9
    assert [hit for path in files for hit in package_imports(path)] == []
    # The check sees what it must: the release's 0006 imported its gates.
    assert len(package_imports(OLD_LAYOUT / "versions" / "0006_retire_legacy_columns.py")) >= 5


def chain(scripts: ScriptDirectory, head: str) -> list[Script]:
    """A branch's revisions, base first, following down_revision."""
    revisions = []
    script = scripts.get_revision(head)
    while script is not None:
        revisions.append(script)
        down = script.down_revision
        assert down is None or isinstance(down, str)  # no merges
        script = scripts.get_revision(down) if down else None
    return revisions[::-1]


def test_two_branches_and_file_names_that_tell_the_order() -> None:
    scripts = ScriptDirectory(str(schema.MIGRATIONS))
    main = chain(scripts, f"{schema.MAIN_BRANCH}@head")
    retire = chain(scripts, f"{schema.RETIRE_BRANCH}@head")

    assert main[0].revision == "0001" and main[-1].revision == schema.INSTALL_REVISION
    assert schema.RETIRE_REVISION not in {s.revision for s in main}
    main_files = [Path(s.path).name for s in main]
    assert main_files == sorted(main_files)
    assert all(Path(s.path).name.startswith(f"{s.revision}_") for s in main)

    # Retirement: its own branch, off the main chain at 0009 (frozen: the main chain moves
    # on past it without touching a retired database's 0006), ids kept.
    assert [s.revision for s in retire] == [schema.RETIRE_REVISION]
    assert [Path(s.path).name for s in retire] == ["r001_retire_legacy_columns.py"]
    assert retire[0].branch_labels == {schema.RETIRE_BRANCH}
    assert retire[0].dependencies == "0009"
    assert "0009" in {s.revision for s in main}
    assert max(main_files) < min(Path(s.path).name for s in retire)
    assert {Path(p).name for p in VERSIONS.glob("*.py")} == {
        Path(s.path).name for s in main + retire
    }

    assert schema.head_revisions() == (schema.INSTALL_REVISION, schema.RETIRE_REVISION)
    assert schema.head_revision() == schema.RETIRE_REVISION  # what diagnose reports


def test_alembic_heads_shows_the_main_head_and_the_retire_branch() -> None:
    out = io.StringIO()
    cfg = Config(stdout=out)
    cfg.set_main_option("script_location", str(schema.MIGRATIONS))
    command.heads(cfg)
    assert sorted(out.getvalue().splitlines()) == sorted(
        [
            f"{schema.INSTALL_REVISION} (main) (head)",
            f"{schema.RETIRE_REVISION} (retire) (head)",
        ]
    )


# --- a fresh install ---------------------------------------------------------------------


def status_columns(engine: sa.Engine) -> dict[str, bool]:
    inspector = sa.inspect(engine)
    return {t: "status" in {c["name"] for c in inspector.get_columns(t)} for t in LEGACY}


def test_init_installs_the_main_head_and_never_drops_the_columns(db: Database) -> None:
    assert schema.current_heads(db.engine) == (schema.INSTALL_REVISION,)
    assert all(status_columns(db.engine).values())
    assert schema.upgrade(db.engine, db.settings) == schema.INSTALL_REVISION  # `init` again
    assert schema.upgrade(db.engine, db.settings, "main@head") == schema.INSTALL_REVISION
    with pytest.raises(CommandError, match="Multiple head revisions"):
        schema.upgrade(db.engine, db.settings, "head")
    assert schema.current_heads(db.engine) == (schema.INSTALL_REVISION,)
    assert all(status_columns(db.engine).values())
    assert not legacy_columns_dropped(db.engine, db.settings)


# --- databases made by the release -------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], Database]]:
    """Makes empty databases (nothing installed) on one backend; drops them after."""
    engines: list[sa.Engine] = []
    names: list[str] = []
    admin: sa.Engine | None = None
    server: sa.URL | None = None
    if request.param == "postgres":
        server = sa.engine.make_url(request.getfixturevalue("postgres_url"))
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")

    def make(tag: str) -> Database:
        if server is None or admin is None:
            url = f"sqlite:///{tmp_path / tag}.db"
        else:
            name = f"{server.database}_{tag}"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            names.append(name)
            url = server.set(database=name).render_as_string(hide_password=False)
        engines.append(create_engine(url))
        return Database(request.param, url, engines[-1], load_settings(database_url=url))

    try:
        yield make
    finally:
        for engine in engines:
            engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                for name in names:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


def release_upgrade(db: Database, revision: str, **attributes: Any) -> None:
    """``upgrade`` as the release ran it: its migration files, its config attributes."""
    with ops_for(db.engine).write_transaction() as conn:
        cfg = schema.alembic_config(conn, db.settings)
        cfg.set_main_option("script_location", str(OLD_LAYOUT))
        cfg.attributes["settings"] = db.settings
        cfg.attributes.update(attributes)
        command.upgrade(cfg, revision)


def seed_and_freeze(db: Database, tmp_path: Path) -> dict[str, Any]:
    """Transactions written in dual-write, then phase 4 with a verified archive; returns
    the legacy status checksum."""
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    walks = {
        "WALLET_CASHOUT": ["OTP_PENDING", "APPROVED", "EXECUTING", "COMPLETED"],
        "ESCROW": ["PENDING_SELLER", "PAYMENT_PENDING"],
        "EXCHANGE": ["RATE_LOCKED"],
    }
    for ttype, steps in walks.items():
        created = adapter.create_transaction(ttype, 7, "10.50", "USD")
        assert created.overall_success and created.entity_id
        for step in steps:
            assert adapter.update_status(created.entity_id, step, "seed", "test").overall_success
    set_mode(db.engine, DualWriteMode.UNIFIED_ONLY, reason="test: phase 4")
    out = tmp_path / f"archive-{db.backend}"
    export_archive(db.engine, db.settings, out)
    record_verified(db.engine, verify_archive(db.engine, out), actor="test")
    return status_checksum(db.engine, db.settings)


def shape(engine: sa.Engine) -> dict[str, Any]:
    """The schema as the database reports it (column order aside), and its functions."""
    inspector = sa.inspect(engine)
    tables: dict[str, Any] = {}
    for table in inspector.get_table_names():
        tables[table] = {
            "columns": {
                c["name"]: (
                    c["type"].compile(dialect=engine.dialect),
                    c["nullable"],
                    str(c.get("default")),
                )
                for c in inspector.get_columns(table)
            },
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "checks": sorted(
                (c["name"], c["sqltext"]) for c in inspector.get_check_constraints(table)
            ),
            "foreign_keys": sorted(
                (f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
        }
    functions: list[str] = []
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            functions = sorted(
                conn.execute(
                    sa.text(
                        "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
                    )
                ).scalars()
            )
    return {"tables": tables, "functions": functions}


def test_a_database_installed_by_the_release_upgrades_to_a_fresh_install(
    new_database: Callable[[str], Database], tmp_path: Path
) -> None:
    old, fresh = new_database("release"), new_database("fresh")
    release_upgrade(old, "0009")
    assert schema.current_heads(old.engine) == ("0009",)
    assert schema.upgrade(fresh.engine, fresh.settings) == schema.INSTALL_REVISION

    assert schema.upgrade(old.engine, old.settings) == schema.INSTALL_REVISION  # `init`
    assert schema.current_heads(old.engine) == (schema.INSTALL_REVISION,)
    assert shape(old.engine) == shape(fresh.engine)
    assert all(status_columns(old.engine).values())

    # Retirement, now its own branch, applies to it and undoes.
    before = seed_and_freeze(old, tmp_path)
    assert retire_legacy_columns(old.engine, old.settings, actor="t", reason="t")["dropped"]
    assert set(schema.current_heads(old.engine)) == {schema.INSTALL_REVISION, "0006"}
    assert schema.current_revision(old.engine) == schema.RETIRE_REVISION
    assert not any(status_columns(old.engine).values())
    undone = undo_cleanup(old.engine, old.settings, actor="t", reason="t")
    assert undone["revision"] == schema.INSTALL_REVISION and undone["checksum_after"] == before
    assert shape(old.engine) == shape(fresh.engine)


@pytest.mark.usefixtures("staging_old_revisions")
def test_a_database_retired_by_the_release_stays_retired_and_undoes(
    new_database: Callable[[str], Database], tmp_path: Path
) -> None:
    old, fresh = new_database("retired"), new_database("fresh")
    release_upgrade(old, "0009")
    before = seed_and_freeze(old, tmp_path)
    release_upgrade(old, "0006", actor="ops", reason="phase 4 cleanup (release)")
    assert schema.current_heads(old.engine) == ("0006",)
    assert not any(status_columns(old.engine).values())
    retired_shape = shape(old.engine)

    # `init` of today: the main chain's revisions after 0009 (0010: a column of the stats
    # table; 0011: the capture's tables and the quarantine's writer; 0012: three indexes
    # dropped; 0013: the backfill workers' table; 0014: the check runs, two columns of the
    # check reports; 0015: the mode per system, a function; 0016: the stats' system column;
    # 0017: data only; 0018: the writer counts' index on last_seen_at, dropped; 0019: the
    # fine latency buckets; 0020: the stats' refused column; 0023: the stats' columns of
    # each kind of error), nothing else; still retired, and says so.
    assert schema.upgrade(old.engine, old.settings) == schema.RETIRE_REVISION
    assert schema.upgrade(old.engine, old.settings, "main@head") == schema.RETIRE_REVISION
    assert set(schema.current_heads(old.engine)) == {schema.INSTALL_REVISION, "0006"}
    after = shape(old.engine)
    added = {
        "unistatus_capture_writers",
        "unistatus_capture_changed",
        "unistatus_writer_marks",
        "unistatus_backfill_workers",
        "unistatus_check_runs",
    }
    assert set(after["tables"]) - set(retired_shape["tables"]) == added
    for table in added:
        retired_shape["tables"][table] = after["tables"][table]
    for table, new_columns in (
        (
            "unistatus_operation_stats",
            {"rolled_back", "system", "refused", *FINE_COLUMNS, *ERROR_KIND_COLUMNS},
        ),
        ("unistatus_backfill_quarantine", {"writer"}),
        ("unistatus_check_reports", {"complete", "run"}),
    ):
        columns = after["tables"][table]["columns"]
        assert set(columns) - set(retired_shape["tables"][table]["columns"]) == new_columns
        retired_shape["tables"][table]["columns"] = columns
    for table, names in DROPPED_BY_0012.items():
        indexes = retired_shape["tables"][table]["indexes"]
        assert {i[0] for i in indexes} >= names
        retired_shape["tables"][table]["indexes"] = [i for i in indexes if i[0] not in names]
    # 0015: unistatus_locked_mode(system), beside the one without an argument; 0021: the
    # control table's summary guard.
    guard = ["unistatus_control_summary_guard"] if old.backend == "postgres" else []
    assert after["functions"] == sorted([*retired_shape["functions"] * 2, *guard])
    retired_shape["functions"] = after["functions"]
    assert after == retired_shape
    assert legacy_columns_dropped(old.engine, old.settings)
    assert retire_legacy_columns(old.engine, old.settings)["already_dropped"]

    # The undo of today reads what the release's revision recorded, and restores exactly.
    undone = undo_cleanup(old.engine, old.settings, actor="ops", reason="rollback drill")
    assert undone["undone"] and undone["revision"] == schema.INSTALL_REVISION
    assert undone["checksum_after"] == before
    assert schema.current_heads(old.engine) == (schema.INSTALL_REVISION,)
    with old.engine.connect() as conn:
        assert "COMPLETED" in set(conn.execute(sa.select(cashouts.c.status)).scalars())
    assert schema.upgrade(fresh.engine, fresh.settings) == schema.INSTALL_REVISION
    assert shape(old.engine) == shape(fresh.engine)


def test_0010_adds_the_rolled_back_count_and_its_downgrade_drops_it(
    new_database: Callable[[str], Database],
) -> None:
    db = new_database("rolled_back")

    def stats_columns() -> set[str]:
        return {c["name"] for c in sa.inspect(db.engine).get_columns("unistatus_operation_stats")}

    with ops_for(db.engine).write_transaction() as conn:  # a row flushed before 0010
        cfg = schema.alembic_config(conn, db.settings)
        command.upgrade(cfg, "0009")
        conn.execute(
            sa.text(
                "INSERT INTO unistatus_operation_stats (process_id, interval_start, interval_end,"
                " operation, mode, count, errors, shadow_mismatches, latency_sum_ms,"
                " latency_max_ms) VALUES ('p', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP,"
                " 'update_status', 'LEGACY_ONLY', 3, 1, 0, 1.0, 1.0)"
            )
        )
    assert "rolled_back" not in stats_columns()
    assert schema.upgrade(db.engine, db.settings, "0010") == "0010"
    with db.engine.connect() as conn:
        q = "SELECT count, errors, rolled_back FROM unistatus_operation_stats"
        assert tuple(conn.execute(sa.text(q)).one()) == (3, 1, 0)
    assert schema.downgrade(db.engine, db.settings, "0009") == "0009"
    assert "rolled_back" not in stats_columns()
    assert schema.upgrade(db.engine, db.settings) == schema.INSTALL_REVISION


def index_names(engine: sa.Engine, table: str) -> set[str]:
    return {i["name"] for i in sa.inspect(engine).get_indexes(table) if i["name"]}


def unified_fillfactor(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        options = conn.execute(
            sa.text("SELECT reloptions FROM pg_class WHERE relname = 'unified_transactions'")
        ).scalar_one()
    return next((o for o in options or () if o.startswith("fillfactor=")), None)


def hot_updates(engine: sa.Engine, table: str = "unified_transactions") -> tuple[int, int]:
    """(updates, HOT updates) of ``table``, as the statistics have them."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = :t"),
            {"t": table},
        ).one()
    return int(row[0]), int(row[1])


@pytest.mark.usefixtures("staging_old_revisions")
def test_0012_drops_the_indexes_that_kept_status_changes_from_being_hot(
    new_database: Callable[[str], Database],
) -> None:
    """After 0012 no index covers a column a status change writes, so on PostgreSQL the
    adapter's status changes are HOT updates (the table's fillfactor leaves them room);
    the downgrade puts the indexes and the default fillfactor back."""
    db = new_database("hot")
    assert schema.upgrade(db.engine, db.settings, "0010") == "0010"
    for table, names in DROPPED_BY_0012.items():
        assert index_names(db.engine, table) >= names
    assert schema.upgrade(db.engine, db.settings, "0012") == "0012"
    for table, names in DROPPED_BY_0012.items():
        assert not index_names(db.engine, table) & names
    assert index_names(db.engine, "unified_status_history") == {"ix_history_transaction"}
    postgres = db.backend == "postgres"
    if postgres:
        assert unified_fillfactor(db.engine) == "fillfactor=90"

    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        ids = [
            adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id for _ in range(20)
        ]
        for status in ("PROCESSING", "AWAITING_RESPONSE", "PROCESSING"):
            for utx in ids:
                assert adapter.update_status(utx, status, "test", "test").changed
    if postgres:
        db.engine.dispose()  # each backend reports its counts when it exits
        for _ in range(100):
            updates, hot = hot_updates(db.engine)
            if updates >= 60:
                break
            time.sleep(0.1)
        # With those indexes no update could be HOT. Some still are not: on a page
        # where dead versions cannot be pruned yet (a snapshot still sees them), the
        # new version goes to another page.
        assert updates >= 60 and hot >= updates // 2, (updates, hot)

    assert schema.downgrade(db.engine, db.settings, "0010") == "0010"
    for table, names in DROPPED_BY_0012.items():
        assert index_names(db.engine, table) >= names
    if postgres:
        assert unified_fillfactor(db.engine) is None
    assert schema.upgrade(db.engine, db.settings) == schema.INSTALL_REVISION


def control_values(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT key, value FROM unistatus_control")).all()
    return {str(k): str(v) for k, v in rows if str(k).startswith("mode")}


@pytest.mark.usefixtures("staging_old_revisions")
def test_0015_gives_every_system_the_global_mode_and_its_downgrade_takes_it_back(
    new_database: Callable[[str], Database],
) -> None:
    """A database at 0014 with one global mode: after 0015 every system is in it (no
    control-log row: nothing changed); the downgrade refuses while the systems differ."""
    from unistatus.db.control import get_mode, get_modes, write_mode
    from unistatus.db.mode_reads import last_mode_change_at
    from unistatus.domain.statuses import LegacySystemType as S

    db = new_database("per_system")
    assert schema.upgrade(db.engine, db.settings, "0014") == "0014"
    with ops_for(db.engine).write_transaction() as conn:  # what 0014's set_mode wrote
        conn.execute(
            sa.text(
                "INSERT INTO unistatus_control (key, value, updated_at, updated_by) "
                "VALUES ('mode', 'DUAL_WRITE_UNIFIED_PRIMARY', CURRENT_TIMESTAMP, 'ops')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO unistatus_control_log (key, old_value, new_value, actor, reason,"
                " created_at) VALUES ('mode', 'DUAL_WRITE_LEGACY_PRIMARY',"
                " 'DUAL_WRITE_UNIFIED_PRIMARY', 'ops', 'phase 3', CURRENT_TIMESTAMP)"
            )
        )
    assert schema.upgrade(db.engine, db.settings, "0015") == "0015"
    every = dict.fromkeys(S, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY)
    assert get_modes(db.engine) == every
    assert get_mode(db.engine) is DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY
    with db.engine.connect() as conn:
        n_log = conn.execute(sa.text("SELECT count(*) FROM unistatus_control_log")).scalar()
        assert n_log == 1  # the upgrade logged nothing
        assert last_mode_change_at(conn, S.ESCROW) is not None  # the global row counts
    assert control_values(db.engine) == {
        "mode": "DUAL_WRITE_UNIFIED_PRIMARY",
        "mode.CASHOUT": "DUAL_WRITE_UNIFIED_PRIMARY",
        "mode.ESCROW": "DUAL_WRITE_UNIFIED_PRIMARY",
        "mode.EXCHANGE": "DUAL_WRITE_UNIFIED_PRIMARY",
    }
    # An adapter of today writes under each system's mode.
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        r = adapter.create_transaction("ESCROW", 1, "5", "USD")
        assert r.overall_success and r.mode is DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY

    with ops_for(db.engine).write_transaction() as conn:
        write_mode(conn, DualWriteMode.UNIFIED_ONLY, system=S.CASHOUT, actor="t", reason="t")
    assert "mode" not in control_values(db.engine)  # the summary: absent while they differ
    with pytest.raises(Exception, match="different modes"):
        schema.downgrade(db.engine, db.settings, "0014")
    with ops_for(db.engine).write_transaction() as conn:
        write_mode(conn, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, actor="t", reason="t")
    assert schema.downgrade(db.engine, db.settings, "0014") == "0014"
    assert control_values(db.engine) == {"mode": "DUAL_WRITE_UNIFIED_PRIMARY"}
    assert schema.upgrade(db.engine, db.settings) == schema.INSTALL_REVISION


def test_0015_on_a_database_never_switched_leaves_every_system_legacy_only(
    new_database: Callable[[str], Database],
) -> None:
    from unistatus.db.control import get_modes
    from unistatus.domain.statuses import LegacySystemType as S

    db = new_database("never_switched")
    assert schema.upgrade(db.engine, db.settings, "0014") == "0014"
    assert schema.upgrade(db.engine, db.settings, "0015") == "0015"
    assert control_values(db.engine) == {}
    assert get_modes(db.engine) == dict.fromkeys(S, DualWriteMode.LEGACY_ONLY)


def test_0015_keeps_a_frozen_copy_of_the_system_lock_key() -> None:
    from unistatus.db.mode_lock_keys import mode_lock_key, system_lock_key

    path = next(VERSIONS.glob("0015_*.py"))
    frozen: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), frozen)  # noqa: S102 - our own file
    for key in (mode_lock_key(None), mode_lock_key("unistatus"), mode_lock_key("a_b")):
        keys = {frozen["system_lock_key"](key, s) for s in ("CASHOUT", "ESCROW", "EXCHANGE")}
        assert keys == {system_lock_key(key, s) for s in ("CASHOUT", "ESCROW", "EXCHANGE")}
        assert key not in keys and len(keys) == 3
        assert all(0 < k < 2**63 for k in keys)


@pytest.mark.usefixtures("staging_old_revisions")
def test_0017_gives_every_system_the_global_phase_and_its_downgrade_takes_it_back(
    new_database: Callable[[str], Database],
) -> None:
    """A database at 0016 with one global phase: after 0017 every system is in it (no
    control-log row); the downgrade refuses while the systems are in different phases."""
    from unistatus.domain.statuses import LegacySystemType as S
    from unistatus.migration.phases import (
        phase_started_at,
        phase_status,
        read_phase,
        read_phases,
        write_phase,
    )

    db = new_database("phase_per_system")
    assert schema.upgrade(db.engine, db.settings, "0016") == "0016"
    with ops_for(db.engine).write_transaction() as conn:  # what phase advance wrote
        conn.execute(
            sa.text(
                "INSERT INTO unistatus_control (key, value, updated_at, updated_by) "
                "VALUES ('phase', '2', CURRENT_TIMESTAMP, 'ops')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO unistatus_control_log (key, old_value, new_value, actor, reason,"
                " created_at) VALUES ('phase', '1', '2', 'ops', 'backfill', CURRENT_TIMESTAMP)"
            )
        )
    assert schema.upgrade(db.engine, db.settings, "0017") == "0017"
    with db.engine.connect() as conn:
        assert read_phases(conn) == dict.fromkeys(S, 2)
        assert read_phase(conn) == read_phase(conn, S.ESCROW) == 2
        n_log = conn.execute(sa.text("SELECT count(*) FROM unistatus_control_log")).scalar()
        assert n_log == 1  # the upgrade logged nothing
    # When each system entered phase 2: the global row counts for every one.
    assert phase_started_at(db.engine, 2, S.EXCHANGE) is not None
    assert phase_status(db.engine, db.settings, S.CASHOUT).phase == 2

    with ops_for(db.engine).write_transaction() as conn:
        write_phase(
            conn, 3, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, system=S.CASHOUT,
            actor="t", reason="t", metadata={},
        )  # fmt: skip
    with db.engine.connect() as conn:
        assert read_phases(conn) == {S.CASHOUT: 3, S.ESCROW: 2, S.EXCHANGE: 2}
        assert read_phase(conn) == 3  # the furthest, for the emergency path's record
        summary = conn.execute(
            sa.text("SELECT count(*) FROM unistatus_control WHERE key = 'phase'")
        ).scalar()
        assert summary == 0  # absent while they differ
    with pytest.raises(Exception, match="different phases"):
        schema.downgrade(db.engine, db.settings, "0016")
    with ops_for(db.engine).write_transaction() as conn:
        write_phase(
            conn, 2, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, actor="t", reason="t", metadata={}
        )
    assert schema.downgrade(db.engine, db.settings, "0016") == "0016"
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT key, value FROM unistatus_control WHERE key LIKE 'phase%'")
        ).all()
    assert {str(k): str(v) for k, v in rows} == {"phase": "2"}
    assert schema.upgrade(db.engine, db.settings) == schema.INSTALL_REVISION


def test_0018_drops_the_index_that_kept_writer_counts_from_being_hot(
    new_database: Callable[[str], Database],
) -> None:
    """Every captured statement sets its writer's ``last_seen_at``: without an index on
    it (0018), on PostgreSQL that update is HOT; the downgrade puts the index back."""
    from unistatus.migration import capture

    index = {"ix_capture_writers_last_seen"}
    db = new_database("writers_hot")
    assert schema.upgrade(db.engine, db.settings, "0017") == "0017"
    assert index_names(db.engine, "unistatus_capture_writers") >= index
    assert schema.upgrade(db.engine, db.settings) == schema.INSTALL_REVISION == "0023"
    assert not index_names(db.engine, "unistatus_capture_writers") & index

    if db.backend == "postgres":
        set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
        with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
            created = adapter.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
        assert created.legacy_entity_id is not None
        capture.enable(db.engine, db.settings, actor="test", reason="test")
        try:
            with db.engine.connect() as conn:  # one statement, one transaction each
                for status in ("APPROVED", "EXECUTING", "AWAITING_RESPONSE") * 10:
                    conn.execute(
                        sa.text("UPDATE cashouts SET status = :s WHERE id = :id"),
                        {"s": status, "id": created.legacy_entity_id},
                    )
                    conn.commit()
        finally:
            capture.disable(db.engine, db.settings, actor="test", reason="test")
        db.engine.dispose()  # each backend reports its counts when it exits
        for _ in range(100):
            updates, hot = hot_updates(db.engine, "unistatus_capture_writers")
            if updates >= 29:
                break
            time.sleep(0.1)
        # The first statement inserted the row; each later one updated it.
        assert updates >= 29 and hot >= updates // 2, (updates, hot)

    assert schema.downgrade(db.engine, db.settings, "0017") == "0017"
    assert index_names(db.engine, "unistatus_capture_writers") >= index
    assert schema.upgrade(db.engine, db.settings) == schema.INSTALL_REVISION


def test_the_reference_legacy_tables_never_hand_a_deleted_rows_id_out_again(
    sqlite_db: Database,
) -> None:
    """SQLite gives a new row the largest rowid + 1 unless the key is AUTOINCREMENT: the
    id of a deleted newest cashout was handed out again, and its unified row (another
    transaction's money record) was taken for the new one's (exploratory review)."""
    from unistatus import DualWriteAdapter, DualWriteMode
    from unistatus.db.control import set_mode

    set_mode(sqlite_db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="t")
    a = DualWriteAdapter(sqlite_db.engine, settings=sqlite_db.settings)
    first = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").legacy_entity_id
    with sqlite_db.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM cashouts WHERE id = {first}")
    again = a.create_transaction("WALLET_CASHOUT", 2, "7", "EUR")
    assert again.overall_success and again.legacy_entity_id != first


@pytest.mark.postgres
def test_an_upgrade_waiting_for_a_lock_gives_up_rather_than_stall_the_writers(
    new_database: Callable[[str], Database],
) -> None:
    """`init` from 0017 while a session read `unistatus_operation_stats` for 25 s: 0018
    took `unistatus_capture_writers` exclusively, 0019 then waited for the reader with no
    lock timeout, and every captured legacy UPDATE waited behind it (exploratory review,
    an upgrade under live traffic). Each attempt now waits at most the settings'
    lock_timeout_ms; past its deadline it says why, nothing changed, and the next runs."""
    db = new_database("upgrade_locks")
    if db.backend != "postgres":
        pytest.skip("PostgreSQL's locks")
    assert schema.upgrade(db.engine, db.settings, "0017") == "0017"
    settings = db.settings.model_copy(update={"lock_timeout_ms": 300})
    with db.engine.connect() as reader:
        reader.execute(sa.text("SELECT count(*) FROM unistatus_operation_stats"))  # holds it
        started = time.monotonic()
        with pytest.raises(StorageError, match="nothing changed") as refused:
            schema.upgrade(db.engine, settings, deadline_seconds=2.0)
        assert time.monotonic() - started < 10
        assert "lock" in str(refused.value)
        # While it retried, a writer of the table it had taken exclusively was never held
        # longer than one attempt's lock timeout (here: it is free now).
        assert schema.current_revision(db.engine) == "0017"
        reader.rollback()
    assert schema.upgrade(db.engine, settings) == schema.INSTALL_REVISION
