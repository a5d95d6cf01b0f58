"""The DDL of the capture: triggers (and PostgreSQL functions) around capture_sql's statements.

Per legacy table, PostgreSQL gets one PL/pgSQL function, three statement-level AFTER
triggers (INSERT, UPDATE, DELETE) with transition tables, so a bulk write costs a few
set-based statements, not one call per row, and a BEFORE TRUNCATE one that reads the
table itself (a TRUNCATE is recorded as a DELETE of every row); the tables under it (its
partitions, its inheriting tables) get the same triggers. SQLite, which has neither, gets
row-level triggers whose bodies are the same statements on the ``NEW`` or ``OLD`` row. Both get the
detector of direct writes to ``unified_transactions`` and the catch-up trigger on the
control table (a mode that maintains unified entered: the entities logged while
LEGACY_ONLY are brought in step in the switch's own transaction).

Every object is named with the prefix :data:`PREFIX` (:mod:`capture_names`). On
PostgreSQL the functions live in the installation's schema (where its tables are) and are
the installation's objects: ``disable`` drops the functions of :func:`function_names` in that schema and the
triggers that call them, never another installation's. The functions run with their
owner's rights (SECURITY DEFINER), so they name every table with its schema and run on
``search_path = pg_catalog, pg_temp``: nothing a user may create in a schema on the
writer's path (a ``public`` table or operator) can stand in for one of ours. What each
does and why: docs/capture.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from unistatus.db import writer_mark
from unistatus.db.binding import qualify
from unistatus.db.dialect import DialectOps
from unistatus.db.legacy import LEGACY_COLUMNS, LegacyTable, legacy_table_as
from unistatus.db.mode_lock_keys import system_lock_key
from unistatus.db.mode_reads import mode_key
from unistatus.db.tables import migration_control, unified_transactions
from unistatus.domain.statuses import DualWriteMode
from unistatus.migration import capture_frozen as frozen
from unistatus.migration import capture_marked as marked
from unistatus.migration.capture_context import postgres_context, sqlite_context
from unistatus.migration.capture_names import (
    EVENTS,
    ID_MOVED,
    LEGACY_TRANSITIONS,
    NEW_ROWS,
    OLD_ROWS,
    PREFIX,
    TRUNCATE_SHORT,
    Trigger,
    Under,
)
from unistatus.migration.capture_sizes import by_size
from unistatus.migration.capture_sql import (
    Context,
    Rows,
    SystemSql,
    count_foreign_unified,
    stored_mode,
)

__all__ = ["CATCH_UP_WRITER", "SEARCH_PATH", "SQLITE_WRITER", "CaptureDdl"]

# The writer named in the history of what the catch-up brought in step.
CATCH_UP_WRITER = "capture:catch_up"
SQLITE_WRITER = "bypass:sqlite"
LEGACY_ONLY = DualWriteMode.LEGACY_ONLY.value
FROZEN = DualWriteMode.UNIFIED_ONLY.value
# PostgreSQL: who wrote, from the session (application_name and the login role; the
# address apart). The functions run with their owner's rights (SECURITY DEFINER: a writer
# needs no grant on unistatus's tables), where current_user is the owner.
PG_WRITER = (
    "left('bypass:' || coalesce(current_setting('application_name', true), '') || '/' "
    "|| session_user, 128)"
)
# The functions' fixed search_path: the system catalog, the session's temporary schema
# last (PostgreSQL's advice for SECURITY DEFINER functions: every other name qualified).
SEARCH_PATH = "pg_catalog, pg_temp"


class CaptureDdl:
    """The capture's DDL for one database: legacy tables with a status column."""

    def __init__(self, ops: DialectOps, dialect: sa.Dialect) -> None:
        self.ops = ops
        self.dialect = dialect
        self.quote = dialect.identifier_preparer.quote
        self.postgres = dialect.name == "postgresql"
        # PostgreSQL: the schema our tables are in (install's argument), named in every
        # statement rendered into a function body.
        self.schema: str | None = None

    # --- names ------------------------------------------------------------------------

    def triggers(self, tables: list[LegacyTable], under: Under | None = None) -> list[Trigger]:
        """Every trigger :meth:`install` creates, by name and table (``under``: the
        tables under each legacy table, which get its triggers too)."""
        # PostgreSQL: one statement trigger per event, TRUNCATE included; SQLite (no
        # TRUNCATE): per event one row trigger that brings unified in step, and one that
        # logs while LEGACY_ONLY (not DELETE).
        legacy = (
            ["ins", "upd", "del", TRUNCATE_SHORT, frozen.SHORT]
            if self.postgres
            else ["ins", "ins_log", "upd", "upd_log", "del", ID_MOVED, frozen.SHORT]
        )
        out = [
            Trigger(f"{self._legacy_name(lt)}_{s}", table, on)
            for lt in tables
            for table, on in [(lt.name, ""), *self._under(lt, under or {})]
            for s in legacy
        ]
        unified = unified_transactions.name
        direct = [*EVENTS.values(), TRUNCATE_SHORT] if self.postgres else list(EVENTS.values())
        out += [Trigger(f"{PREFIX}unified_{short}", unified) for short in direct]
        if tables:
            catch_up = (
                ["catch_up"]
                if self.postgres
                else [
                    f"catch_up_{lt.system.value.lower()}_{short}"
                    for lt in tables
                    for short in ("ins", "upd")
                ]
            )
            out += [Trigger(f"{PREFIX}{name}", migration_control.name) for name in catch_up]
        return out

    def _under(self, lt: LegacyTable, under: Under) -> list[tuple[str, str]]:
        """The tables under ``lt``, each (its name, as SQL names it with its schema)."""
        return [
            (name, qualify(name, schema, self.dialect)) for schema, name in under.get(lt.system, [])
        ]

    @staticmethod
    def _legacy_name(lt: LegacyTable) -> str:
        return f"{PREFIX}{lt.system.value.lower()}"

    def _function(self, name: str) -> str:
        return qualify(name, self.schema, self.dialect)

    def _table(self, table: sa.Table) -> str:
        """A table as SQL names it: ours in :attr:`schema`, a legacy one in its own."""
        return qualify(table.name, table.schema or self.schema, self.dialect)

    def render(self, statement: Any) -> str:
        """A statement (or expression) as SQL text with its values inline; on PostgreSQL
        our tables named in :attr:`schema` (the functions' search_path has none of them)."""
        translate = {None: self.schema} if self.schema else None
        compiled = statement.compile(
            dialect=self.dialect,
            schema_translate_map=translate,
            render_schema_translate=translate is not None,
            compile_kwargs={"literal_binds": True},
        )
        return str(compiled).strip()

    # --- install ----------------------------------------------------------------------

    def install(
        self,
        tables: list[LegacyTable],
        schema: str | None = None,
        mode_lock_key: int = 0,
        *,
        unified: bool = True,
        under: Under | None = None,
    ) -> list[str]:
        """The statements that create every capture object (after :meth:`drop`).

        PostgreSQL: ``schema`` is where our tables are (and the functions go), the
        legacy tables each named in their schema (see ``pinned_legacy_table``),
        ``mode_lock_key`` the installation's mode lock (``DialectOps.mode_lock_key``), and
        ``under`` the tables under each legacy table (its partitions, its inheriting
        tables: :func:`unistatus.db.legacy_tree.tables_under`), which get its triggers.
        ``unified=False``: all but the detector of direct writes to unified.
        """
        if self.postgres:
            if schema is None:
                raise ValueError("the capture's functions need the schema of our tables")
            self.schema = schema
            return self._postgres(tables, mode_lock_key, unified, under or {})
        return self._sqlite(tables, unified)

    def drop(self, installed: list[Trigger], functions: list[str]) -> list[str]:
        """The statements that drop these triggers and (PostgreSQL) functions."""
        out = []
        for trigger in installed:
            if self.postgres:
                out.append(
                    f"DROP TRIGGER IF EXISTS {self.quote(trigger.name)} ON "
                    f"{trigger.on or self.quote(trigger.table)}"
                )
            else:
                out.append(f"DROP TRIGGER IF EXISTS {self.quote(trigger.name)}")
        out += [f"DROP FUNCTION IF EXISTS {signature}" for signature in functions]
        return out

    # --- PostgreSQL -----------------------------------------------------------------------

    def _pg_rows(self, lt: LegacyTable, transition: str) -> Rows:
        columns = [lt.column(name) for name in LEGACY_COLUMNS]
        table = sa.table(transition, *(sa.column(c.name, c.type) for c in columns))
        return Rows.of(
            {
                name: lt.as_text(name, lt.as_time(name, table.c[c.name]))
                for name, c in zip(LEGACY_COLUMNS, columns, strict=True)
            },
            table,
        )

    def _plpgsql(self, statements: list[Any]) -> str:
        lines = []
        for statement in statements:
            sql = self.render(statement)
            if sql.upper().startswith("SELECT"):
                sql = "PERFORM" + sql[len("SELECT") :]
            lines.append(sql + ";")
        return "\n".join(lines)

    def _postgres(
        self, tables: list[LegacyTable], mode_lock_key: int, unified: bool, under: Under
    ) -> list[str]:
        # With its owner's rights (a writer needs no grant on unistatus's tables), on a
        # fixed search_path (every table named with its schema); without JIT (compiling
        # the generated expressions cost more than running them).
        attributes = f"SECURITY DEFINER SET search_path = {SEARCH_PATH} SET jit = off"
        out: list[str] = []
        writer = sa.literal_column("v_writer", sa.String)
        mode = sa.literal_column("v_mode", sa.String)
        setting = writer_mark.WRITER_SETTING
        for lt in tables:
            sql = SystemSql(lt, self.ops)
            # The table's own system: its mode, and its mode lock after the
            # installation's (as unistatus_locked_mode(system) takes them).
            read_mode = self.render(sa.select(stored_mode(lt.system)))
            system_key = system_lock_key(mode_lock_key, lt.system.value)
            reason = sa.literal_column("v_reason", sa.String)
            ctx = postgres_context(writer, mode, reason, "bypass")
            base_meta = self.render(sql.base_meta(ctx))
            ctx = replace(ctx, meta=sa.literal_column("v_meta", JSONB))
            new_rows, old_rows = self._pg_rows(lt, NEW_ROWS), self._pg_rows(lt, OLD_ROWS)
            log = self._plpgsql([sql.log_changed(new_rows, ctx.now)])
            # Per event, one body for UNIFIED_ONLY, one for the other modes (no replay
            # writes to start up in every statement of theirs); an UPDATE's rows with what
            # it changed in each, without those that changed nothing unistatus keeps.
            # Their values as legacy holds them now (Rows.as_now).
            rows = {
                "INSERT": new_rows.as_now(lt, materialized=True),
                "UPDATE": new_rows.changed_from(old_rows).as_now(lt, materialized=True),
            }
            (ins, frozen_ins), (upd, frozen_upd) = (
                [self._pg_in_step(sql, r, replace(ctx, frozen=f)) for f in (False, True)]
                for r in rows.values()
            )
            deleted = self._plpgsql(sql.deleted(old_rows, ctx))
            # An UPDATE that changed ids: the old ids go as a DELETE's rows (checked
            # first: one probe per statement, the writes only when an id changed).
            gone = old_rows.gone_from(new_rows)
            moved = (
                f"IF EXISTS ({self.render(old_rows.ids_gone_from(new_rows))}) THEN\n"
                f"{_indent(self._plpgsql(sql.deleted(gone, ctx)), 4)}\nEND IF;"
            )
            truncated = self._pg_truncated(sql, lt, under, ctx)
            function = self._function(self._legacy_name(lt))
            count = frozen.counted(self.ops.insert, lt, ctx, per_statement=True)
            status_written = frozen.pg_block(self._plpgsql, count, PG_WRITER)
            out.append(
                f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql {attributes} AS $capture$
{marked.pg_declare()}
BEGIN
{_indent(marked.pg_mode(read_mode, mode_lock_key, system_key), 4)}
{_indent(status_written, 4)}
    IF v_mode = '{LEGACY_ONLY}' THEN
        IF TG_OP NOT IN ('DELETE', 'TRUNCATE') THEN
{_indent(log, 12)}
        END IF;
        RETURN NULL;
    END IF;
    IF v_mark <> '' THEN
        RETURN NULL;
    END IF;
    v_writer := {PG_WRITER};
    v_addr := host(inet_client_addr());
    v_reason := 'bypass ' || lower(TG_OP);
    v_meta := {base_meta};
    PERFORM set_config('{setting}', '{writer_mark.CAPTURE_WRITER}', true);
    IF TG_OP = 'DELETE' THEN
{_indent(deleted, 8)}
    ELSIF TG_OP = 'TRUNCATE' THEN
{_indent(truncated, 8)}
    ELSIF TG_OP = 'INSERT' AND v_mode = '{FROZEN}' THEN
{_indent(frozen_ins, 8)}
    ELSIF TG_OP = 'INSERT' THEN
{_indent(ins, 8)}
    ELSIF v_mode = '{FROZEN}' THEN
{_indent(by_size(NEW_ROWS, moved, frozen_upd), 8)}
    ELSE
{_indent(by_size(NEW_ROWS, moved, upd), 8)}
    END IF;
    {marked.pg_restore_mark()}
    RETURN NULL;
END
$capture$"""
            )
            # A statement fires the statement triggers of the table it names only: the
            # tables under this one (partitions, inheriting tables) get the same.
            for table in [self._table(lt.table), *(on for _, on in self._under(lt, under))]:
                out += self._pg_triggers(lt, table, function)
        if unified:
            out += self._pg_unified(writer, mode, attributes)
        if tables:
            out += self._pg_catch_up(tables, attributes)
        return out

    def _pg_truncated(self, sql: SystemSql, lt: LegacyTable, under: Under, ctx: Context) -> str:
        """A TRUNCATE: its BEFORE trigger still sees every row it removes. It fires the
        trigger of every table it empties (those under the one it names too), and each
        records the rows its table holds itself: read through that table (one partition
        read for one partition truncated), found by ``to_regclass`` (a partition dropped
        since names none), else (renamed or attached since) through the legacy table."""
        if not under.get(lt.system):
            return self._plpgsql(sql.deleted(Rows.of_table(lt), ctx))
        own = sa.literal_column("tableoid") == sa.literal_column("TG_RELID")
        branches = [
            f"{'IF' if i == 0 else 'ELSIF'} TG_RELID = "
            f"to_regclass({self.render(sa.literal(self._table(t.table)))}) THEN\n"
            + _indent(self._plpgsql(sql.deleted(Rows.of_table(t, where=own), ctx)), 4)
            for i, t in enumerate(legacy_table_as(lt, *at) for at in under[lt.system])
        ]
        anywhere = self._plpgsql(sql.deleted(Rows.of_table(lt, where=own), ctx))
        return "\n".join([*branches, "ELSE\n" + _indent(anywhere, 4), "END IF;"])

    def _pg_triggers(self, lt: LegacyTable, table: str, function: str) -> list[str]:
        """The triggers that call the legacy table's ``function`` on ``table`` (it, or
        a table under it)."""
        name = self._legacy_name(lt)
        out = [
            f"CREATE TRIGGER {self.quote(f'{name}_{short}')} AFTER {event} ON {table} "
            f"REFERENCING {LEGACY_TRANSITIONS[event]} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {function}()"
            for event, short in EVENTS.items()
        ]
        out.append(
            f"CREATE TRIGGER {self.quote(f'{name}_{TRUNCATE_SHORT}')} "
            f"BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
        column = self.quote(lt.column("status").name)
        out.append(frozen.pg_trigger(self.quote(f"{name}_{frozen.SHORT}"), table, column, function))
        return out

    def _pg_in_step(self, sql: SystemSql, rows: Rows, ctx: Context) -> str:
        """A bypass write brought in step: the quarantine and the missing unified rows
        only when a row needs them (a cheap read first), then the judged writes."""
        prepare, writes = sql.in_step_parts(rows, ctx, lock=True, bypass=True)
        check = self.render(sa.select(sql.needs_preparing(rows)))
        return (
            f"IF ({check}) THEN\n{_indent(self._plpgsql(prepare), 4)}\nEND IF;\n"
            + self._plpgsql(writes)
        )

    def _pg_unified(self, writer: Any, mode: Any, attributes: str) -> list[str]:
        ctx = postgres_context(writer, mode, sa.null(), "foreign")
        setting = writer_mark.WRITER_SETTING
        count_new = self._plpgsql([count_foreign_unified(self.ops.insert, sa.table(NEW_ROWS), ctx)])
        count_old = self._plpgsql([count_foreign_unified(self.ops.insert, sa.table(OLD_ROWS), ctx)])
        # TRUNCATE: before it runs, every row it removes is still in the table.
        count_all = self._plpgsql(
            [count_foreign_unified(self.ops.insert, unified_transactions, ctx)]
        )
        function = self._function(f"{PREFIX}unified")
        unified = self._table(unified_transactions)
        out = [
            f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql {attributes} AS $capture$
DECLARE
    v_mode text;
    v_writer text := {PG_WRITER};
    v_addr text := host(inet_client_addr());
BEGIN
    -- The mode of the system of a row written (the writer's counts keep one).
    IF TG_OP = 'DELETE' THEN
        v_mode := ({self._pg_mode_of_rows(sa.table(OLD_ROWS))});
{_indent(count_old, 8)}
    ELSIF TG_OP = 'TRUNCATE' THEN
        v_mode := ({self._pg_mode_of_rows(unified_transactions)});
{_indent(count_all, 8)}
    ELSE
        v_mode := ({self._pg_mode_of_rows(sa.table(NEW_ROWS))});
{_indent(count_new, 8)}
    END IF;
    RAISE WARNING USING MESSAGE = 'unistatus: ' || v_writer || ' wrote unified_transactions '
        '(' || lower(TG_OP) || ') directly, not through unistatus: counted, see '
        '`unistatus capture status`';
    RETURN NULL;
END
$capture$"""
        ]
        unmarked = f"coalesce(current_setting('{setting}', true), '') = ''"
        for event, short in EVENTS.items():
            transition = OLD_ROWS if event == "DELETE" else NEW_ROWS
            side = "OLD" if event == "DELETE" else "NEW"
            out.append(
                f"CREATE TRIGGER {self.quote(f'{PREFIX}unified_{short}')} "
                f"AFTER {event} ON {unified} REFERENCING {side} TABLE AS {transition} "
                f"FOR EACH STATEMENT WHEN ({unmarked}) EXECUTE FUNCTION {function}()"
            )
        out.append(
            f"CREATE TRIGGER {self.quote(f'{PREFIX}unified_{TRUNCATE_SHORT}')} "
            f"BEFORE TRUNCATE ON {unified} "
            f"FOR EACH STATEMENT WHEN ({unmarked}) EXECUTE FUNCTION {function}()"
        )
        return out

    def _pg_mode_of_rows(self, rows: sa.FromClause) -> str:
        """The stored mode of the system of one of ``rows`` (unified rows: a transition
        table, or the table itself)."""
        system = sa.literal_column("legacy_system", sa.String)
        one = sa.select(system).select_from(rows).limit(1).scalar_subquery()
        return self.render(sa.select(stored_mode(one)))

    def _pg_catch_up(self, tables: list[LegacyTable], attributes: str) -> list[str]:
        setting = writer_mark.WRITER_SETTING
        value = f"NEW.{self.quote(migration_control.c.value.name)}"
        ctx = postgres_context(
            sa.literal(CATCH_UP_WRITER, sa.String),
            sa.literal_column(value, sa.String),
            sa.literal("catch-up after LEGACY_ONLY", sa.String),
            "catch_up",
        )
        # Each system's logged entities when that system leaves LEGACY_ONLY.
        body = "\n".join(
            f"{'IF' if i == 0 else 'ELSIF'} NEW.{self.quote(migration_control.c.key.name)} = "
            f"'{mode_key(lt.system)}' THEN\n"
            + _indent(self._plpgsql(SystemSql(lt, self.ops).catch_up(ctx, lock=True)), 4)
            for i, lt in enumerate(tables)
        )
        function = self._function(f"{PREFIX}catch_up")
        key = self.quote(migration_control.c.key.name)
        keys = ", ".join(f"'{mode_key(lt.system)}'" for lt in tables)
        return [
            f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql {attributes} AS $capture$
DECLARE
    v_prev text := coalesce(current_setting('{setting}', true), '');
    v_addr text := NULL;
BEGIN
    PERFORM set_config('{setting}', '{writer_mark.CAPTURE_WRITER}', true);
{_indent(body, 4)}
    END IF;
    PERFORM set_config('{setting}', v_prev, true);
    RETURN NULL;
END
$capture$""",
            f"CREATE TRIGGER {self.quote(f'{PREFIX}catch_up')} AFTER INSERT OR UPDATE ON "
            f"{self._table(migration_control)} FOR EACH ROW WHEN (NEW.{key} IN ({keys}) AND "
            f"{value} <> '{LEGACY_ONLY}') EXECUTE FUNCTION {function}()",
        ]

    # --- SQLite ---------------------------------------------------------------------------

    def _sqlite_rows(self, lt: LegacyTable, side: str) -> Rows:
        return Rows.of(
            {
                name: lt.as_text(
                    name,
                    lt.as_time(
                        name,
                        sa.literal_column(
                            f"{side}.{self.quote(lt.column(name).name)}", lt.column(name).type
                        ),
                    ),
                )
                for name in LEGACY_COLUMNS
            }
        )

    def _sqlite_trigger(self, name: str, event: str, table: str, when: Any, body: list[Any]) -> str:
        statements = "\n".join(f"    {self.render(s)};" for s in body)
        return (
            f"CREATE TRIGGER {self.quote(name)} AFTER {event} ON {table} FOR EACH ROW "
            f"WHEN {self.render(when)}\nBEGIN\n{statements}\nEND"
        )

    def _sqlite(self, tables: list[LegacyTable], unified: bool = True) -> list[str]:
        out: list[str] = []
        unmarked = sa.not_(writer_mark.marked_sqlite())
        capturing = writer_mark.mark_row(writer_mark.CAPTURE_WRITER)
        captured = writer_mark.unmark_row(writer_mark.CAPTURE_WRITER)
        writer = sa.literal(SQLITE_WRITER, sa.String)
        for lt in tables:
            sql = SystemSql(lt, self.ops)
            mode = stored_mode(lt.system)  # the table's own system's
            base, table = self._legacy_name(lt), self._table(lt.table)
            new_rows, old_rows = self._sqlite_rows(lt, "NEW"), self._sqlite_rows(lt, "OLD")
            for event in ("INSERT", "UPDATE"):
                short = EVENTS[event]
                ctx = sqlite_context(writer, mode, f"bypass {event.lower()}", "bypass")
                out.append(
                    self._sqlite_trigger(
                        f"{base}_{short}_log",
                        event,
                        table,
                        mode == LEGACY_ONLY,
                        [sql.log_changed(new_rows, ctx.now)],
                    )
                )
                rows, when = new_rows, sa.and_(mode != LEGACY_ONLY, unmarked)
                if event == "UPDATE":  # what it changed; nothing when none unistatus keeps
                    rows = new_rows.changed_from(old_rows)
                    when = sa.and_(when, sa.exists(rows.rows.select()))
                # The row as legacy holds it now (Rows.as_now).
                body = sql.bring_in_step(rows.as_now(lt), ctx, lock=False, bypass=True)
                out.append(
                    self._sqlite_trigger(
                        f"{base}_{short}", event, table, when, [capturing, *body, captured]
                    )
                )
            ctx = sqlite_context(writer, mode, "bypass delete", "bypass")
            out.append(
                self._sqlite_trigger(
                    f"{base}_del",
                    "DELETE",
                    table,
                    sa.and_(mode != LEGACY_ONLY, unmarked),
                    [capturing, *sql.deleted(old_rows, ctx), captured],
                )
            )
            # An UPDATE that changed the id: the old id goes as a DELETE's row does.
            ctx = sqlite_context(writer, mode, "bypass update", "bypass")
            key = self.quote(lt.id.name)
            moved = sa.literal_column(f"OLD.{key}") != sa.literal_column(f"NEW.{key}")
            out.append(
                self._sqlite_trigger(
                    f"{base}_{ID_MOVED}",
                    f"UPDATE OF {key}",
                    table,
                    sa.and_(mode != LEGACY_ONLY, unmarked, moved),
                    [capturing, *sql.deleted(old_rows, ctx), captured],
                )
            )
            # UPDATE OF the status column, in UNIFIED_ONLY, the rows changing nothing.
            unchanged = sa.not_(sa.exists(new_rows.changed_from(old_rows).rows.select()))
            out.append(
                self._sqlite_trigger(
                    f"{base}_{frozen.SHORT}",
                    f"UPDATE OF {self.quote(lt.column('status').name)}",
                    table,
                    sa.and_(mode == FROZEN, unmarked, unchanged),
                    [frozen.counted(self.ops.insert, lt, ctx, per_statement=False)],
                )
            )
        one_row = sa.select(sa.literal(1).label("one")).subquery("capture_rows")
        for event, short in EVENTS.items() if unified else ():
            side = "OLD" if event == "DELETE" else "NEW"
            system = sa.literal_column(
                f"{side}.{self.quote(unified_transactions.c.legacy_system.name)}", sa.String
            )
            ctx = sqlite_context(writer, stored_mode(system), "", "foreign")
            out.append(
                self._sqlite_trigger(
                    f"{PREFIX}unified_{short}",
                    event,
                    self._table(unified_transactions),
                    unmarked,
                    [count_foreign_unified(self.ops.insert, one_row, ctx)],
                )
            )
        if tables:
            out += self._sqlite_catch_up(tables, capturing, captured)
        return out

    def _sqlite_catch_up(
        self, tables: list[LegacyTable], capturing: Any, captured: Any
    ) -> list[str]:
        value = sa.literal_column(f"NEW.{self.quote(migration_control.c.value.name)}", sa.String)
        key = sa.literal_column(f"NEW.{self.quote(migration_control.c.key.name)}", sa.String)
        ctx = sqlite_context(
            sa.literal(CATCH_UP_WRITER, sa.String), value, "catch-up after LEGACY_ONLY", "catch_up"
        )
        # Each system's logged entities when that system leaves LEGACY_ONLY.
        return [
            self._sqlite_trigger(
                f"{PREFIX}catch_up_{lt.system.value.lower()}_{EVENTS[event]}",
                event,
                self._table(migration_control),
                sa.and_(key == mode_key(lt.system), value != LEGACY_ONLY),
                [capturing, *SystemSql(lt, self.ops).catch_up(ctx, lock=False), captured],
            )
            for lt in tables
            for event in ("INSERT", "UPDATE")
        ]


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())
