"""Revision 0006's SQLite table work: a legacy table's definition kept through the drop of
its status column and the undo.

Part of revision 0006 (versions/r001_retire_legacy_columns.py), frozen with it: the
revision loads this file by its path (it imports nothing of the package, whose code may
change after it was written), and this file imports nothing of the package either. Kept
apart only for the package's limit on a module's length.

A table copy made from reflection (``op.batch_alter_table``) writes a CREATE TABLE of its
own: ``AUTOINCREMENT`` gone, and the table's ``sqlite_sequence`` row with it (SQLite then
hands the newest row's id out again once it is deleted), a DEFAULT, a CHECK or a
collation of the table's own lost, a column added back last. So:

* the drop records the table's CREATE statement (``sqlite_master.sql``) and its sequence,
  then drops the column in place (``ALTER TABLE ... DROP COLUMN``, SQLite 3.35): the rest
  of the statement, the sequence, the indexes and the triggers stay as they were. Where
  SQLite refuses that (an older SQLite; a table constraint or foreign key that names the
  column) the table is copied as before, ``AUTOINCREMENT``, the sequence and the unnamed
  CHECKs that do not name the column kept;
* the undo creates the table again from the recorded statement: its rows copied aside
  (a temporary table), the table dropped and created again from the statement as it was,
  the rows copied back with the status, then its sequence (never set back), its indexes
  and triggers, each from its own SQL. A referencing table's foreign key without an
  action is deferred to the commit meanwhile (the rows are back by then); one with an
  action (ON DELETE CASCADE, SET NULL, ...) would act on the drop, and a table whose
  columns changed while retired no longer matches the statement: those undo as before
  (the column added last), and say so.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import sqlalchemy as sa
from alembic import op

_AUTOINCREMENT = re.compile(r"\bAUTOINCREMENT\b", re.IGNORECASE)
# sqlite_master keeps a CREATE statement normalized: "CREATE TABLE " (or "CREATE INDEX ",
# "CREATE UNIQUE INDEX "), then the name, without its schema.
_HEAD = re.compile(r"^CREATE (?:UNIQUE )?(?:TABLE|INDEX) ")
HOLD = "_unistatus_r001_hold"

log = logging.getLogger("alembic.runtime.migration")


def _schema(bind: sa.Connection, schema: str | None) -> str:
    """The prefix that names ``schema`` (an attached database) in SQL; "" for main."""
    return f"{bind.dialect.identifier_preparer.quote_schema(schema)}." if schema else ""


def _in_schema(bind: sa.Connection, sql: str, schema: str | None) -> str:
    """A CREATE TABLE / INDEX statement of ``sqlite_master`` that creates in ``schema``."""
    head = _HEAD.match(sql)
    if not schema or head is None:
        return sql
    return sql[: head.end()] + _schema(bind, schema) + sql[head.end() :]


def sequence(bind: sa.Connection, table: str, schema: str | None) -> int | None:
    """The table's ``sqlite_sequence`` value (None: none yet, or not AUTOINCREMENT)."""
    where = _schema(bind, schema)
    has = bind.exec_driver_sql(
        f"SELECT 1 FROM {where}sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
    ).first()
    if has is None:
        return None
    seq = bind.exec_driver_sql(
        f"SELECT seq FROM {where}sqlite_sequence WHERE name = ? COLLATE NOCASE", (table,)
    ).scalar_one_or_none()
    return None if seq is None else int(seq)


def _set_sequence(bind: sa.Connection, table: str, schema: str | None, seq: int | None) -> None:
    """The table's sequence at least ``seq`` (a copy's explicit ids set it to the largest)."""
    if seq is None:
        return
    where = _schema(bind, schema)
    moved = bind.exec_driver_sql(
        f"UPDATE {where}sqlite_sequence SET seq = max(seq, ?) WHERE name = ? COLLATE NOCASE",
        (seq, table),
    )
    if not moved.rowcount:
        bind.exec_driver_sql(
            f"INSERT INTO {where}sqlite_sequence (name, seq) VALUES (?, ?)", (table, seq)
        )


def _table_sql(bind: sa.Connection, table: str, schema: str | None) -> str:
    return str(
        bind.exec_driver_sql(
            f"SELECT sql FROM {_schema(bind, schema)}sqlite_master "
            "WHERE type = 'table' AND name = ? COLLATE NOCASE",
            (table,),
        ).scalar_one()
    )


def drop_column(bind: sa.Connection, spec: dict[str, Any], again: list[Any]) -> dict[str, Any]:
    """Drop the status column in place; where SQLite refuses, copy the table (AUTOINCREMENT
    and the sequence kept), then create ``again`` (the application's triggers, name and
    SQL) that the copy took. What the undo needs, for the control log: the CREATE
    statement and the sequence before the drop."""
    table, schema = spec["table"], spec.get("schema")
    sql, seq = _table_sql(bind, table, schema), sequence(bind, table, schema)
    preparer = bind.dialect.identifier_preparer
    name = _schema(bind, schema) + preparer.quote(table)
    try:
        with bind.begin_nested():
            bind.exec_driver_sql(f"ALTER TABLE {name} DROP COLUMN {preparer.quote(spec['status'])}")
    except sa.exc.OperationalError:
        if acting := _acting_references(bind, table, schema):
            config = op.get_context().config
            given = config.attributes.get("gate_error") if config is not None else None
            refused: type[Exception] = given or RuntimeError
            raise refused(
                f"revision 0006 refused: SQLite cannot drop {table}.{spec['status']} in place "
                f"(an older SQLite, or a table constraint naming it), and a copy of {table} "
                f"would drop it, which the foreign key(s) of {', '.join(acting)} on it act on "
                "(ON DELETE): nothing changed"
            ) from None
        kwargs = {"sqlite_autoincrement": True} if _AUTOINCREMENT.search(sql) else {}
        checks, on_status = _checks(bind, table, schema, spec["status"])
        deferred = _defer(bind, 1)  # a reference without an action: the rows come back
        with op.batch_alter_table(
            table, schema=schema, table_kwargs=kwargs, table_args=tuple(checks)
        ) as batch:
            for check in on_status:
                batch.drop_constraint(check, type_="check")
            batch.drop_column(spec["status"])
        _defer(bind, deferred)
        _set_sequence(bind, table, schema, seq)
        present = {name for (name,) in _of_table(bind, table, schema, "name", "'trigger'")}
        for trigger, trigger_sql in again:
            if trigger not in present:
                bind.exec_driver_sql(trigger_sql)
    return {"sqlite_sql": sql, "sqlite_sequence": seq}


def _checks(
    bind: sa.Connection, table: str, schema: str | None, column: str
) -> tuple[list[sa.CheckConstraint], list[str]]:
    """The table's unnamed CHECKs that do not name ``column``, restated for its copy, and
    the names of its named CHECKs that do, dropped with the column.

    A copy made from reflection omits every unnamed CHECK (Alembic cannot tell which of
    them name the dropped column): the application's ``CHECK (amount >= 0)`` was gone for
    as long as the table was retired. It restates every named one, and one naming the
    column failed the copy ("no such column"). Those naming the column go with it (SQLite
    cannot keep them), logged; the undo's CREATE statement has them again."""
    names = re.compile(rf"(?<![\w$])[\"`\[]?{re.escape(column)}[\"`\]]?(?![\w$])", re.I)
    kept: list[sa.CheckConstraint] = []
    dropped: list[str] = []
    for check in sa.inspect(bind).get_check_constraints(table, schema=schema):
        sqltext, name = str(check["sqltext"]), check.get("name")
        if not names.search(sqltext):
            if not name:
                kept.append(sa.CheckConstraint(sqltext))
            continue
        if name:
            dropped.append(str(name))
        shown = f"CHECK {name} ({sqltext})" if name else f"CHECK ({sqltext})"
        log.warning("%s: %s names %s and is dropped with it", table, shown, column)
    return kept, dropped


def _of_table(bind: sa.Connection, table: str, schema: str | None, what: str, types: str) -> Any:
    """``what`` of the table's objects of ``types`` in ``sqlite_master``, in creation order."""
    return bind.exec_driver_sql(
        f"SELECT {what} FROM {_schema(bind, schema)}sqlite_master WHERE tbl_name = ? "
        f"COLLATE NOCASE AND type IN ({types}) AND sql IS NOT NULL ORDER BY rowid",
        (table,),
    ).all()


def _columns(bind: sa.Connection, table: str, where: str) -> list[str]:
    """A table's columns a row is written to, in order (not a generated one)."""
    quoted = bind.dialect.identifier_preparer.quote(table)
    rows = bind.exec_driver_sql(f"PRAGMA {where}table_xinfo({quoted})").all()
    return [str(row.name) for row in rows if not row.hidden]


def _acting_references(bind: sa.Connection, table: str, schema: str | None) -> list[str]:
    """Other tables whose foreign keys on ``table`` act on a delete (the drop deletes)."""
    rows = bind.exec_driver_sql(
        f"SELECT DISTINCT m.name FROM {_schema(bind, schema)}sqlite_master m, "
        "pragma_foreign_key_list(m.name, ?) f WHERE m.type = 'table' "
        'AND f."table" = ? COLLATE NOCASE AND m.name <> ? COLLATE NOCASE '
        "AND f.on_delete <> 'NO ACTION' ORDER BY 1",
        (schema or "main", table, table),
    ).all()
    return [str(row[0]) for row in rows]


def create_again(
    bind: sa.Connection,
    spec: dict[str, Any],
    recorded: dict[str, Any],
    unified: sa.TableClause,
    system: str,
) -> bool:
    """The table created again from the CREATE statement :func:`drop_column` recorded
    (``recorded``), its rows copied back with the status from ``unified.legacy_status``:
    True. Where a referencing table's foreign key acts on a delete, the column added back
    last and nullable instead (no copy): True too, logged. False (nothing changed; the
    caller adds the column last, as before): none recorded (retired before it was), or
    the table's columns changed while retired, logged."""
    if not recorded.get("sqlite_sql"):
        return False
    table, schema, column = spec["table"], spec.get("schema"), spec["status"]
    where = _schema(bind, schema)
    if acting := _acting_references(bind, table, schema):
        # Not copied either (the old undo's copy for NOT NULL deleted their rows): added
        # back last, nullable, in place.
        kind = sa.String(recorded.get("length") or 64)
        op.add_column(table, sa.Column(column, kind, nullable=True), schema=schema)
        _not_again(
            table,
            f"foreign key(s) of {', '.join(acting)} on it act on a delete",
            "the status column comes back last and nullable, without its DEFAULT or CHECK",
        )
        return True
    preparer = bind.dialect.identifier_preparer
    name = where + preparer.quote(table)
    columns = _columns(bind, table, where)
    kept = _of_table(bind, table, schema, "type, sql", "'index', 'trigger'")
    seqs = (sequence(bind, table, schema), recorded.get("sqlite_sequence"))
    seq = max((s for s in seqs if s is not None), default=None)
    deferred = _defer(bind, 1)
    savepoint = bind.begin_nested()
    listed = ", ".join(preparer.quote(c) for c in columns)
    bind.exec_driver_sql(f"CREATE TEMP TABLE {HOLD} AS SELECT {listed} FROM {name}")
    bind.exec_driver_sql(f"DROP TABLE {name}")
    bind.exec_driver_sql(_in_schema(bind, str(recorded["sqlite_sql"]), schema))
    if [c for c in _columns(bind, table, where) if c.casefold() != column.casefold()] != columns:
        savepoint.rollback()
        _defer(bind, deferred)
        return _not_again(table, "its columns changed while retired")
    hold = sa.table(HOLD, *(sa.column(c) for c in columns), schema="temp")
    target = sa.table(table, *(sa.column(c) for c in [*columns, column]), schema=schema)
    at = sa.and_(unified.c.legacy_system == system, unified.c.legacy_id == hold.c[spec["id"]])
    status = sa.select(unified.c.legacy_status).where(at).scalar_subquery()
    bind.execute(sa.insert(target).from_select([*columns, column], sa.select(*hold.c, status)))
    bind.exec_driver_sql(f"DROP TABLE temp.{HOLD}")
    _set_sequence(bind, table, schema, seq)
    for kind, sql in kept:
        bind.exec_driver_sql(_in_schema(bind, str(sql), schema) if kind == "index" else sql)
    savepoint.commit()
    _defer(bind, deferred)
    return True


def _defer(bind: sa.Connection, on: int) -> int:
    """``PRAGMA defer_foreign_keys`` set (to the commit, in this transaction); as it was."""
    was = int(bind.exec_driver_sql("PRAGMA defer_foreign_keys").scalar_one())
    bind.exec_driver_sql(f"PRAGMA defer_foreign_keys = {int(on)}")
    return was


def _not_again(
    table: str,
    why: str,
    then: str = "the status column comes back last, and a copy of the table keeps no AUTOINCREMENT",
) -> bool:
    log.warning("%s: not created again from its CREATE statement (%s): %s", table, why, then)
    return False
