"""Archive of the legacy tables: export, verify against a database, restore.

An archive is a directory: one gzip JSON-lines file per legacy table (a row per line in
primary-key order, a JSON array in column order; decimals, timestamps and bytes as exact
text, timestamps with time zone in UTC) and a ``manifest.json`` (row counts, column types,
sha256 of each file and of its content). The gzip header has no name or time, so the same
rows export to the same bytes. A verified archive is recorded in the control table;
retiring the legacy status columns requires one. Operator's view: ``docs/runbook.md``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from unistatus.clock import as_utc, utcnow
from unistatus.config import LegacyTableSpec, Settings
from unistatus.db.binding import schema_of
from unistatus.db.control import ControlChange, read_mode, read_value, write_value
from unistatus.db.dialect import BIG_INTEGER, ops_for
from unistatus.db.engine import create_engine, display_url
from unistatus.db.legacy import legacy_schema, reflect_legacy_table, resolve_legacy_tables
from unistatus.db.schema import current_revision
from unistatus.db.tables import control_log, migration_control
from unistatus.errors import InputError, StorageError

__all__ = [
    "ColumnInfo",
    "Manifest",
    "RestoreReport",
    "TableEntry",
    "VerifyReport",
    "check_files",
    "export_archive",
    "read_manifest",
    "record_verified",
    "recorded_archive",
    "restore_archive",
    "verify_archive",
]

FORMAT = "unistatus-archive/1"
MANIFEST = "manifest.json"
CONTROL_KEY = "archive"
BATCH_ROWS = 2_000


# --- values <-> exact text ----------------------------------------------------------


def column_kind(type_: sa.types.TypeEngine[Any]) -> str:
    """How a column's values are written as text (and read back)."""
    checks: list[tuple[type[Any], str]] = [
        (sa.Boolean, "boolean"),
        (sa.Integer, "integer"),
        (sa.Float, "float"),
        (sa.Numeric, "decimal"),
        (sa.DateTime, "datetime"),
        (sa.Date, "date"),
        (sa.JSON, "json"),
        (sa.LargeBinary, "binary"),
    ]
    for cls, kind in checks:
        if isinstance(type_, cls):
            return kind
    return "string"


def encode(kind: str, value: Any, *, timezone: bool = False) -> Any:
    """One value as JSON, exactly: text where JSON would round or lose the type."""
    if value is None:
        return None
    if kind == "decimal":
        return format(Decimal(value), "f")
    if kind == "datetime":
        if timezone:
            value = as_utc(value)
        return str(value.isoformat())
    if kind == "date":
        return str(value.isoformat())
    if kind == "binary":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind in ("integer", "boolean", "json"):
        return value
    if kind == "float":
        return repr(float(value))
    return str(value)


def decode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "decimal":
        return Decimal(value)
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "binary":
        return base64.b64decode(value)
    if kind == "float":
        return float(value)
    if kind == "integer":
        return int(value)
    if kind == "boolean":
        return bool(value)
    return value


def _line(row: Sequence[Any]) -> bytes:
    return (json.dumps(list(row), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


# --- manifest -----------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    kind: str
    nullable: bool
    primary_key: bool
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    timezone: bool = False

    @classmethod
    def of(cls, column: sa.Column[Any], dialect: sa.Dialect) -> ColumnInfo:
        t = column.type
        return cls(
            name=column.name,
            type=str(t.compile(dialect=dialect)),
            kind=column_kind(t),
            nullable=bool(column.nullable),
            primary_key=bool(column.primary_key),
            length=getattr(t, "length", None),
            precision=getattr(t, "precision", None) if isinstance(t, sa.Numeric) else None,
            scale=getattr(t, "scale", None) if isinstance(t, sa.Numeric) else None,
            timezone=bool(getattr(t, "timezone", False)),
        )

    def sa_type(self) -> sa.types.TypeEngine[Any]:
        """A portable type for this column, to create the table in any database."""
        if self.kind == "integer":
            return BIG_INTEGER
        if self.kind == "decimal":
            return sa.Numeric(self.precision, self.scale)
        if self.kind == "datetime":
            return sa.DateTime(timezone=self.timezone)
        simple: dict[str, sa.types.TypeEngine[Any]] = {
            "float": sa.Float(),
            "date": sa.Date(),
            "boolean": sa.Boolean(),
            "json": sa.JSON(),
            "binary": sa.LargeBinary(),
        }
        if self.kind in simple:
            return simple[self.kind]
        return sa.String(self.length) if self.length else sa.Text()


@dataclass
class TableEntry:
    name: str
    system: str | None
    file: str
    rows: int
    columns: list[ColumnInfo]
    sha256: str
    content_sha256: str
    # The table's schema when the config names one (legacy_tables.X.schema); None: the
    # bare name, found where the database's search_path finds it.
    schema: str | None = None

    @property
    def spec(self) -> LegacyTableSpec:
        """Where the table is, as a legacy table spec (to find it the one way)."""
        return LegacyTableSpec(table=self.name, schema=self.schema)

    @property
    def primary_key(self) -> list[str]:
        return [c.name for c in self.columns if c.primary_key]

    def as_dict(self) -> dict[str, Any]:
        # "schema" only when there is one: the manifests of tables found by their bare
        # name stay byte for byte what they were before the key existed.
        where = {} if self.schema is None else {"schema": self.schema}
        return {
            "name": self.name,
            **where,
            "system": self.system,
            "file": self.file,
            "rows": self.rows,
            "primary_key": self.primary_key,
            "columns": [c.__dict__ for c in self.columns],
            "sha256": self.sha256,
            "content_sha256": self.content_sha256,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableEntry:
        return cls(
            name=d["name"],
            system=d.get("system"),
            file=d["file"],
            rows=int(d["rows"]),
            columns=[ColumnInfo(**c) for c in d["columns"]],
            sha256=d["sha256"],
            content_sha256=d["content_sha256"],
            schema=d.get("schema"),
        )


@dataclass
class Manifest:
    created_at: str
    created_by: str
    source: dict[str, Any]
    tables: list[TableEntry]
    sha256: str = ""  # of manifest.json as written (not part of the file itself)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "source": self.source,
            "tables": [t.as_dict() for t in self.tables],
        }


def read_manifest(directory: str | Path) -> Manifest:
    path = Path(directory) / MANIFEST
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except FileNotFoundError:
        raise InputError(f"{directory} is not an archive: no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a {FORMAT} manifest")
    try:
        tables = [TableEntry.from_dict(t) for t in data["tables"]]
        manifest = Manifest(data["created_at"], data["created_by"], data["source"], tables)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: malformed manifest ({exc})") from None
    manifest.sha256 = hashlib.sha256(raw).hexdigest()
    return manifest


# --- reading live rows --------------------------------------------------------------


def _ordered_select(table: sa.Table, columns: Sequence[ColumnInfo]) -> sa.Select[Any]:
    cols = [table.c[c.name] for c in columns]
    order = [table.c[c.name] for c in columns if c.primary_key] or cols
    return sa.select(*cols).order_by(*order)


def _live_lines(
    conn: sa.Connection, table: sa.Table, columns: Sequence[ColumnInfo]
) -> Iterator[bytes]:
    kinds = [(c.kind, c.timezone) for c in columns]
    result = conn.execution_options(yield_per=BATCH_ROWS).execute(_ordered_select(table, columns))
    for row in result:
        yield _line([encode(k, v, timezone=tz) for (k, tz), v in zip(kinds, row, strict=True)])


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_lines(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as f:
        yield from f


# --- export -------------------------------------------------------------------------


def export_archive(
    engine: sa.Engine, settings: Settings, out: str | Path, *, actor: str = "cli"
) -> Manifest:
    """Write every configured legacy table to ``out`` (new or empty), from one snapshot."""
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory")
    if directory.exists() and any(directory.iterdir()):
        raise InputError(f"{directory} is not empty: export into a new directory")
    tables = resolve_legacy_tables(engine, settings, require_status=False)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the archive directory {directory}: {exc.strerror or exc}"
        ) from None
    entries: list[TableEntry] = []
    try:
        with ops_for(engine).snapshot() as conn:
            installed = sa.inspect(conn).has_table(migration_control.name, schema=schema_of(conn))
            mode = read_mode(conn) if installed else None
            for system, lt in tables.items():
                columns = [ColumnInfo.of(c, engine.dialect) for c in lt.table.c]
                entry = _export_table(conn, lt.table, system.value, columns, directory)
                entry.schema = settings.legacy_tables[system.value].schema
                entries.append(entry)
    except sa.exc.OperationalError as exc:
        raise StorageError(f"export failed: {exc.orig}") from None
    except OSError as exc:
        raise StorageError(
            f"cannot write the archive in {directory}: {exc.strerror or exc}"
        ) from None
    manifest = Manifest(
        created_at=utcnow().isoformat(),
        created_by=actor,
        source={
            "dialect": engine.dialect.name,
            "database": display_url(engine.url),
            "schema_revision": current_revision(engine),
            "mode": mode.value if mode else None,
        },
        tables=entries,
    )
    raw = (json.dumps(manifest.as_dict(), indent=2, sort_keys=True) + "\n").encode()
    tmp = directory / (MANIFEST + ".tmp")
    try:
        tmp.write_bytes(raw)
        os.replace(tmp, directory / MANIFEST)  # the manifest appears last, complete
    except OSError as exc:
        raise StorageError(
            f"cannot write the archive in {directory}: {exc.strerror or exc}"
        ) from None
    manifest.sha256 = hashlib.sha256(raw).hexdigest()
    return manifest


def _export_table(
    conn: sa.Connection,
    table: sa.Table,
    system: str | None,
    columns: list[ColumnInfo],
    directory: Path,
) -> TableEntry:
    name = f"{table.name}.jsonl.gz"
    path = directory / name
    content = hashlib.sha256()
    rows = 0
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for line in _live_lines(conn, table, columns):
            gz.write(line)
            content.update(line)
            rows += 1
    return TableEntry(
        name=table.name,
        system=system,
        file=name,
        rows=rows,
        columns=columns,
        sha256=_sha256_file(path),
        content_sha256=content.hexdigest(),
    )


# --- verify -------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """The archive checked against itself and against a database's live rows."""

    directory: str
    manifest_sha256: str
    tables: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "manifest_sha256": self.manifest_sha256,
            "ok": self.ok,
            "tables": self.tables,
            "problems": self.problems,
        }


def check_files(directory: str | Path, manifest: Manifest) -> list[str]:
    """Problems with the archive's own files: missing, altered, or unreadable."""
    problems: list[str] = []
    for entry in manifest.tables:
        path = Path(directory) / entry.file
        if not path.is_file():
            problems.append(f"{entry.file}: missing")
            continue
        if _sha256_file(path) != entry.sha256:
            problems.append(f"{entry.file}: sha256 differs from the manifest (file altered)")
            continue
        content, rows = hashlib.sha256(), 0
        try:
            for line in _file_lines(path):
                content.update(line)
                rows += 1
        except (OSError, EOFError) as exc:
            problems.append(f"{entry.file}: unreadable ({exc})")
            continue
        if rows != entry.rows or content.hexdigest() != entry.content_sha256:
            problems.append(f"{entry.file}: content differs from the manifest")
    return problems


def verify_archive(engine: sa.Engine, directory: str | Path) -> VerifyReport:
    """Check the files, then compare counts and content digests with the live tables."""
    manifest = read_manifest(directory)
    report = VerifyReport(str(Path(directory).resolve()), manifest.sha256)
    report.problems += check_files(directory, manifest)
    try:
        with ops_for(engine).snapshot() as conn:
            for entry in manifest.tables:
                report.tables.append(_compare_live(conn, entry, report.problems))
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot read the database: {exc.orig}") from None
    return report


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
    for line in _live_lines(conn, table, entry.columns):
        content.update(line)
        rows += 1
    out["live_rows"] = rows
    out["content_matches"] = content.hexdigest() == entry.content_sha256
    if rows != entry.rows:
        problems.append(f"{entry.name}: {rows} rows in the database, {entry.rows} archived")
    elif not out["content_matches"]:
        problems.append(f"{entry.name}: row values differ from the archive")
    return out


def record_verified(
    engine: sa.Engine, report: VerifyReport, *, actor: str = "cli"
) -> ControlChange:
    """Remember a verified archive in the control table (retirement requires one)."""
    if not report.ok:
        raise InputError("only a verified archive can be recorded: " + "; ".join(report.problems))
    meta = {
        "path": report.directory,
        "manifest_sha256": report.manifest_sha256,
        "verified_at": utcnow().isoformat(),
        "rows": {t["table"]: t["live_rows"] for t in report.tables},
    }
    with ops_for(engine).write_transaction() as conn:
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
    database: str | sa.Engine, directory: str | Path, *, replace: bool = False
) -> RestoreReport:
    """Load an archive into a database: create missing tables; refuse non-empty ones
    unless ``replace``. One transaction: all tables load, or none does."""
    manifest = read_manifest(directory)
    problems = check_files(directory, manifest)
    if problems:
        raise InputError("the archive is damaged, nothing restored: " + "; ".join(problems))
    engine = create_engine(database)
    ops = ops_for(engine)
    loaded: list[dict[str, Any]] = []
    try:
        with ops.write_transaction() as conn:
            tables = [_target_table(conn, entry, replace) for entry in manifest.tables]
            for entry, (table, created) in zip(manifest.tables, tables, strict=True):
                if replace and not created:
                    conn.execute(sa.delete(table))
                _load(conn, table, entry, Path(directory) / entry.file)
                pk = [c for c in entry.columns if c.primary_key]
                if len(pk) == 1 and pk[0].kind == "integer":
                    ops.sync_identity(conn, table.c[pk[0].name])
                loaded.append({"table": entry.name, "rows": entry.rows, "created": created})
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"restore failed, nothing restored: {exc.orig}") from None
    verify = verify_archive(engine, directory)
    return RestoreReport(
        str(Path(directory).resolve()),
        display_url(engine.url),
        loaded,
        verify,
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


def _load(conn: sa.Connection, table: sa.Table, entry: TableEntry, path: Path) -> None:
    names = [c.name for c in entry.columns]
    kinds = [c.kind for c in entry.columns]
    stmt = sa.insert(table)
    for batch in _batches(_file_lines(path), BATCH_ROWS):
        rows = []
        for line in batch:
            values = json.loads(line)
            rows.append({n: decode(k, v) for n, k, v in zip(names, kinds, values, strict=True)})
        conn.execute(stmt, rows)


def _batches(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
