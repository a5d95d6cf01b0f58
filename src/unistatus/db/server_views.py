"""The PostgreSQL server's views unistatus reads about other sessions, and the
statements it reads them with: live traffic (:func:`live_sessions_count`), lock waits
(:func:`lock_waits_count`), replication lag (:func:`replication_lag`), and the lock
holders a mode switch waits for (:mod:`unistatus.db.mode_lock_wait`).

Without ``pg_read_all_stats`` (or ``pg_monitor``) a role reads other roles' sessions in
``pg_stat_activity`` with their type, state and times hidden (NULL), and no replication
lag; ``pg_locks`` it reads in full. Catalog names, never translated by the schema
setting.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from unistatus.db.engine import TOOL_APPLICATION_PREFIX

__all__ = [
    "PG_CLASS",
    "PG_DATABASE",
    "PG_LOCKS",
    "PG_STAT_ACTIVITY",
    "activity_view",
    "lock_waits_count",
    "live_sessions_count",
    "replication_lag",
    "this_database",
]

PG_STAT_ACTIVITY = sa.table(
    "pg_stat_activity",
    sa.column("pid", sa.Integer),
    sa.column("datname", sa.Text),
    sa.column("backend_type", sa.Text),
    sa.column("application_name", sa.Text),
    sa.column("state", sa.Text),
    sa.column("state_change", sa.DateTime(timezone=True)),
    sa.column("xact_start", sa.DateTime(timezone=True)),
    schema="pg_catalog",
)
PG_LOCKS = sa.table(
    "pg_locks",
    sa.column("locktype", sa.Text),
    sa.column("database"),
    sa.column("relation"),
    sa.column("mode", sa.Text),
    sa.column("classid"),
    sa.column("objid"),
    sa.column("objsubid"),
    sa.column("pid", sa.Integer),
    sa.column("virtualtransaction", sa.Text),
    sa.column("granted", sa.Boolean),
    schema="pg_catalog",
)
PG_CLASS = sa.table(
    "pg_class", sa.column("oid"), sa.column("relpersistence", sa.Text), schema="pg_catalog"
)
PG_DATABASE = sa.table("pg_database", sa.column("oid"), sa.column("datname"), schema="pg_catalog")
_REPLICATION = sa.table(
    "pg_stat_replication", sa.column("replay_lag", sa.Interval), schema="pg_catalog"
)
_VACUUMING = sa.table("pg_stat_progress_vacuum", sa.column("pid", sa.Integer), schema="pg_catalog")
_ANALYZING = sa.table("pg_stat_progress_analyze", sa.column("pid", sa.Integer), schema="pg_catalog")
_WAL_SENDERS = sa.table("pg_stat_replication", sa.column("pid", sa.Integer), schema="pg_catalog")


def this_database() -> sa.ScalarSelect[Any]:
    """The oid of the database the session is connected to, as ``pg_locks.database``
    names it (a scalar subquery): locks and sessions of this database only."""
    return (
        sa.select(PG_DATABASE.c.oid)
        .where(PG_DATABASE.c.datname == sa.func.current_database())
        .scalar_subquery()
    )


def activity_view() -> sa.Select[Any]:
    """This role, and whether it reads other roles' sessions in full (a superuser, or a
    member of ``pg_read_all_stats``, which ``pg_monitor`` includes)."""
    return sa.select(sa.func.current_user(), sa.func.pg_has_role("pg_read_all_stats", "USAGE"))


def replication_lag() -> sa.Select[Any]:
    """How far (seconds) the furthest replica is behind in replaying: NULL for a replica
    that has caught up and gone quiet, and for a role without ``pg_read_all_stats``."""
    return sa.select(sa.func.max(sa.extract("epoch", _REPLICATION.c.replay_lag)))


def lock_waits_count(oids: list[Any]) -> sa.Select[Any]:
    """Sessions waiting for a lock on one of the relations ``oids`` (a relation lock),
    or for anything (a row's transaction, mostly) while holding a lock on one of them."""
    waiting, holding = PG_LOCKS.alias("waiting"), PG_LOCKS.alias("holding")
    works_on_them = (
        sa.select(sa.literal(1))
        .where(holding.c.pid == waiting.c.pid, holding.c.granted, holding.c.relation.in_(oids))
        .exists()
    )
    return sa.select(sa.func.count(sa.distinct(waiting.c.pid))).where(
        ~waiting.c.granted,
        waiting.c.pid != sa.func.pg_backend_pid(),
        sa.or_(waiting.c.relation.in_(oids), works_on_them),
    )


def live_sessions_count(*, siblings: bool) -> sa.Select[Any]:
    """Other sessions of this database at work now or in the last second, unistatus's
    tools left out (see :meth:`unistatus.db.dialect.DialectOps.live_sessions`).

    Sessions named as this one are its siblings (the same engine's pool, the process's
    other workers): an application sharing the backfill's name cannot be told from it,
    and is not counted (no worse than not looking). Siblings count only while at work
    now: the caller's own connections, back in its pool a moment ago, are not live
    traffic.
    """
    a = PG_STAT_ACTIVITY
    name = sa.func.coalesce(a.c.application_name, "")
    other = name != sa.func.current_setting("application_name")
    recently = a.c.state_change > sa.func.clock_timestamp() - sa.text("interval '1 second'")
    seen_at_work = sa.and_(
        a.c.backend_type == "client backend",
        sa.or_(a.c.state != "idle", sa.and_(other, recently)),
    )
    count = sa.select(sa.func.count()).where(
        a.c.datname == sa.func.current_database(),
        a.c.pid != sa.func.pg_backend_pid(),
        ~name.startswith(TOOL_APPLICATION_PREFIX, autoescape=True),
        sa.or_(seen_at_work, _hidden_in_a_transaction(a)),
    )
    return count if siblings else count.where(other)


def _hidden_in_a_transaction(a: sa.TableClause) -> sa.ColumnElement[bool]:
    """A session of another role whose state this role may not read (its type, state and
    times NULL), in a transaction now: it holds its virtual transaction's lock, which
    ``pg_locks`` shows every role. Not live traffic, left out: a vacuum or analyze while
    it reports its progress (autovacuum's workers run as the superuser; between two
    tables a worker is counted), and a replication sender (a logical one decodes every
    transaction, the backfill's own included). Such a session is seen only while in a
    transaction, not in the second after it, and a parallel query's workers count as
    sessions of their own."""
    holds_its_transaction = (
        sa.select(sa.literal(1))
        .where(PG_LOCKS.c.pid == a.c.pid, PG_LOCKS.c.locktype == "virtualxid", PG_LOCKS.c.granted)
        .exists()
    )
    maintenance = sa.union_all(
        sa.select(_VACUUMING.c.pid), sa.select(_ANALYZING.c.pid), sa.select(_WAL_SENDERS.c.pid)
    )
    return sa.and_(
        a.c.backend_type.is_(None),
        a.c.state.is_(None),
        holds_its_transaction,
        a.c.pid.not_in(maintenance.scalar_subquery()),
    )
