"""The SQL of the backfill, generated from the mapping and the resolved legacy tables.

Every statement here is set-based: a batch is one ``INSERT ... SELECT`` over a primary
key range (status mapped by :func:`unistatus.domain.mapping.forward_case`, id derived by
:func:`unistatus.domain.ids.utx_id_sql`), plus one ``INSERT ... SELECT`` that sets aside the
unmappable rows of the same range. Nothing loops over rows in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

from unistatus.adapter.writes import unified_row
from unistatus.db.dialect import DialectOps
from unistatus.db.infinite_times import finite_time
from unistatus.db.legacy import DATA_COLUMNS, LEGACY_COLUMNS, LegacyTable
from unistatus.db.tables import unified_transactions as U
from unistatus.db.tables_backfill import backfill_quarantine as Q
from unistatus.domain.copyable import stored_as_bytes, uncopyable_clauses
from unistatus.domain.ids import outside_utx_range_sql, utx_id_sql
from unistatus.domain.mapping import forward_case
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import ConfigError

ORIGIN = "backfill"

# Why a row cannot be mapped, as stored in the quarantine.
NULL_STATUS = "null_status"
WRONG_CASE = "wrong_case"
UNKNOWN_STATUS = "unknown_status"
# SQLite keeps a BLOB in a text column: upper() reads its bytes as text, so 'PENDING' as
# bytes looked like a value in the wrong case. No mapping takes bytes.
STATUS_NOT_TEXT = "status_not_text"
# A legacy id beyond what a UTX id holds (domain.ids.require_migratable_id).
BEYOND_UTX_RANGE = "id_beyond_utx_range"


# The quarantine's columns its inserts write (the raw value: :func:`quarantined_raw`).
QUARANTINE_COLUMNS = [
    Q.c.system,
    Q.c.legacy_id,
    Q.c.raw_status,
    Q.c.reason,
    Q.c.first_seen_at,
    Q.c.last_seen_at,
]


def status_column(lt: LegacyTable) -> sa.ColumnElement[str]:
    """The legacy status as the backfill reads it (text: LegacyTable.read)."""
    if lt.status is None:
        raise ConfigError(
            f"legacy table {lt.name!r} has no status column (retired); nothing to backfill"
        )
    return lt.read("status")


def migratable(
    system: LegacySystemType,
    status: sa.ColumnElement[Any],
    legacy_id: sa.ColumnElement[Any],
    data: Mapping[str, sa.ColumnElement[Any]],
) -> sa.Case[Any]:
    """The unified status of a legacy row: its status mapped forward, NULL (set aside)
    when unmappable, when its id is beyond what a UTX id holds (its derived id would be
    the next system's), or when a shared field (``data``: DATA_COLUMNS) cannot go into a
    unified row (:func:`unistatus.domain.copyable.uncopyable_clauses`)."""
    return sa.case(
        (outside_utx_range_sql(legacy_id), sa.null()),
        *((problem, sa.null()) for problem, _ in uncopyable_clauses(data)),
        else_=forward_case(system, status),
    )


def shared_fields(columns: Any) -> dict[str, sa.ColumnElement[Any]]:
    """The shared fields (DATA_COLUMNS) of a row's columns named so (a subquery's ``.c``,
    a CTE's): what :func:`migratable` and :func:`unmappable_reason` judge."""
    return {name: columns[name] for name in DATA_COLUMNS}


def copied_fields(
    lt: LegacyTable, data: Mapping[str, sa.ColumnElement[Any]]
) -> dict[str, sa.ColumnElement[Any]]:
    """The shared fields ``data`` (as :func:`shared_fields` or :func:`legacy_data` give
    them) as a unified row takes them and is compared with them
    (:meth:`~unistatus.db.legacy.LegacyTable.as_copied`: a PostgreSQL text amount as a
    number). The copyable rule judges ``data`` as it is."""
    return {name: lt.as_copied(name, data[name]) for name in DATA_COLUMNS}


def legacy_data(lt: LegacyTable) -> dict[str, sa.ColumnElement[Any]]:
    """The legacy table's shared fields as statements read them (DATA_COLUMNS)."""
    return {name: lt.read(name) for name in DATA_COLUMNS}


def mapped_status(lt: LegacyTable) -> sa.Case[Any]:
    return migratable(lt.system, status_column(lt), lt.id, legacy_data(lt))


def in_range(lt: LegacyTable, start_id: Any, end_id: Any) -> sa.ColumnElement[bool]:
    """The chunk's key range (ints, or bind parameters in a reusable statement)."""
    return lt.id.between(start_id, end_id)


def backfilled_row(lt: LegacyTable, legacy: Mapping[str, Any], mapped: Any) -> dict[str, Any]:
    """The unified row of each legacy row of ``lt``, as SQL
    (:func:`unistatus.adapter.writes.unified_row`): ``legacy`` holds the legacy columns
    under LEGACY_COLUMNS names, ``mapped`` the status."""
    system = lt.system
    return unified_row(
        system,
        utx_id=utx_id_sql(system, legacy["id"]),
        legacy_id=legacy["id"],
        data=copied_fields(lt, legacy),
        status=mapped,
        legacy_status=legacy["status"],
        origin=ORIGIN,
        # A legacy row may lack either time (older rows, from before the column), or
        # hold an infinite one (PostgreSQL's, read as missing: finite_time): the other
        # one stands in, else the copy's.
        created_at=sa.func.coalesce(
            finite_time(legacy["created_at"]),
            finite_time(legacy["updated_at"]),
            sa.func.current_timestamp(),
        ),
        updated_at=sa.func.coalesce(
            finite_time(legacy["updated_at"]),
            finite_time(legacy["created_at"]),
            sa.func.current_timestamp(),
        ),
        literal=sa.literal,
    )


def insert_select(ops: DialectOps, row: Mapping[str, Any], *where: Any) -> Any:
    """INSERT INTO unified_transactions SELECT ``row`` WHERE ... ON CONFLICT DO NOTHING."""
    select = sa.select(*row.values()).where(*where)
    return ops.insert(U).from_select([U.c[k] for k in row], select).on_conflict_do_nothing()


def unified_insert(ops: DialectOps, lt: LegacyTable, where: sa.ColumnElement[bool]) -> Any:
    """INSERT INTO unified_transactions SELECT <mapped legacy rows> ON CONFLICT DO NOTHING.

    A unified row that already exists was written by the adapter (or an earlier run) and
    is at least as new as this copy, so it is never overwritten.
    """
    status = mapped_status(lt)
    legacy = {name: lt.read(name) for name in LEGACY_COLUMNS if name != "status"}
    row = backfilled_row(lt, {**legacy, "status": status_column(lt)}, status)
    return insert_select(ops, row, where, status.is_not(None))


def unmappable_reason(
    system: LegacySystemType,
    raw: sa.ColumnElement[Any],
    legacy_id: sa.ColumnElement[Any],
    data: Mapping[str, sa.ColumnElement[Any]],
) -> sa.Case[Any]:
    """Why a row is set aside: its id beyond the UTX range, a shared field the unified
    row cannot take, or its value NULL, bytes (SQLite), in the wrong case, or unknown."""
    return sa.case(
        (outside_utx_range_sql(legacy_id), BEYOND_UTX_RANGE),
        *uncopyable_clauses(data),
        (raw.is_(None), NULL_STATUS),
        (stored_as_bytes(raw), STATUS_NOT_TEXT),
        (forward_case(system, sa.func.upper(raw)).is_not(None), WRONG_CASE),
        else_=UNKNOWN_STATUS,
    )


# A raw value longer than the quarantine's column is kept as its first characters and its
# length ("XXXX...(65 chars)"): the statement that sets it aside (a bypass writer's own, a
# mode switch's catch-up, a backfill batch) must not fail on it. The legacy row keeps the
# whole value; the retry reads it there, never this image.
RAW_KEPT = 40


def quarantined_raw(raw: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``raw`` as the quarantine stores it: as it is when its column holds it, else cut
    (:data:`RAW_KEPT` characters, then ``...(<length> chars)``); a BLOB (SQLite) as the
    SQL literal of its bytes, ``X'50454E44494E47'``: text, that readers of the quarantine
    print and serialise, and never the text the bytes are not."""
    column = Q.c.raw_status.type
    assert isinstance(column, sa.String) and column.length is not None
    raw = _BytesShown(raw)
    length = sa.func.length(raw, type_=sa.Integer)
    cut = (
        sa.func.substr(raw, 1, RAW_KEPT, type_=sa.String)
        + sa.literal("...(", sa.String)
        + sa.cast(length, sa.String)
        + sa.literal(" chars)", sa.String)
    )
    return sa.case((length > column.length, cut), else_=raw)


class _BytesShown(ColumnElement[Any]):
    """A value as text when stored as a BLOB (SQLite: its SQL literal), else as it is."""

    inherit_cache = True
    type = sa.String()

    def __init__(self, value: sa.ColumnElement[Any]) -> None:
        self.value = value


@compiles(_BytesShown)
def _as_it_is(element: _BytesShown, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.value, **kw))


@compiles(_BytesShown, "sqlite")
def _sqlite_bytes_shown(element: _BytesShown, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    literal = "'X''' || hex(" + value + ") || ''''"
    return f"(CASE WHEN typeof({value}) = 'blob' THEN {literal} ELSE {value} END)"


def requarantine(stmt: Any) -> dict[str, Any]:
    """Seen again: refresh the raw value and reason, and re-open a resolved entry."""
    return {
        "raw_status": stmt.excluded.raw_status,
        "reason": stmt.excluded.reason,
        "last_seen_at": stmt.excluded.last_seen_at,
        "resolved_at": None,
        "resolution": None,
    }


def quarantine_insert(
    ops: DialectOps, lt: LegacyTable, where: sa.ColumnElement[bool], now: sa.ColumnElement[Any]
) -> Any:
    """Set the unmappable rows of a range aside (raw value, reason); re-opens resolved ones."""
    select = sa.select(
        sa.literal(lt.system.value, sa.String),
        lt.id,
        quarantined_raw(status_column(lt)),
        unmappable_reason(lt.system, status_column(lt), lt.id, legacy_data(lt)),
        now,
        now,
    ).where(where, mapped_status(lt).is_(None))
    stmt = ops.insert(Q).from_select(
        [
            Q.c.system,
            Q.c.legacy_id,
            Q.c.raw_status,
            Q.c.reason,
            Q.c.first_seen_at,
            Q.c.last_seen_at,
        ],
        select,
    )
    return stmt.on_conflict_do_update(
        index_elements=[Q.c.system, Q.c.legacy_id],
        set_={
            "raw_status": stmt.excluded.raw_status,
            "reason": stmt.excluded.reason,
            "last_seen_at": stmt.excluded.last_seen_at,
            "resolved_at": None,
            "resolution": None,
        },
    )


def dry_run_counts(lt: LegacyTable, high_water_mark: int) -> sa.Select[Any]:
    """(rows, unmappable, would insert) up to the high-water mark, writing nothing."""
    status = mapped_status(lt)
    exists = (
        sa.select(sa.literal(1))
        .where(U.c.legacy_system == lt.system.value, U.c.legacy_id == lt.id)
        .exists()
    )
    return sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(sa.case((status.is_(None), 1), else_=0)), 0),
        sa.func.coalesce(
            sa.func.sum(sa.case((sa.and_(status.is_not(None), ~exists), 1), else_=0)), 0
        ),
    ).where(lt.id <= high_water_mark)
