"""The legacy tables as the live database has them, resolved from config.

Names come from :class:`unistatus.config.LegacyTableSpec` and are checked against the
database by reflection; SQL is then built from the reflected ``Column`` objects, so no
configured name is ever pasted into SQL text. The tables are the application's: they
stay where it keeps them whatever the ``schema`` setting (:func:`~unistatus.db.legacy_reflect.legacy_schema`). The
list of legacy columns unistatus works with (:data:`LEGACY_COLUMNS`,
:data:`DATA_COLUMNS`) and the one way to read a legacy row (:func:`legacy_select`) live
here; a status (or currency) of an application's enum type is read as text
(:meth:`LegacyTable.read`) and written cast back (:meth:`LegacyTable.as_stored`), by the
rules of :mod:`unistatus.db.legacy_types`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any, cast

import sqlalchemy as sa

from unistatus.config import LegacyTableSpec, Settings
from unistatus.db.binding import (
    connected,
    require_bound,
    schema_of,
)
from unistatus.db.failures import canceled
from unistatus.db.legacy_kinds import refuse_unwritable
from unistatus.db.legacy_reflect import (
    legacy_table_kinds,
    legacy_table_name,
    reflect_legacy_tables,
    resolved_schema,
    searched,
)
from unistatus.db.legacy_text import convert_text_columns, is_text_column, is_text_time_column
from unistatus.db.legacy_types import (
    base_type,
    cast_type,
    check_status_type,
    check_time_type,
    integer_key,
)
from unistatus.db.revisions import VERSION_TABLE, columns_retired
from unistatus.db.text_times import text_time
from unistatus.domain.consistency import SHARED_FIELDS
from unistatus.domain.copyable import is_number_text, text_amount_number
from unistatus.domain.inputs import LegacyColumn, check_stored_value
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import (
    ConfigError,
    LegacyStatusRetiredError,
    ModeError,
    StorageError,
    UnstorableLegacyStatusError,
)

# What a transaction carries on both sides: copied into its unified row, and compared
# with it by the consistency rule (whose list this is).
DATA_COLUMNS = SHARED_FIELDS
# Every legacy column unistatus works with, under its own names (each configurable in
# LegacyTableSpec), in the order a legacy row is read (legacy_select).
LEGACY_COLUMNS = ("id", "status", *DATA_COLUMNS, "created_at", "updated_at")
# The roles unistatus reads and compares as text (their unified counterparts are text):
# an application's enum in one of them is cast (LegacyTable.as_text, as_stored).
TEXT_ROLES = ("status", "currency")
# The roles that hold times (read as the rule reads a time kept as text: LegacyTable.as_time).
TIME_ROLES = ("created_at", "updated_at")


class ExactAmount(sa.types.TypeDecorator[Decimal]):
    """How a legacy amount is read into Python: a Decimal with all its decimals, as the
    database holds it. The reflected type would round to its own scale where the value
    arrives as a float (SQLite keeps NUMERIC as one; a ``double precision`` column),
    hiding an amount finer than a unified row takes (the copyable rule), and a plain
    float-to-Decimal conversion would add noise (1234567.89 -> ...8899999999): a float
    becomes the shortest decimal that reads back as it (``repr``)."""

    impl = sa.Numeric
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> Any:
        # In place of Numeric's (which rounds a float to its scale): the raw value.
        return _exact_decimal


def _exact_decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, str) and not is_number_text(value):
        # Text that is no plain decimal ('NaN', ' -Infinity', '1e3', 'abc' in a TEXT
        # column) stays text, as the SQL judge sees it: the copyable rule calls it out
        # of range on every path (Decimal would read 'NaN' as NaN, '1e3' as 1000).
        return cast(Decimal, value)
    try:
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        # No number (SQLite keeps 'abc' in a NUMERIC column): the value as stored, so a
        # comparison calls it a mismatch and a report shows it, never a crash.
        return cast(Decimal, value)


EXACT_AMOUNT = ExactAmount()


@dataclass(frozen=True)
class LegacyTable:
    """One legacy system's table with its columns under unistatus's names."""

    system: LegacySystemType
    table: sa.Table
    id: sa.Column[int]
    status: sa.Column[str] | None  # None once retirement has dropped it
    user_id: sa.Column[int]
    amount: sa.Column[object]
    currency: sa.Column[str]
    created_at: sa.Column[object]
    updated_at: sa.Column[object]
    dialect: str = ""  # the database's dialect name (how wide its INTEGER is)

    @property
    def name(self) -> str:
        return self.table.name

    def column(self, name: str) -> sa.Column[Any]:
        """The column playing role ``name`` (one of LEGACY_COLUMNS); the status column
        through :func:`legacy_status_column`, which says so clearly once it is retired."""
        if name == "status":
            return legacy_status_column(self)
        column: sa.Column[Any] = getattr(self, name)
        return column

    def read(self, name: str) -> sa.ColumnElement[Any]:
        """The column playing role ``name``, as statements read and compare it
        (:meth:`as_text` of :meth:`column`); the amount as an exact number with every
        decimal it has (:data:`EXACT_AMOUNT`); a time kept as text as the time the rule
        reads in it (:meth:`as_time`)."""
        column: sa.ColumnElement[Any] = self.column(name)
        if name == "amount":
            column = sa.type_coerce(column, EXACT_AMOUNT)
        return self.as_text(name, self.as_time(name, column))

    def as_time(self, name: str, value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """``value``, the column of role ``name`` (or a trigger's image of it), as
        statements read it: a time kept as text as the time the rule reads in it, NULL
        (a missing time, for which the other time or the copy's stands in) where it
        reads none (:func:`~unistatus.db.text_times.text_time`: PostgreSQL compares no
        text with a time, nor assigns one to a ``timestamptz``; SQLite copies text as
        it is); anything else as it is."""
        if name not in self.text_times:
            return value
        column = self.column(name)
        return text_time(value, column.type if self.dialect == "sqlite" else None)

    @cached_property
    def text_times(self) -> frozenset[str]:
        """The time roles whose columns hold text (:data:`TIME_ROLES`)."""
        return frozenset(
            name
            for name in TIME_ROLES
            if (column := getattr(self, name)) is not None and is_text_time_column(column)
        )

    def as_text(self, name: str, value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """``value``, a reading of role ``name``, as unistatus compares it: a text role
        (:data:`TEXT_ROLES`) whose column is not text (a PostgreSQL enum) cast to text,
        everything else as it is (the SQL of a text column is unchanged)."""
        if self.cast_types.get(name) is None:
            return value
        return sa.cast(value, sa.String)

    def as_copied(self, name: str, value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """``value``, a reading of role ``name``, as a unified column takes it and is
        compared with it: an amount kept as text on PostgreSQL (which assigns no text to
        NUMERIC, nor compares the two) as the number the copyable rule reads in it, NULL
        where it reads none (:func:`~unistatus.domain.copyable.text_amount_number`: such
        a row is set aside, never copied; the check calls it a mismatch); anything else
        as it is. The copyable rule itself judges the reading (:meth:`read`)."""
        if name == "amount" and self.text_amount:
            return text_amount_number(value)
        return value

    @cached_property
    def text_amount(self) -> bool:
        """Whether the amount column is of a text type on PostgreSQL (SQLite converts
        such a column's values: :mod:`unistatus.db.legacy_text`)."""
        return self.dialect == "postgresql" and is_text_column(self.amount)

    def as_stored(self, name: str, value: Any) -> Any:
        """``value`` for role ``name`` (text, or an expression giving it) as its column
        takes it: cast to the column's own type when a text role's column is not text
        (a PostgreSQL enum), as it is otherwise."""
        kind = self.cast_types.get(name)
        return value if kind is None else sa.cast(value, kind)

    @cached_property
    def cast_types(self) -> dict[str, sa.types.TypeEngine[Any]]:
        """The text roles whose columns statements cast to and from (:func:`cast_type`),
        with the column's type."""
        out = {}
        for name in TEXT_ROLES:
            column = getattr(self, name)
            kind = None if column is None else cast_type(column, self.dialect)
            if kind is not None:
                out[name] = kind
        return out

    def holds_id(self, legacy_id: int) -> bool:
        """Whether the id column's type can hold ``legacy_id`` (a 4-byte INTEGER key
        cannot hold every id a UTX id can carry)."""
        bounds = _int_range(base_type(self.id.type), self.dialect)
        return bounds is None or bounds[1] <= legacy_id <= bounds[2]

    @cached_property
    def owned(self) -> frozenset[str]:
        """The names of the columns unistatus writes (LEGACY_COLUMNS)."""
        columns = (getattr(self, role) for role in LEGACY_COLUMNS)
        return frozenset(c.name for c in columns if c is not None)

    @cached_property
    def extra_columns(self) -> dict[str, LegacyColumn]:
        """The application's own columns, as reflected with the table: what
        ``legacy_values`` may set, and those it may not (GENERATED ALWAYS)."""
        return {c.name: _rule(c, self.dialect) for c in self.table.c if c.name not in self.owned}

    @cached_property
    def shared_columns(self) -> dict[str, LegacyColumn]:
        """The columns of the fields both sides carry (DATA_COLUMNS), by role, under the
        rules of the application's own columns: this deployment's may be narrower than
        the unified row. An amount is taken only as it is (``exact``): one its column
        would round would differ from its unified row."""
        return {role: _rule(getattr(self, role), self.dialect, exact=True) for role in DATA_COLUMNS}

    def check_shared(self, fields: Mapping[str, Any]) -> None:
        """InputError unless each of ``fields`` (DATA_COLUMNS, within the unified limits)
        fits its column here, whatever the mode: a rollback's replay writes into legacy
        what UNIFIED_ONLY took."""
        for role, value in fields.items():
            rule = self.shared_columns[role]
            check_stored_value(role, value, self.column(role).name, rule, self.name)

    def check_status(self, value: str) -> None:
        """UnstorableLegacyStatusError unless the status column can hold the legacy
        status ``value``: within its declared length (``varchar(20)``), a label of its
        enum type. Whatever the mode (a rollback's replay writes what UNIFIED_ONLY took)
        and the dialect (SQLite would store it, the same deployment's PostgreSQL would
        not); nothing once the column is retired."""
        problem = None if self.status is None else status_problem(self.status, value)
        if problem is not None:
            assert self.status is not None
            raise UnstorableLegacyStatusError(self.name, self.status.name, value, problem)


def status_problem(column: sa.Column[Any], value: str) -> str | None:
    """Why the legacy status ``column`` cannot hold ``value`` (None: it can): longer
    than its declared length, not a label of its enum type (a domain's: its base's)."""
    kind = base_type(column.type)
    labels = getattr(kind, "enums", None) if isinstance(kind, sa.Enum) else None
    if labels and value not in labels:
        name = getattr(kind, "name", None) or str(kind)
        return f"is of the enum type {name}, which has no label {value!r}"
    length = getattr(kind, "length", None)
    if not labels and isinstance(length, int) and len(value) > length:
        return (
            f"holds at most {length} characters ({kind}), too few for {value!r} "
            f"({len(value)} characters)"
        )
    return None


def _rule(column: sa.Column[Any], dialect: str, *, exact: bool = False) -> LegacyColumn:
    try:
        python_type: type[Any] | None = column.type.python_type
    except NotImplementedError:
        python_type = None
    generated = _generated(column)
    has_default = column.server_default is not None or column.identity is not None
    length = getattr(column.type, "length", None)
    labels = column.type.enums if isinstance(column.type, sa.Enum) else None
    return LegacyColumn(
        python_type=python_type,
        nullable=bool(column.nullable),
        required=not column.nullable and not has_default and generated is None,
        max_chars=length if isinstance(length, int) and python_type is str else None,
        int_range=_int_range(column.type, dialect),
        digits=_digits(column.type),
        generated=generated,
        labels=tuple(labels) if labels else None,
        exact=exact,
        is_json=isinstance(column.type, sa.JSON),
        local_time=_local_time(column.type),
    )


def _local_time(kind: sa.types.TypeEngine[Any]) -> bool:
    """A time without a time zone (TIMESTAMP, SQLite's DATETIME), or a domain over one."""
    base = base_type(kind)
    return isinstance(base, sa.DateTime) and not base.timezone


def _generated(column: sa.Column[Any]) -> str | None:
    """How the database fills a column no INSERT may set, if it does (as reflected)."""
    if column.computed is not None:
        return f"GENERATED ALWAYS AS ({column.computed.sqltext})"
    if column.identity is not None and column.identity.always:
        return "GENERATED ALWAYS AS IDENTITY"
    return None


def _int_range(kind: sa.types.TypeEngine[Any], dialect: str) -> tuple[str, int, int] | None:
    """The declared integer type's bounds (SQLite's INTEGER holds 8 bytes, as BIGINT)."""
    if isinstance(kind, sa.SmallInteger):
        return ("SMALLINT", -(2**15), 2**15 - 1)
    if isinstance(kind, sa.BigInteger) or not isinstance(kind, sa.Integer):
        return None  # BIGINT: checked for every integer column
    if dialect == "sqlite":
        return None
    return ("INTEGER", -(2**31), 2**31 - 1)


def _digits(kind: sa.types.TypeEngine[Any]) -> tuple[int, int] | None:
    """NUMERIC(precision, scale), when both are declared (not for floats)."""
    if not isinstance(kind, sa.Numeric) or isinstance(kind, sa.Float):
        return None
    precision, scale = kind.precision, kind.scale
    if isinstance(precision, int) and isinstance(scale, int):
        return (precision, scale)
    return None


def legacy_status_column(lt: LegacyTable) -> sa.Column[str]:
    """The legacy status column; a clear ModeError once retirement has dropped it."""
    if lt.status is None:
        raise ModeError(
            f"the status column of legacy table {lt.name!r} has been retired; run "
            "`unistatus retire legacy-columns --undo` before writing legacy again"
        )
    return lt.status


def legacy_select(lt: LegacyTable) -> sa.Select[Any]:
    """The legacy row under unistatus's column names (LEGACY_COLUMNS, in that order)."""
    return sa.select(*(lt.read(name).label(name) for name in LEGACY_COLUMNS))


def pinned_legacy_table(conn: sa.Connection, lt: LegacyTable) -> LegacyTable:
    """``lt`` named in the schema it is in (PostgreSQL), for SQL that runs on another
    search_path than the application's (the capture's SECURITY DEFINER functions)."""
    if lt.table.schema is not None or conn.dialect.name != "postgresql":
        return lt
    return legacy_table_as(lt, resolved_schema(conn, lt.name), lt.name)


def legacy_table_as(lt: LegacyTable, schema: str, name: str) -> LegacyTable:
    """``lt`` read through the table ``schema.name``, which has its columns (a partition
    of it, say)."""
    table = lt.table.to_metadata(sa.MetaData(), schema=schema, name=name)
    columns: dict[str, Any] = {
        role: None if column is None else table.c[column.name]
        for role, column in ((r, getattr(lt, r)) for r in LEGACY_COLUMNS)
    }
    return replace(lt, table=table, **columns)


def _retired(database: sa.Engine | sa.Connection) -> bool:
    """Whether `retire legacy-columns` dropped the status columns (a missing column's
    error says so, not "configured as status")."""
    with connected(database) as conn:
        installed = sa.inspect(conn).has_table(VERSION_TABLE, schema=schema_of(conn))
        return installed and columns_retired(conn)


def resolve_legacy_tables(
    database: sa.Engine | sa.Connection,
    settings: Settings,
    *,
    systems: list[LegacySystemType] | None = None,
    require_status: bool = True,
    columns_only: bool = False,
    warn_kinds: bool = False,
) -> dict[LegacySystemType, LegacyTable]:
    """Reflect each configured legacy table and check it has every needed column.

    ``require_status=False`` accepts a table whose status column was dropped by
    ``unistatus retire legacy-columns`` (its ``status`` is then None). ``columns_only``:
    the tables as their columns, for a caller that only reads them
    (:func:`reflect_legacy_tables`). A ConfigError if ``engine`` is not bound to the
    schema the settings name (:mod:`unistatus.db.binding`). ``database``: a connection
    reflects the tables as its transaction sees them (one whose DDL is not committed).
    """
    engine = database if isinstance(database, sa.Engine) else database.engine
    # A connection as it stands (the caller's, our schema bound for the call).
    require_bound(database, settings.schema)
    meta = sa.MetaData()
    out: dict[LegacySystemType, LegacyTable] = {}
    try:
        chosen = systems or list(LegacySystemType)
        specs = [settings.legacy_tables[system.value] for system in chosen]
        if engine.dialect.name == "sqlite" and any(s.schema not in (None, "main") for s in specs):
            # Else read as "cannot reach the database: no such table" (a probe).
            raise ConfigError(
                "legacy_tables.*.schema: SQLite has no schemas (but its file's own, main); "
                "leave it unset"
            )
        with connected(database) as conn:
            refuse_unwritable(legacy_table_kinds(conn, specs), warn=warn_kinds)
            reflected = reflect_legacy_tables(conn, specs, meta, columns_only=columns_only)
        tables = dict(zip(chosen, reflected, strict=True))
    except sa.exc.OperationalError as exc:
        # A lock or statement timeout is a database reached and up: said as what it is.
        timeout = canceled(exc)
        if timeout is not None:
            # Chained: a schema change's attempt (db.ddl_wait) retries a lock wait of its own.
            raise StorageError(f"cannot read the legacy tables: {timeout}: {exc.orig}") from exc
        raise StorageError(f"cannot reach the database: {exc.orig}") from None
    for system, table in tables.items():
        spec: LegacyTableSpec = settings.legacy_tables[system.value]
        if table is None:
            raise ConfigError(
                f"legacy table {legacy_table_name(spec)!r} for {system.value} does not exist"
                f"{searched(database, spec)} (run `unistatus init`, or set legacy_tables in "
                "the config)"
            )
        cols: dict[str, sa.Column[Any] | None] = {}
        for role, name in spec.column_names().items():
            if name not in table.c:
                if role == "status" and not require_status:
                    cols[role] = None
                    continue
                if role == "status" and _retired(database):
                    raise LegacyStatusRetiredError(
                        f"{legacy_table_name(spec)}.{name} is needed and was dropped"
                    )
                raise ConfigError(
                    f"legacy table {legacy_table_name(spec)!r} has no column {name!r} "
                    f"(configured as {role}); it has: {', '.join(c.name for c in table.c)}"
                )
            cols[role] = table.c[name]
        key = cols["id"]
        if engine.dialect.name != "sqlite" and key is not None and not integer_key(key):
            raise ConfigError(
                f"legacy table {legacy_table_name(spec)!r}: its id column {key.name!r} is "
                f"of type {key.type}; a UTX id is derived from an integer key"
            )
        status = cols.get("status")
        if status is not None:
            check_status_type(system, legacy_table_name(spec), status, engine.dialect.name)
        for role in ("created_at", "updated_at"):
            if (time := cols.get(role)) is not None:
                check_time_type(legacy_table_name(spec), role, time, engine.dialect.name)
        convert_text_columns(cols, engine.dialect.name)
        found = LegacyTable(
            system=system,
            table=table,
            dialect=engine.dialect.name,
            **cols,  # type: ignore[arg-type]
        )
        out[system] = _interned(found, spec, columns_only)
    return out


# The legacy tables resolved before, by what their SQL depends on: a table reflected
# the same again is the Table object already made, so the statements built on it are
# found in the engine's statement cache (a new Table each time made each statement a
# new entry: a monitor's evaluations grew a process by 130 MB and pushed the adapter's
# statements out of the cache it shares in `serve`; a probe).
_INTERNED: dict[tuple[Any, ...], LegacyTable] = {}
_INTERNED_KEPT = 256


def _column_signature(column: sa.Column[Any]) -> tuple[Any, ...]:
    """What of a reflected column its SQL may depend on, as text (a default's clause is
    an object: its repr names its address, another on each reflection)."""
    default = column.server_default
    return (
        column.name,
        repr(column.type),
        column.nullable,
        column.primary_key,
        str(getattr(default, "arg", default)) if default is not None else None,
        str(getattr(column.computed, "sqltext", None)),
        column.identity is not None,
    )


def _interned(found: LegacyTable, spec: LegacyTableSpec, columns_only: bool) -> LegacyTable:
    table = found.table
    key = (
        found.system,
        found.dialect,
        columns_only,
        table.schema,
        table.name,
        tuple(_column_signature(c) for c in table.c),
        tuple(sorted(spec.column_names().items())),
        tuple(
            None if getattr(found, r) is None else repr(getattr(found, r).type)
            for r in LEGACY_COLUMNS
        ),
    )
    kept = _INTERNED.get(key)
    if kept is not None:
        return kept
    if len(_INTERNED) >= _INTERNED_KEPT:
        _INTERNED.clear()
    _INTERNED[key] = found
    return found


def indexes_a_drop_cannot_keep(conn: sa.Connection, table: sa.Table, column: str) -> list[str]:
    """The indexes involving ``column`` that dropping it would fail on (sorted names).

    SQLite drops a column by copying its table, which recreates every index, and one
    naming the dropped column fails the copy. PostgreSQL drops them with the column
    (the retirement records them and its undo creates them again): none there.
    """
    if conn.dialect.name != "sqlite":
        return []
    names: list[str] = []
    for index in sa.inspect(conn).get_indexes(table.name, schema=table.schema):
        expressions = [str(e) for e in index.get("expressions") or [] if e is not None]
        if column in (index.get("column_names") or []) or any(column in e for e in expressions):
            names.append(str(index["name"]))
    return sorted(names)
