"""Row-level security that hides rows from the role unistatus connects as (PostgreSQL).

A table with ``ROW LEVEL SECURITY`` enabled shows a role only the rows its policies let
through, silently: no error, just fewer rows. A backfill, a check, a phase gate, an
archive export or verify, a retirement then counts what it sees and reports 100% of it
(an exploratory tester: "exchange 10 of 10 complete", "50 of 50 consistent", an archive
of half the table that verified, on a table of 20 exchanges). Those commands are refused
at their start instead (:func:`require_every_row`), naming the table and what to do; the
adapter says it once at its start (a warning, not a refusal: an application may run it
under its own tenancy on purpose, each caller seeing its own rows).

The policies apply unless the role is a superuser, has ``BYPASSRLS``, or owns the table
(is a member of its owning role) and the table is not ``FORCE ROW LEVEL SECURITY``: the
rule PostgreSQL applies (``check_enable_rls``). Where they apply, they hide nothing when
permissive policies that apply to the role (to PUBLIC, to it, to a role whose privileges
it inherits) read ``USING (true)`` for SELECT, UPDATE and DELETE (or ALL: a locking read
needs the UPDATE one) and no restrictive one applies to it: the
way out for an operator who cannot grant ``BYPASSRLS`` (that needs a superuser). Any
other qual is not judged (it may hide nothing, or everything): an operator who verified
the role sees every row sets ``row_security_check = false``. One catalog query over the
legacy tables and unistatus's own.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from unistatus.config import Settings
from unistatus.db.binding import qualify
from unistatus.db.catalog import metadata, qualified_name
from unistatus.db.legacy_reflect import legacy_schemas, legacy_table_name
from unistatus.errors import ConfigError

__all__ = [
    "hidden_by_row_security",
    "require_every_row",
    "row_security_problem",
    "warn_row_security",
]

log = logging.getLogger("unistatus.db.row_security")


# A policy of the table whose filter applies to this role: for PUBLIC, the role, or a
# role whose privileges it has (``USAGE``: PostgreSQL applies a group's policies only
# where the role inherits them; ``MEMBER`` for the restrictive half: erring there refuses
# more, never less).
def _policy(member: str) -> str:
    return (
        "SELECT FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid"
        " AND EXISTS (SELECT FROM unnest(p.polroles) AS pr(oid) WHERE pr.oid = 0"
        f"  OR pg_catalog.pg_has_role(current_user, pr.oid, '{member}'))"
    )


# A permissive policy letting every row through for command ``cmd`` (or ALL), its
# WITH CHECK (if any) too. SELECT is not enough: a locking read (FOR UPDATE / SHARE: the
# adapter, the check's re-read, the backfill's claims) and UPDATE need an UPDATE policy,
# DELETE a DELETE one (a reviewer).
def _shows_every_row(cmd: str) -> str:
    return (
        f"EXISTS ({_policy('USAGE')} AND p.polpermissive AND p.polcmd IN ('{cmd}', '*')"
        " AND pg_catalog.pg_get_expr(p.polqual, p.polrelid) = 'true'"
        " AND (p.polwithcheck IS NULL"
        "  OR pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) = 'true'))"
    )


_HIDDEN = sa.text(
    "SELECT t.shown, c.relforcerowsecurity, current_user"
    " FROM unnest(CAST(:names AS text[]), CAST(:shown AS text[])) WITH ORDINALITY"
    "  AS t(name, shown, n)"
    " JOIN pg_catalog.pg_class c ON c.oid = to_regclass(t.name)"
    " JOIN pg_catalog.pg_roles r ON r.rolname = current_user"
    " WHERE c.relrowsecurity AND NOT r.rolsuper AND NOT r.rolbypassrls"
    " AND (c.relforcerowsecurity OR NOT pg_catalog.pg_has_role(c.relowner, 'USAGE'))"
    " AND NOT ("
    + " AND ".join(_shows_every_row(cmd) for cmd in "rwd")
    + f"  AND NOT EXISTS ({_policy('MEMBER')} AND NOT p.polpermissive"
    "   AND p.polcmd IN ('r', 'w', 'd', '*')))"
    " ORDER BY t.n"
)


def hidden_by_row_security(conn: sa.Connection, settings: Settings) -> list[tuple[str, bool, str]]:
    """The tables (legacy, then ours) whose rows a policy may hide from this connection's
    role: (the table as messages name it, whether FORCE, the role). None on SQLite."""
    if conn.dialect.name != "postgresql":
        return []
    specs = list(settings.legacy_tables.values())
    schemas = legacy_schemas(conn, specs)
    names = [qualify(s.table, where, conn.dialect) for s, where in zip(specs, schemas, strict=True)]
    shown = [legacy_table_name(spec) for spec in specs]
    for name in sorted(metadata.tables):
        names.append(qualified_name(name, conn))
        shown.append(qualified_name(name, conn))
    rows = conn.execute(_HIDDEN, {"names": names, "shown": shown})
    return [(str(table), bool(force), str(role)) for table, force, role in rows]


def row_security_problem(conn: sa.Connection, settings: Settings) -> str | None:
    """What hides rows from this role, and what to do; None when nothing does."""
    hidden = hidden_by_row_security(conn, settings)
    if not hidden:
        return None
    role = hidden[0][2]
    tables = ", ".join(table + (" (FORCE)" if force else "") for table, force, _ in hidden)
    owner = "" if all(force for _, force, _ in hidden) else " or as the table's owner (not FORCE)"
    return (
        f"row-level security is enabled on {tables} and role {role!r} does not bypass it: "
        "its policies hide rows, so every count would be of the rows this role sees only. "
        f"Run as a role with BYPASSRLS (ALTER ROLE {role} BYPASSRLS), a superuser{owner}; "
        "the owner of a FORCE table is subject to its policies too; or a policy "
        f"FOR ALL TO {role} USING (true); or row_security_check = false where you "
        "verified this role sees every row"
    )


def require_every_row(engine: sa.Engine, settings: Settings, what: str) -> None:
    """ConfigError, before ``what`` (a command) starts, where row-level security hides
    rows from this role (its answer would be about the visible rows only)."""
    if engine.dialect.name != "postgresql" or not settings.row_security_check:
        return
    with engine.connect() as conn:
        problem = row_security_problem(conn, settings)
    if problem is not None:
        raise ConfigError(f"refusing {what}: {problem}")


def warn_row_security(engine: sa.Engine, settings: Settings) -> None:
    """A warning at the adapter's start where row-level security hides rows from this
    role. Not a refusal: the adapter reads and writes as its caller's role, whose
    policies may be on purpose (a tenant's own rows); a hidden row is "not found"."""
    if engine.dialect.name != "postgresql" or not settings.row_security_check:
        return
    with engine.connect() as conn:
        problem = row_security_problem(conn, settings)
    if problem is not None:
        log.warning("%s (the adapter goes on with the rows it sees)", problem)
