"""Archive of the legacy tables: export, verify against a database, restore.

An archive is a directory: one gzip JSON-lines file per legacy table, rows in
primary-key order, and a ``manifest.json`` (the format:
:mod:`unistatus.migration.archive_format`). The gzip header has no name or time, so the
same rows export to the same bytes. A verified archive is recorded in the control table;
retiring the legacy status columns requires one. Operator's view: ``docs/runbook.md``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from unistatus.clock import utcnow
from unistatus.config import Settings
from unistatus.db.binding import schema_of
from unistatus.db.control import ControlChange, write_value
from unistatus.db.dialect import ops_for
from unistatus.db.engine import create_engine, display_url
from unistatus.db.infinite_times import infinite_times_as_text
from unistatus.db.legacy import resolve_legacy_tables
from unistatus.db.legacy_reflect import legacy_schema, reflect_legacy_table
from unistatus.db.mode_reads import MIXED, common_mode, read_modes, read_value
from unistatus.db.revisions import VERSION_TABLE, columns_retired
from unistatus.db.schema import current_revision
from unistatus.db.tables import control_log, migration_control
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError, StorageError
from unistatus.migration.archive_blocks import compress_lines
from unistatus.migration.archive_format import (
    MANIFEST,
    ColumnInfo,
    Manifest,
    TableEntry,
    check_files,
    read_manifest,
    sha256_file,
)
from unistatus.migration.archive_load import load_rows
from unistatus.migration.archive_place import discard, put_in_place, refuse_used, workspace
from unistatus.migration.archive_read import live_lines
from unistatus.migration.archive_replace import load_order, refuse_changing_references
from unistatus.migration.private_files import private

__all__ = [
    "RETIRED_NOT_RECORDED",
    "ColumnInfo",
    "Manifest",
    "RestoreReport",
    "TableEntry",
    "VerifyReport",
    "check_files",
    "compress_lines",
    "export_archive",
    "live_lines",
    "read_manifest",
    "record_verified",
    "recorded_archive",
    "restore_archive",
    "status_gaps",
    "verify_archive",
]

CONTROL_KEY = "archive"
# --- export -------------------------------------------------------------------------


def export_archive(
    engine: sa.Engine,
    settings: Settings,
    out: str | Path,
    *,
    actor: str = "cli",
    on_rows: Callable[[int], None] | None = None,
) -> Manifest:
    """Write every configured legacy table to ``out`` (new or empty), from one snapshot:
    into a directory of the export's own (beside a new ``out``, inside an existing one),
    put in place once complete (:mod:`unistatus.migration.archive_place`).
    ``on_rows(rows)``: called as the rows are read, with every table's so far."""
    directory = Path(out)
    refuse_used(directory)
    tables = resolve_legacy_tables(engine, settings, require_status=False)
    files = _file_names({system: lt.table.name for system, lt in tables.items()})
    work = workspace(directory)  # put in place, complete, at the end (archive_place)
    entries: list[TableEntry] = []
    try:
        with ops_for(engine).snapshot() as conn:
            installed = sa.inspect(conn).has_table(migration_control.name, schema=schema_of(conn))
            modes = read_modes(conn) if installed else None
            before = 0  # the rows of the tables done
            for system, lt in tables.items():
                columns = [ColumnInfo.of(c, engine.dialect) for c in lt.table.c]
                path = work / files[system]
                shown = None if on_rows is None else _shifted(on_rows, before)
                entry = _export_table(conn, lt.table, system.value, columns, path, shown)
                before += entry.rows
                if on_rows is not None:
                    on_rows(before)
                entry.schema = settings.legacy_tables[system.value].schema
                entries.append(entry)
        manifest = Manifest(
            created_at=utcnow().isoformat(),
            created_by=actor,
            source={
                "dialect": engine.dialect.name,
                "database": display_url(engine.url),
                "schema_revision": current_revision(engine),
                "mode": _mode_of(modes),
            },
            tables=entries,
        )
        raw = (json.dumps(manifest.as_dict(), indent=2, sort_keys=True) + "\n").encode()
        with open(work / MANIFEST, "wb", opener=private) as manifest_file:
            manifest_file.write(raw)
        put_in_place(work, directory)  # the archive appears last, complete
    except BaseException as exc:
        discard(work)
        if isinstance(exc, sa.exc.OperationalError):
            raise StorageError(f"export failed: {exc.orig}") from None
        if isinstance(exc, OSError):
            raise StorageError(
                f"cannot write the archive in {directory}: {exc.strerror or exc}"
            ) from None
        raise
    manifest.sha256 = hashlib.sha256(raw).hexdigest()
    return manifest


def _file_names(names: dict[LegacySystemType, str]) -> dict[LegacySystemType, str]:
    """Each system's file in the archive: its table's name, or ``<system>-<name>`` when
    another system's table has that name too (in another schema; compared as a
    case-insensitive file system would) or the name is no plain file name."""
    seen = [name.casefold() for name in names.values()]
    files = {}
    for system, name in names.items():
        plain = _PLAIN_FILE_NAME.fullmatch(name) and seen.count(name.casefold()) == 1
        stem = name if plain else f"{system.value.lower()}-{_UNSAFE.sub('_', name)}"
        files[system] = f"{stem}.jsonl.gz"
    return files


_PLAIN_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _shifted(on_rows: Callable[[int], None], before: int) -> Callable[[int], None]:
    """``on_rows`` told a table's rows so far on top of the ``before`` of the tables done."""
    return lambda rows: on_rows(before + rows)


def _export_table(
    conn: sa.Connection,
    table: sa.Table,
    system: str | None,
    columns: list[ColumnInfo],
    path: Path,
    on_block: Callable[[int], None] | None = None,
) -> TableEntry:
    name = path.name
    content = hashlib.sha256()
    with (
        open(path, "wb", opener=private) as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
    ):
        with infinite_times_as_text(conn):
            rows = compress_lines(live_lines(conn, table, columns), gz, content, on_block)
    return TableEntry(
        name=table.name,
        system=system,
        file=name,
        rows=rows,
        columns=columns,
        sha256=sha256_file(path),
        content_sha256=content.hexdigest(),
    )


# --- verify -------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """The archive checked against itself and against a database's live rows; once the
    legacy status columns are retired (``columns_retired``), against the archive recorded
    before the retirement instead: the live tables hold no status to compare with, and
    the archive is the only copy of the legacy statuses left."""

    directory: str
    manifest_sha256: str
    tables: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    columns_retired: bool = False
    recorded_manifest_sha256: str | None = None  # looked up only once they are retired

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def matches_recorded(self) -> bool | None:
        """Retired: whether this is the archive recorded before the retirement (else None)."""
        if not self.columns_retired:
            return None
        return self.manifest_sha256 == self.recorded_manifest_sha256

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "manifest_sha256": self.manifest_sha256,
            "ok": self.ok,
            "tables": self.tables,
            "problems": self.problems,
            "columns_retired": self.columns_retired,
            "recorded_manifest_sha256": self.recorded_manifest_sha256,
            "matches_recorded": self.matches_recorded,
        }


RETIRED_NOT_RECORDED = (
    "the legacy status columns are retired: no other archive can be recorded (the live "
    "tables hold no status to verify it against); the one recorded before the retirement "
    "stands (`unistatus retire legacy-columns --undo` first to record another)"
)


def verify_archive(engine: sa.Engine, directory: str | Path) -> VerifyReport:
    """Check the files, then compare counts and content digests with the live tables; or,
    once the legacy status columns are retired, the manifest with the one recorded."""
    manifest = read_manifest(directory)
    report = VerifyReport(str(Path(directory).resolve()), manifest.sha256)
    report.problems += check_files(directory, manifest)
    try:
        with ops_for(engine).snapshot() as conn:
            if _retired(conn):
                _compare_recorded(conn, manifest, report)
            else:
                for entry in manifest.tables:
                    report.tables.append(_compare_live(conn, entry, report.problems))
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read the database: {exc.orig}") from None
    return report


def _retired(conn: sa.Connection) -> bool:
    """The legacy status columns are retired (False for a database unistatus is not
    installed in: a restore drill's scratch database)."""
    installed = sa.inspect(conn).has_table(VERSION_TABLE, schema=schema_of(conn))
    return installed and columns_retired(conn)


def _compare_recorded(conn: sa.Connection, manifest: Manifest, report: VerifyReport) -> None:
    """The archive against the one recorded before the retirement: its manifest's sha256
    (whose per-file hashes :func:`check_files` held the files to) must be the recorded
    one, or the archive is not the one that was verified against the live statuses."""
    report.columns_retired = True
    recorded = recorded_archive(conn)
    report.recorded_manifest_sha256 = recorded.get("manifest_sha256") if recorded else None
    report.tables += [
        {"table": t.name, "archived_rows": t.rows, "live_rows": None} for t in manifest.tables
    ]
    if recorded is None:
        report.problems.append(
            "the legacy status columns are retired and no archive is recorded: "
            "nothing to check this one against"
        )
    elif not report.matches_recorded:
        report.problems.append(
            f"manifest sha256 {manifest.sha256} does not match the archive recorded before "
            f"the retirement (manifest sha256 {report.recorded_manifest_sha256}, "
            f"{recorded.get('path', 'path not recorded')})"
        )


def _compare_live(conn: sa.Connection, entry: TableEntry, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"table": entry.name, "archived_rows": entry.rows, "live_rows": None}
    table = reflect_legacy_table(conn, entry.spec)
    if table is None:
        problems.append(f"{entry.name}: no such table in the database")
        return out
    missing = [c.name for c in entry.columns if c.name not in table.c]
    if missing:
        problems.append(f"{entry.name}: columns missing in the database: {', '.join(missing)}")
        return out
    content, rows = hashlib.sha256(), 0
    with infinite_times_as_text(conn):
        for line in live_lines(conn, table, entry.columns):
            content.update(line)
            rows += 1
    out["live_rows"] = rows
    out["content_matches"] = content.hexdigest() == entry.content_sha256
    if rows != entry.rows:
        problems.append(f"{entry.name}: {rows} rows in the database, {entry.rows} archived")
    elif not out["content_matches"]:
        problems.append(f"{entry.name}: row values differ from the archive")
    return out


def status_gaps(manifest: Manifest, settings: Settings) -> list[str]:
    """What the archive lacks to stand for the legacy statuses: each configured legacy
    table not in it, or in it without its status column (exported while the columns were
    retired: it verifies against such tables, and would then let the retirement drop
    statuses that no archive holds)."""
    gaps: list[str] = []
    for system in LegacySystemType:
        spec = settings.legacy_tables[system.value]
        entry = next(
            (t for t in manifest.tables if t.system == system.value or t.name == spec.table), None
        )
        columns = {} if entry is None else {c.name: c for c in entry.columns}
        if entry is None:
            gaps.append(f"it does not contain legacy table {spec.table!r}")
        elif spec.status not in columns:
            gaps.append(
                f"it holds {spec.table} without its status column ({spec.table}.{spec.status}: "
                "exported while the columns were retired?): export a new archive once they "
                "are back"
            )
        elif spec.id not in columns:
            # Statuses that cannot be told whose: a hand-edited archive verifies (it
            # compares its own columns), and restores nothing. (A key or not: an id
            # unique by an index of its own is not the table's primary key.)
            gaps.append(
                f"it holds {spec.table} without its id column ({spec.table}.{spec.id}): "
                "no status in it can be told whose row's; export a new archive"
            )
    return gaps


def record_verified(
    engine: sa.Engine,
    report: VerifyReport,
    *,
    actor: str = "cli",
    settings: Settings | None = None,
) -> ControlChange:
    """Remember a verified archive in the control table (retirement requires one); an
    InputError once the legacy status columns are retired (:data:`RETIRED_NOT_RECORDED`).

    ``settings``: the archive must also hold every configured legacy table with its
    status column (:func:`status_gaps`), else an InputError and nothing recorded.
    """
    if not report.ok:
        raise InputError("only a verified archive can be recorded: " + "; ".join(report.problems))
    if report.columns_retired:
        raise InputError(RETIRED_NOT_RECORDED)
    if settings is not None:
        gaps = status_gaps(read_manifest(report.directory), settings)
        if gaps:
            raise InputError(
                "the archive cannot stand for the legacy statuses (not recorded): "
                + "; ".join(gaps)
            )
    meta = {
        "path": report.directory,
        "manifest_sha256": report.manifest_sha256,
        "verified_at": utcnow().isoformat(),
        "rows": {t["table"]: t["live_rows"] for t in report.tables},
    }
    with ops_for(engine).write_transaction() as conn:
        if _retired(conn):  # retired since the report was made
            raise InputError(RETIRED_NOT_RECORDED)
        return write_value(
            conn,
            CONTROL_KEY,
            report.manifest_sha256,
            actor=actor,
            reason=f"archive verified: {report.directory}",
            metadata=meta,
        )


def recorded_archive(database: sa.Engine | sa.Connection) -> dict[str, Any] | None:
    """The archive last recorded as verified: path, manifest sha256, time; or None."""
    if isinstance(database, sa.Engine):
        with database.connect() as conn:
            return recorded_archive(conn)
    value = read_value(database, CONTROL_KEY)
    if value is None:
        return None
    meta = database.execute(
        sa.select(control_log.c.meta)
        .where(control_log.c.key == CONTROL_KEY, control_log.c.new_value == value)
        .order_by(control_log.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return dict(meta) if isinstance(meta, dict) else {"manifest_sha256": value}


# --- restore ------------------------------------------------------------------------


@dataclass
class RestoreReport:
    directory: str
    database: str
    tables: list[dict[str, Any]]
    verify: VerifyReport

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "database": self.database,
            "tables": self.tables,
            "verified": self.verify.ok,
            "problems": self.verify.problems,
        }


def restore_archive(
    database: str | sa.Engine,
    directory: str | Path,
    *,
    replace: bool = False,
    overwrite_live: bool = False,
) -> RestoreReport:
    """Load an archive into a database: create missing tables; refuse non-empty ones
    unless ``replace``, and a database unistatus runs on (its legacy rows are live: the
    ones written since the export would be lost) unless ``overwrite_live`` too. One
    transaction: all tables load, or none does."""
    manifest = read_manifest(directory)
    problems = check_files(directory, manifest)
    if problems:
        raise InputError("the archive is damaged, nothing restored: " + "; ".join(problems))
    engine = create_engine(database)
    try:
        return _restore(engine, directory, manifest, replace, overwrite_live)
    finally:
        if engine is not database:  # made here for a URL: its connections go with it
            engine.dispose()


def _restore(
    engine: sa.Engine,
    directory: str | Path,
    manifest: Manifest,
    replace: bool,
    overwrite_live: bool,
) -> RestoreReport:
    ops = ops_for(engine)
    loaded: list[dict[str, Any]] = []
    try:
        with ops.write_transaction() as conn:
            if replace and not overwrite_live:
                _refuse_live(conn, manifest)
            tables = [_target_table(conn, entry, replace) for entry in manifest.tables]
            if replace:
                refuse_changing_references(conn, [t for t, created in tables if not created])
            # Every table emptied before any is loaded: a cascade between two of them
            # (deleting escrows) emptied the other, already loaded (a review).
            for table, created in tables:
                if replace and not created:
                    conn.execute(sa.delete(table))
            for i in load_order(conn, [t for t, _ in tables]):
                entry, (table, _) = manifest.tables[i], tables[i]
                load_rows(conn, table, entry, Path(directory) / entry.file)
                pk = [c for c in entry.columns if c.primary_key]
                if len(pk) == 1 and pk[0].kind == "integer":
                    ops.sync_identity(conn, table.c[pk[0].name])
            loaded = [
                {"table": entry.name, "rows": entry.rows, "created": created}
                for entry, (_, created) in zip(manifest.tables, tables, strict=True)
            ]
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"restore failed, nothing restored: {exc.orig}") from None
    verify = verify_archive(engine, directory)
    return RestoreReport(
        str(Path(directory).resolve()),
        display_url(engine.url),
        loaded,
        verify,
    )


def _refuse_live(conn: sa.Connection, manifest: Manifest) -> None:
    """InputError when ``conn``'s database holds unistatus's tables (in any schema): its
    legacy tables are the live ones, and replacing them loses every row written since
    the archive was taken."""
    inspector = sa.inspect(conn)
    schemas = inspector.get_schema_names() if conn.dialect.name == "postgresql" else [None]
    if not any(inspector.has_table(migration_control.name, schema=s) for s in schemas):
        return
    source = manifest.source.get("database") or "another database"
    raise InputError(
        f"{display_url(conn.engine.url)} is a live unistatus installation: --replace would "
        "delete its legacy rows and load the archive's (taken "
        f"{manifest.created_at} from {source}), losing every row written since; nothing "
        "restored. Restore into a scratch database (--database-url), or add "
        "--overwrite-live to replace the live rows anyway"
    )


def _target_table(conn: sa.Connection, entry: TableEntry, replace: bool) -> tuple[sa.Table, bool]:
    found = reflect_legacy_table(conn, entry.spec)
    if found is None:
        table = sa.Table(
            entry.name,
            sa.MetaData(),
            *(
                sa.Column(c.name, c.sa_type(), primary_key=c.primary_key, nullable=c.nullable)
                for c in entry.columns
            ),
            schema=legacy_schema(conn, entry.spec),
        )
        table.create(conn)
        return table, True
    table = found
    missing = [c.name for c in entry.columns if c.name not in table.c]
    if missing:
        raise InputError(
            f"table {entry.name} exists without columns {', '.join(missing)}; nothing restored"
        )
    if not replace and conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
        raise InputError(
            f"table {entry.name} is not empty; nothing restored (use --replace to overwrite)"
        )
    return table, False


def _mode_of(modes: dict[LegacySystemType, DualWriteMode] | None) -> str | None:
    """The mode of every system (``mixed`` while they differ; None: not installed)."""
    if modes is None:
        return None
    common = common_mode(modes)
    return common.value if common is not None else MIXED
