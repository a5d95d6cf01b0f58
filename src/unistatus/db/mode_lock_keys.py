"""The keys of the mode locks (PostgreSQL advisory locks) and the locked-mode function.

Every write takes its system's mode lock shared and a mode switch takes it exclusive
(:meth:`unistatus.db.dialect.DialectOps.mode_shared_lock`); these are the keys, one set
per installation (schema) and per legacy system, and the call of revision 0015's
``unistatus_locked_mode(system)``. Revisions 0007, 0011 and 0015 hold frozen copies.
"""

from __future__ import annotations

import zlib
from typing import Any

import sqlalchemy as sa

from unistatus.domain.statuses import LegacySystemType

__all__ = [
    "LOCKED_MODE_FUNCTION",
    "MODE_LOCK_KEY",
    "SUMMARY_LOCK",
    "locked_mode_function",
    "mode_lock_key",
    "system_lock_key",
]

# Key of the advisory lock that orders writes against mode switches on PostgreSQL
# (tables in the default schema; another schema has its own: mode_lock_key).
MODE_LOCK_KEY = 0x756E6973  # "unis"
# The name the summary lock's key is derived from, as a system's is (system_lock_key):
# the lock of the global mode and phase keys, taken after a system's (PostgreSQL).
SUMMARY_LOCK = "summary"
# revision 0015's function (0007's, with a system): the mode locks and a fresh read of
# the mode of one system (PostgreSQL).
LOCKED_MODE_FUNCTION = "unistatus_locked_mode"


def mode_lock_key(schema: str | None) -> int:
    """The mode lock's key for the installation whose tables are in ``schema``.

    Advisory locks belong to the database, not a schema: two installations in one
    database (each in its schema) take keys of their own, so neither one's mode switch
    waits for the other's writes. The default keeps :data:`MODE_LOCK_KEY`; another
    schema's key has it in the high 32 bits (never equal to it) and the name's CRC-32 in
    the low ones.
    """
    if schema is None:
        return MODE_LOCK_KEY
    return (MODE_LOCK_KEY << 32) | zlib.crc32(schema.encode())


def system_lock_key(key: int, system: str) -> int:
    """The mode lock of one legacy system (``system``: its value, e.g. ``"CASHOUT"``) in
    the installation whose mode lock is ``key`` (:func:`mode_lock_key`).

    Never ``key`` itself (the low bit differs from the CRC's shifted value), positive and
    64-bit like it. Revision 0015 holds a frozen copy, baked into
    ``unistatus_locked_mode(system)``.
    """
    return key ^ ((zlib.crc32(system.encode()) << 1) | 1)


def locked_mode_function(
    schema: str | None, system: LegacySystemType | sa.ColumnElement[Any]
) -> sa.FunctionElement[Any]:
    """A call of ``unistatus_locked_mode(system)`` (revision 0015), in our tables'
    schema: both mode locks of ``system`` shared, then its mode read afresh."""
    packages = () if schema is None else (schema,)
    # A system is pasted as a constant (an enum value), so each statement names its
    # system in its text: its plan never depends on a parameter.
    arg = (
        sa.literal_column(f"'{system.value}'", sa.Text)
        if isinstance(system, LegacySystemType)
        else system
    )
    return sa.sql.functions.Function(
        LOCKED_MODE_FUNCTION, arg, type_=sa.Text, packagenames=packages
    )
