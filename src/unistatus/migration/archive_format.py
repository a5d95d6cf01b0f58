"""The archive's format: values as exact text, the manifest, and checking the files.

One gzip JSON-lines file per legacy table (a row per line, a JSON array in column order;
decimals, timestamps and bytes as exact text, timestamps with time zone in UTC; a JSON
column's value as its JSON text, SQL NULL as ``null``; a BLOB SQLite keeps in a column
of another kind as ``{"$bytes": "<base64>"}``) and a
``manifest.json`` (row counts, column types, where each table is, sha256 of each file
and of its content). Reading and writing databases: :mod:`unistatus.migration.archive`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

from unistatus.clock import as_utc
from unistatus.config import LegacyTableSpec
from unistatus.db.dialect import BIG_INTEGER
from unistatus.errors import InputError

__all__ = [
    "FORMAT",
    "JSON_TEXT",
    "MANIFEST",
    "ColumnInfo",
    "Manifest",
    "TableEntry",
    "check_files",
    "column_kind",
    "textual",
    "decode",
    "encode",
    "file_lines",
    "holds_bytes",
    "json_as_text",
    "json_from_text",
    "kept_bytes",
    "read_manifest",
    "row_encoder",
    "row_line",
    "sha256_file",
]

FORMAT = "unistatus-archive/1"
MANIFEST = "manifest.json"


# --- values <-> exact text ----------------------------------------------------------

# A JSON column's value as the JSON text the database holds (read cast to text, restored
# cast from it): SQL NULL is ``null`` in the line, JSON ``null`` is ``"null"``. Archives
# written before have the kind "json", the value itself in the line, where the two nulls
# were one (both restored as JSON null): still read, as they were written.
JSON_TEXT = "json_text"


def textual(type_: sa.types.TypeEngine[Any]) -> bool:
    """Whether a column's values reach Python as the text they are (or as a value whose
    str() is: a UUID); of another type without a kind of its own (an array, an interval,
    money), PostgreSQL's own text of it is archived (:mod:`unistatus.migration.archive`)."""
    return isinstance(type_, sa.String | sa.Uuid)


def column_kind(type_: sa.types.TypeEngine[Any]) -> str:
    """How a column's values are written as text (and read back)."""
    checks: list[tuple[type[Any], str]] = [
        (sa.Boolean, "boolean"),
        (sa.Integer, "integer"),
        (sa.Float, "float"),
        (sa.Numeric, "decimal"),
        (sa.DateTime, "datetime"),
        (sa.Date, "date"),
        (sa.JSON, JSON_TEXT),
        (sa.LargeBinary, "binary"),
    ]
    for cls, kind in checks:
        if isinstance(type_, cls):
            return kind
    return "string"


# A BLOB in a column of another kind (SQLite keeps one in any column: a status bound as
# bytes, SQLite 3.45's JSONB in a JSON column) as ``{"$bytes": "<base64>"}``: its repr
# ("b'PENDING'") was written, verified, and restored as that text. Read back as the same
# bytes (:func:`decode`) in a column of a kind whose values are never a JSON object
# (text, numbers, times, a JSON column's text): there the marker is unambiguous. In an
# archive of the kind "json" (written before :data:`JSON_TEXT`) a value is the
# application's own JSON, which may be any object, that one too: never read as the marker.
BYTES_KEY = "$bytes"
# The kinds whose archived value is never read as the bytes marker: binary (its bytes are
# base64 text) and json (an object shaped like the marker is the application's value).
NO_MARKER_KINDS = frozenset({"binary", "json"})
# The kind it is never written for: binary.
UNMARKED_KINDS = frozenset({"binary"})


def holds_bytes(value: Any) -> bool:
    return isinstance(value, bytes | bytearray | memoryview)


def _bytes_json(value: Any) -> dict[str, str]:
    return {BYTES_KEY: base64.b64encode(bytes(value)).decode("ascii")}


def kept_bytes(value: Any) -> bytes | None:
    """The bytes a decoded value of a non-binary column stands for (None: no bytes)."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(BYTES_KEY), str):
        return base64.b64decode(value[BYTES_KEY], validate=True)
    return None


def encode(kind: str, value: Any, *, timezone: bool = False) -> Any:
    """One value as JSON, exactly: text where JSON would round or lose the type; a value
    its column's type does not hold (SQLite keeps 'abc' in NUMERIC, 'not a date' in a
    DATETIME) as the text stored; bytes in a column of another kind as ``{"$bytes":
    "<base64>"}`` (never in a binary or a JSON column: :data:`UNMARKED_KINDS`)."""
    if kind not in UNMARKED_KINDS and holds_bytes(value):
        return _bytes_json(value)
    try:
        return _encoded(kind, value, timezone)
    except (InvalidOperation, TypeError, ValueError, AttributeError):
        return str(value)


def _encoded(kind: str, value: Any, timezone: bool) -> Any:
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
    return str(value)  # string, JSON_TEXT


def decode(kind: str, value: Any) -> Any:
    """:func:`encode` undone; a value kept as text (its type did not hold it) as text."""
    try:
        return _decoded(kind, value)
    except (InvalidOperation, TypeError, ValueError):
        return value


def _decoded(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind not in NO_MARKER_KINDS and (blob := kept_bytes(value)) is not None:
        return blob
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


def json_as_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """SQL: a JSON column's value as the archive reads it (:data:`JSON_TEXT`): its text;
    on SQLite a BLOB kept there as its bytes (cast, they were its text, and bytes that are
    no UTF-8 failed the export)."""
    return _JsonAsText(column)


class _JsonAsText(ColumnElement[Any]):
    inherit_cache = False  # built per exported table, never a hot path
    type = sa.Text()

    def __init__(self, column: sa.ColumnElement[Any]) -> None:
        self.column = column


@compiles(_JsonAsText)
def _json_cast_to_text(element: _JsonAsText, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(sa.cast(element.column, sa.Text), **kw))


@compiles(_JsonAsText, "sqlite")
def _sqlite_json_as_text(element: _JsonAsText, compiler: SQLCompiler, **kw: Any) -> str:
    column = element.column
    as_read = sa.case((sa.func.typeof(column) == "blob", column), else_=sa.cast(column, sa.Text))
    return str(compiler.process(as_read, **kw))


def json_from_text(text: sa.ColumnElement[Any], type_: sa.types.TypeEngine[Any]) -> Any:
    """SQL: a JSON column's value from its archived text (:data:`JSON_TEXT`), as the
    column of type ``type_`` takes it: SQL NULL from NULL, the text as it is (bound
    through the column's type, NULL would be JSON null and the text a JSON string)."""
    return _JsonFromText(text, type_)


class _JsonFromText(ColumnElement[Any]):
    inherit_cache = False  # built per restored table, never a hot path

    def __init__(self, text: sa.ColumnElement[Any], type_: sa.types.TypeEngine[Any]) -> None:
        self.text = text
        self.type = type_


@compiles(_JsonFromText)
def _json_text_as_is(element: _JsonFromText, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite: the text as the application wrote it (a CAST to JSON's NUMERIC affinity
    # would read 'null' as 0; the column's affinity converts only what is a number).
    return str(compiler.process(element.text, **kw))


@compiles(_JsonFromText, "postgresql")
def _postgres_json_from_text(element: _JsonFromText, compiler: SQLCompiler, **kw: Any) -> str:
    # PostgreSQL assigns no text to json or jsonb: cast.
    return str(compiler.process(sa.cast(element.text, element.type), **kw))


def _value_encoder(kind: str, timezone: bool) -> Callable[[Any], Any]:
    """:func:`encode` of one column, chosen once: the export calls it per value."""
    if kind in ("integer", "boolean", "json"):
        return _same
    if kind in ("string", JSON_TEXT):
        return _text
    return partial(encode, kind, timezone=timezone)


def _keeping_bytes(encoder: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``encoder``, with bytes written as :func:`encode` writes them (a BLOB SQLite keeps
    in a column of another kind)."""

    def either(value: Any) -> Any:
        return _bytes_json(value) if holds_bytes(value) else encoder(value)

    return either


def _same(value: Any) -> Any:
    return value


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def row_encoder(columns: Sequence[tuple[str, bool]]) -> Callable[[Sequence[Any]], bytes]:
    """A row of these columns (``(kind, timezone)`` each) as its archive line: the
    same bytes as :func:`row_line` of :func:`encode` of each value."""
    encoders = [
        _keeping_bytes(_value_encoder(kind, timezone))
        if kind not in UNMARKED_KINDS
        else _value_encoder(kind, timezone)
        for kind, timezone in columns
    ]

    def line(row: Sequence[Any]) -> bytes:
        return row_line([f(v) for f, v in zip(encoders, row, strict=True)])

    return line


_LINE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def row_line(row: Sequence[Any]) -> bytes:
    return (_LINE.encode(list(row)) + "\n").encode()


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
            JSON_TEXT: sa.JSON(),
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
        file = d["file"]
        if not isinstance(file, str) or file in ("", ".", "..") or Path(file).name != file:
            # One elsewhere verified where it lay, and was lost with the directory moved.
            raise ValueError(
                f"file {file!r}: not a file name of the archive's own (a name in its directory)"
            )
        return cls(
            name=d["name"],
            system=d.get("system"),
            file=file,
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_lines(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as f:
        yield from f


def check_files(directory: str | Path, manifest: Manifest) -> list[str]:
    """Problems with the archive's own files: missing, altered, or unreadable."""
    problems: list[str] = []
    for entry in manifest.tables:
        path = Path(directory) / entry.file
        if not path.is_file():
            problems.append(f"{entry.file}: missing")
            continue
        if sha256_file(path) != entry.sha256:
            problems.append(f"{entry.file}: sha256 differs from the manifest (file altered)")
            continue
        content, rows = hashlib.sha256(), 0
        try:
            for line in file_lines(path):
                content.update(line)
                rows += 1
        except (OSError, EOFError) as exc:
            problems.append(f"{entry.file}: unreadable ({exc})")
            continue
        if rows != entry.rows or content.hexdigest() != entry.content_sha256:
            problems.append(f"{entry.file}: content differs from the manifest")
    return problems
