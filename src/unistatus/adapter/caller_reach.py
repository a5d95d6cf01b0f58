"""The caller's connection reaches the adapter's database and tables, in a transaction
the adapter can write in.

A connection the application lends the adapter (``connection=``) names unistatus's
tables and the legacy ones as the adapter's own connections do: bare, unless a schema
is set. Through the caller's ``search_path`` a bare name may find another table: a
schema-per-tenant application that puts its tenant's schema first sent the legacy write
to the tenant's ``cashouts`` and the unified one to unistatus's, and said success (a
probe). So before its first statement in a caller's transaction the adapter reads, in
one round trip (PostgreSQL):

- the transaction's isolation level: READ COMMITTED only, since at REPEATABLE READ or
  SERIALIZABLE the mode (and every guard) is read in the transaction's snapshot, which
  may predate a mode switch (:class:`CallerTransactionError`);
- whether the transaction is READ ONLY (``postgresql_readonly``, a replica's
  connection): refused as the caller's mistake (:class:`InputError`), not counted as the
  database's failure;
- the relation each bare name finds, as unistatus resolves a name (the compatibility
  schema left out: :func:`unistatus.db.search_path.resolved_oids`), against what the
  adapter's own connections found: another one, or none, is refused
  (:class:`InputError`) before anything is read or written. What its own find is read
  at its start, and again (at most once a second) when a caller's differs: a table
  swapped since by a rename, or restored, has another oid.

Each adapter's verdict is kept with the transaction (a second call in it costs
nothing; another adapter, whose own connections may find other tables, judges it
again); a ``SET LOCAL search_path`` between two calls of one transaction is not seen
again.
The database itself (PostgreSQL's name for it, SQLite's file) is compared once per
driver connection (:mod:`unistatus.db.same_database`).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Sequence

import sqlalchemy as sa

from unistatus.db.catalog import metadata
from unistatus.db.same_database import database_of, require_same_database
from unistatus.db.search_path import resolved_oids, resolved_oids_without_compat
from unistatus.errors import CallerTransactionError, InputError

__all__ = ["REFOUND_SECONDS", "CallerReach", "bare_names"]

# Where a connection keeps each adapter's verdict, (its transaction, for a write), once
# read: the driver connection's info, which outlives the SQLAlchemy Connection.
_READ = "unistatus_caller_reach"
# How often a caller's connection that finds other tables may make the adapter read its
# own again (a table swapped by a rename has another oid), at most.
REFOUND_SECONDS = 1.0

_FOUND = sa.text(
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = :oid"
)


def bare_names(
    legacy: Sequence[sa.Table], own_schema: str | None, dialect: sa.Dialect
) -> tuple[str, ...]:
    """The names the adapter's SQL leaves to the search_path: the legacy tables without
    a schema of their own, and unistatus's tables unless they are in a schema set."""
    names = [t.name for t in legacy if t.schema is None]
    if own_schema is None:
        names += [t.name for t in metadata.sorted_tables]
    return tuple(dict.fromkeys(names))


class CallerReach:
    """What the adapter's own connections reach, to compare a caller's connection with."""

    def __init__(self, engine: sa.Engine, names: Sequence[str]) -> None:
        self.engine = engine
        self.names = tuple(names)
        compat_on_path, found = resolved_oids(self.names, engine.dialect)
        self._state_read = sa.text(
            "SELECT current_setting('transaction_isolation'), "
            f"current_setting('transaction_read_only'), {compat_on_path}, {found}"
        )
        self._found_without_compat = sa.text(
            "SELECT " + resolved_oids_without_compat(self.names, engine.dialect)
        )
        self.database: str | None = None
        self.found: tuple[int, ...] = ()
        self._read_again_at = -math.inf  # when a mismatch last made it read them again
        with engine.connect() as conn:
            self.database = database_of(conn)
            if conn.dialect.name == "postgresql":
                self.found = self._state(conn)[2]

    def require(self, conn: sa.Connection, *, writing: bool = True) -> None:
        """Refuse ``conn`` where it is not on the adapter's database, or (PostgreSQL) its
        transaction could not be written in as the adapter's (see the module). Its
        failures to answer are the database's (SQLAlchemy's errors, raised as they are)."""
        require_same_database(conn, self.database)
        if conn.dialect.name != "postgresql":
            return
        transaction = conn.get_transaction()
        # Each adapter's verdict: another's compared the connection with other tables.
        verdicts = conn.info.setdefault(_READ, weakref.WeakKeyDictionary())
        known = verdicts.get(self)
        if known is not None and known[0] is transaction and known[1] >= writing:
            return
        isolation, read_only, found = self._state(conn)
        if writing and isolation != "read committed":
            raise CallerTransactionError(
                f"the caller's transaction isolation level is {isolation.upper()}: its "
                "snapshot may predate a mode switch, so the adapter writes only in a READ "
                "COMMITTED transaction (PostgreSQL's default); nothing was written"
            )
        if writing and read_only == "on":
            raise InputError(
                "connection= is in a READ ONLY transaction (postgresql_readonly, "
                "default_transaction_read_only, a standby): the adapter cannot write in it; "
                "nothing was written: pass a connection of a read-write transaction"
            )
        if found != self.found and time.monotonic() - self._read_again_at > REFOUND_SECONDS:
            # A table swapped since (a rename, a restore) has another oid: read again.
            self._read_again_at = time.monotonic()
            with self.engine.connect() as own:
                self.found = self._state(own)[2]
        if found != self.found:
            raise InputError(self._elsewhere(conn, found))
        verdicts[self] = (transaction, writing)

    def _state(self, conn: sa.Connection) -> tuple[str, str, tuple[int, ...]]:
        isolation, read_only, compat_on_path, found = conn.execute(self._state_read).one()
        if compat_on_path:
            found = conn.execute(self._found_without_compat).scalar_one()
        return str(isolation), str(read_only), tuple(int(oid) for oid in found)

    def _elsewhere(self, conn: sa.Connection, found: tuple[int, ...]) -> str:
        """Which name the caller's search_path finds elsewhere, said plainly."""
        path = conn.exec_driver_sql("SELECT current_setting('search_path')").scalar_one()

        def shown(oid: int) -> str:
            if not oid:
                return "nothing"
            return str(conn.execute(_FOUND, {"oid": oid}).scalar_one_or_none() or "nothing")

        name, theirs, ours = next(
            (n, f, o) for n, f, o in zip(self.names, found, self.found, strict=True) if f != o
        )
        return (
            f"connection=: its search_path ({path}) finds {name} as {shown(theirs)}, where "
            f"the adapter's own connections find {shown(ours)}; nothing was written: lend "
            "the adapter a connection whose search_path reaches the tables its own do (an "
            "application that sets a tenant's schema first: the legacy tables' schema in "
            "unistatus's settings, or the tenant's schema after them)"
        )
