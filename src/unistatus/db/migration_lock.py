"""The lock that lets one migration of an installation run at a time, and who holds it.

Every migration (`init`, a retirement, its undo: :func:`unistatus.db.schema.upgrade` and
``downgrade``) takes this advisory lock exclusive first in its transaction (PostgreSQL;
SQLite's write transaction serializes them), so a second one waits for the first and
then finds what it committed. One that waits names the holder (the look before each of
its attempts, :mod:`unistatus.db.ddl_wait`): a retirement waiting for the mode lock
inside its attempt holds the migration lock meanwhile, and an `init` that called it
"another migration (`init`)" sent the operator after the wrong command. So each
migration also takes, beside it, a shared advisory lock keyed by its command (a tag:
nobody waits for it); the one waiting reads which tag is held. A holder without one (an
older release's `init`, which took the lock alone) is named as an `init`.
"""

from __future__ import annotations

import sqlalchemy as sa

from unistatus.db.binding import schema_of
from unistatus.db.mode_lock_keys import mode_lock_key, system_lock_key
from unistatus.db.server_views import PG_LOCKS, this_database

__all__ = [
    "INIT_COMMAND",
    "MIGRATION_LOCK",
    "RETIRE_COMMAND",
    "UNDO_COMMAND",
    "migration_lock",
    "migration_lock_key",
    "take_migration_lock",
]

# What the lock's key is derived from (as a system's mode lock is, never equal to one:
# :func:`unistatus.db.mode_lock_keys.system_lock_key`); its tags' keys too.
MIGRATION_LOCK = "migration"
# The commands that migrate, as their messages tell the operator to run them again.
INIT_COMMAND = "unistatus init"
RETIRE_COMMAND = "unistatus retire legacy-columns"
UNDO_COMMAND = f"{RETIRE_COMMAND} --undo"
# The holder of the migration lock as one waiting for it names it, by the holder's
# command: the longest of these its command is or begins with (`--compat-views` is a
# retirement too). Another command tags nothing, and is named as an untagged holder.
_HOLDERS = {
    INIT_COMMAND: "another migration (`init`)",
    RETIRE_COMMAND: f"a retirement (`{RETIRE_COMMAND}`)",
    UNDO_COMMAND: f"the undo of a retirement (`{UNDO_COMMAND}`)",
}
_UNTAGGED = _HOLDERS[INIT_COMMAND]


def migration_lock_key(conn: sa.Connection) -> int:
    """The migration lock's key for the installation ``conn`` is bound to."""
    return system_lock_key(mode_lock_key(schema_of(conn)), MIGRATION_LOCK)


def _tag_key(key: int, tagged: str) -> int:
    return system_lock_key(key, f"{MIGRATION_LOCK} {tagged}")


def _tagged(command: str) -> str | None:
    """Which of :data:`_HOLDERS` ``command`` is (None: none)."""
    known = [c for c in _HOLDERS if command == c or command.startswith(c + " ")]
    return max(known, key=len) if known else None


def take_migration_lock(conn: sa.Connection, command: str) -> None:
    """Take the migration lock in ``conn``'s transaction (PostgreSQL), waiting for it as
    the transaction's ``lock_timeout`` says, then the tag of ``command``."""
    key = migration_lock_key(conn)
    locks = [sa.func.pg_advisory_xact_lock(key)]
    tagged = _tagged(command)
    if tagged is not None:
        # In the same statement (a SELECT's list is evaluated in order): one waiting
        # does not read the lock held and no tag between two statements, and name a
        # retirement an `init`.
        locks.append(sa.func.pg_advisory_xact_lock_shared(_tag_key(key, tagged)))
    conn.execute(sa.select(*locks))


def migration_lock(conn: sa.Connection) -> tuple[int, str]:
    """The migration lock as a look names it (an advisory lock of
    :class:`unistatus.db.ddl_wait.Changes`): its key, and what its holder is doing now
    (read from the tag held; only the holder of the lock holds one)."""
    key = migration_lock_key(conn)
    tags = {_tag_key(key, tagged): name for tagged, name in _HOLDERS.items()}
    L = PG_LOCKS
    # A bigint key's advisory lock: its high and low 32 bits are classid and objid.
    held = sa.cast(L.c.classid, sa.BigInteger) * 2**32 + sa.cast(L.c.objid, sa.BigInteger)
    here = this_database()
    q = sa.select(held).where(
        L.c.locktype == "advisory",
        L.c.objsubid == 1,
        L.c.granted,
        L.c.database == here,
        held.in_(list(tags)),
    )
    found = [tags[k] for k in conn.execute(q).scalars() if k in tags]
    return key, found[0] if found else _UNTAGGED
