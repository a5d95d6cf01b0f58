"""An archive file's rows written into a table: the restore's inserts.

Each value is decoded from its archived text (:func:`~unistatus.migration.archive_format.decode`);
a BLOB SQLite kept in a column of another kind is bound as bytes, and a JSON column's
text is written as the column takes it (:func:`~unistatus.migration.archive_format.json_from_text`),
so its SQL NULL stays SQL NULL. Reading, exporting and verifying:
:mod:`unistatus.migration.archive`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import sqlalchemy as sa

from unistatus.migration.archive_format import (
    JSON_TEXT,
    TableEntry,
    decode,
    file_lines,
    holds_bytes,
    json_from_text,
    textual,
)

__all__ = ["LOAD_BATCH_ROWS", "load_rows"]

LOAD_BATCH_ROWS = 2_000


def load_rows(conn: sa.Connection, table: sa.Table, entry: TableEntry, path: Path) -> None:
    """Insert the rows of ``entry``'s archive file (``path``) into ``table``, in batches."""
    names = [c.name for c in entry.columns]
    kinds = [c.kind for c in entry.columns]
    # A JSON column's text as the column takes it (json_from_text): bound through the
    # column's JSON type, None would be JSON null and the text a JSON string.
    as_json = {
        c.name: json_from_text(sa.bindparam(c.name, type_=sa.Text), table.c[c.name].type)
        for c in entry.columns
        if c.kind == JSON_TEXT
    }
    # A value PostgreSQL wrote as its own text (an array, an interval, money:
    # archive.textual) is read back by its input, cast to the column's type: bound
    # through that type, an array's text was taken for a list of characters.
    as_cast = {
        c.name: sa.cast(sa.bindparam(c.name, type_=sa.Text), table.c[c.name].type)
        for c in entry.columns
        if c.kind == "string"
        and conn.dialect.name == "postgresql"
        and not textual(table.c[c.name].type)
        and not isinstance(table.c[c.name].type, sa.types.NullType)  # bound untyped
    }
    as_json = {**as_json, **as_cast}
    stmt = sa.insert(table).values(as_json)
    for batch in _batches(file_lines(path), LOAD_BATCH_ROWS):
        rows = []
        for line in batch:
            values = json.loads(line)
            row = {n: decode(k, v) for n, k, v in zip(names, kinds, values, strict=True)}
            blobs = [
                n
                for n, k in zip(names, kinds, strict=True)
                if k != "binary" and holds_bytes(row[n])
            ]
            if blobs:
                # Bound as bytes, past the column type's conversion (a NUMERIC's reads
                # b'10' as 10.0): the BLOB SQLite held, restored as one.
                typed = {n: sa.literal(row[n], sa.LargeBinary()) for n in blobs}
                as_text = {
                    n: json_from_text(sa.literal(row[n], sa.Text), table.c[n].type)
                    if n not in as_cast
                    else sa.cast(sa.literal(row[n], sa.Text), table.c[n].type)
                    for n in as_json
                }
                conn.execute(sa.insert(table).values({**row, **as_text, **typed}))
                continue
            rows.append(row)
        if rows:
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
