"""Every error unistatus raises on bad input or a refused operation.

One root (catch everything at once); context as attributes, so callers need not parse messages::

    UnistatusError
    ├── ConfigError                 bad settings, unknown table or column names
    │   ├── LegacyStatusRetiredError  ... the legacy status columns are retired (phase 4)
    │   ├── SessionSettingsError    a connection's client_encoding or DateStyle unfit
    │   ├── SchemaOutdatedError     the database's schema is older than this release needs
    │   └── SchemaTooNewError       ... newer than this release knows (a newer release's)
    ├── InputError                  a value the caller passed is malformed
    │   ├── UnmappableStatusError   a legacy status the mapping does not know
    │   │   └── UnmappableStoredStatusError  ... stored in the row a change starts from
    │   ├── InvalidStatusError      a unified status not valid for the transaction type
    │   ├── InvalidTransitionError  a status change the transition rules forbid
    │   ├── WriteRefusedError       the application's own rule (a constraint, a trigger)
    │   │   └── UnstorableLegacyStatusError  ... its status column cannot hold the value
    │   └── InvalidIdentifierError  an entity id that is neither UTX... nor system:id
    ├── EntityNotFoundError         no transaction with that id
    ├── ModeError                   an operation not allowed in the current write mode
    ├── GateError                   a phase gate failed (and the move was not forced)
    │   └── PhaseMovedError         ... the phase is not the one the step was told to leave
    └── StorageError                the database failed or went away
        ├── CallerTransactionError  ... inside the caller's transaction (``connection=``)
        ├── ConnectionLimitError    ... refused a connection: a CONNECTION LIMIT, max_connections
        └── ModeNotRestoredError    ... so a run's own write mode was not put back
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class UnistatusError(Exception):
    """Root of every error unistatus raises on purpose.

    Pickled (a task runner hands a worker's exception to the caller) and copied as it
    is: its message and attributes, never rebuilt by calling ``__init__`` again with
    the message alone, which the classes taking their context as arguments refuse."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (type(self), self.args), self.__dict__


def _rebuilt(cls: type[UnistatusError], args: tuple[Any, ...]) -> UnistatusError:
    """An error of ``cls`` with ``args``, ``__init__`` not called (its attributes follow
    as the pickle's state)."""
    error = cls.__new__(cls)
    error.args = args
    return error


class ConfigError(UnistatusError):
    """Settings are invalid or do not match the live database."""


class LegacyStatusRetiredError(ConfigError):
    """``what`` needs the legacy status columns, which `retire legacy-columns` dropped."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(
            f"{what}: the legacy status columns are retired (`unistatus retire "
            'legacy-columns`, phase 4); `unistatus retire legacy-columns --undo --reason "..."` '
            "restores them"
        )


class SessionSettingsError(ConfigError):
    """A connection's session setting (``setting``: ``client_encoding`` or
    ``DateStyle``) that unistatus's driver cannot work with: text the encoding cannot
    carry, timestamps not in ISO. Met on an application's own engine or connection
    (unistatus's own connections set both): the connection's, not the database's
    failure, so never counted in the error rate. ``encoding``: text the server could
    not convert between the connection's client_encoding and the database's
    server_encoding (either may be the one that cannot hold it; with unistatus's own
    UTF8 connections, the database's)."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(message)


class SchemaOutdatedError(ConfigError):
    """The database's unistatus schema is at ``found`` (its stored revisions, or
    "nothing"), older than ``needed``, the revision this release installs: an older
    release made it and `unistatus init` has not upgraded it yet. ``what`` needed it.
    Refused before acting: this release would misread its state (the mode and phase of
    an older release are under other keys) or miss its tables."""

    def __init__(self, what: str, found: str, needed: str) -> None:
        self.what = what
        self.found = found
        self.needed = needed
        super().__init__(
            f"{what} needs the schema at revision {needed} (it is at {found}): run `unistatus init`"
        )


class SchemaTooNewError(ConfigError):
    """The database holds revision ``found``, which this release does not know: a newer
    release upgraded it. ``known`` is the newest revision this release knows (what it
    installs). Nothing this release does on it can be trusted, `unistatus init` included."""

    def __init__(self, found: str, known: str) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"the database was upgraded by a newer unistatus (revision {found}); this "
            f"release knows revisions up to {known}: use the newer release"
        )


class InputError(UnistatusError):
    """A value passed by the caller is malformed or not allowed."""


class UnmappableStatusError(InputError):
    """A legacy status value that the mapping does not cover."""

    def __init__(self, system: str, value: object) -> None:
        self.system = system
        self.value = value
        super().__init__(
            f"unmappable {system} status {value!r}: not one of the legacy statuses of {system} "
            "(values are exact and upper case)"
        )


class UnmappableStoredStatusError(UnmappableStatusError):
    """A status change refused because the status the row holds now is unmappable.

    The requested status may be perfectly valid; the message says so, so the caller does
    not go looking for a typo in the argument, and names the ways out.
    """

    def __init__(self, system: str, value: object, entity: str, requested: object) -> None:
        super().__init__(system, value)
        self.entity = entity
        self.requested = requested
        self.args = (
            f"{entity} holds the unmappable legacy status {value!r} (the {system} mapping "
            f"does not know it): the stored value is the problem, not the requested "
            f"{requested!r}. "
            "Overwrite it as an audited override (force; `unistatus tx update ... --force "
            "--reason ...`), or leave it to the quarantine: fix the row or extend the "
            "mapping, then `unistatus backfill --retry-quarantine`",
        )


class UncopyableLegacyRowError(InputError):
    """A change refused because it would make a unified row from a legacy row whose
    shared fields a unified row cannot take (a NULL currency, a negative amount, ...)."""

    def __init__(self, entity: str, reason: str) -> None:
        self.entity = entity
        self.reason = reason
        super().__init__(
            f"{entity} has no unified row yet and its legacy row cannot make one ({reason}): "
            "nothing was written. The stored row is the problem: mend it in legacy, then "
            "`unistatus backfill --retry-quarantine` copies it (a backfill quarantines it "
            "meanwhile)"
        )


class InvalidStatusError(InputError):
    """A status that is not valid for the transaction type."""

    def __init__(
        self,
        transaction_type: str,
        status: object,
        valid: Iterable[str],
        legacy: Iterable[str] = (),
        legacy_system: str = "",
    ) -> None:
        self.transaction_type = transaction_type
        self.status = status
        unified, legacy = sorted(valid), sorted(legacy)
        # Every value accepted as it is written: unified first, then the legacy ones.
        self.valid = unified + [value for value in legacy if value not in unified]
        text = f"status {status!r} is not valid for {transaction_type}; valid: {', '.join(unified)}"
        if legacy:
            text += f"; legacy ({legacy_system}): {', '.join(legacy)}"
        super().__init__(text)


class InvalidTransitionError(InputError):
    """A status change that the transition rules do not allow."""

    def __init__(
        self, transaction_type: str, from_status: str, to_status: str, allowed: Iterable[str]
    ) -> None:
        self.transaction_type = transaction_type
        self.from_status = from_status
        self.to_status = to_status
        self.allowed = sorted(allowed)
        allowed_text = ", ".join(self.allowed) if self.allowed else "nothing (final status)"
        super().__init__(
            f"{transaction_type} cannot go from {from_status} to {to_status}; "
            f"allowed from {from_status}: {allowed_text}"
        )


class WriteRefusedError(InputError):
    """The database refused the write for a rule of the application's own: a CHECK, NOT
    NULL, unique or foreign-key constraint of its tables, or its trigger raising an
    exception. The caller's request was refused, as by the transition rules: nothing
    was written, it is counted refused (not in the error rate), and the same request
    will be refused again. In the caller's transaction (``connection=``) it is
    :class:`CallerWriteRefusedError` instead."""


class UnstorableLegacyStatusError(WriteRefusedError):
    """A write whose legacy status value the legacy status column cannot hold: longer
    than its declared length (``varchar(20)`` and the 22 characters of
    ``PENDING_ADDRESS_CONFIG``), or not a label of its enum type. Refused before anything
    is sent to the database, in the caller's transaction too (which stays usable), in
    every mode (a rollback's replay writes UNIFIED_ONLY's statuses into legacy):
    counted refused, not in the error rate. ``table``, ``column``, ``value`` and
    ``problem`` (why the column's type refuses it) say which."""

    def __init__(self, table: str, column: str, value: str, problem: str) -> None:
        self.table, self.column, self.value, self.problem = table, column, value, problem
        super().__init__(
            f"legacy table {table!r}: its status column {column!r} {problem}: refused "
            "before the database, nothing was written. Widen the column (or add the value "
            "to its enum type), or write another status"
        )


class InvalidIdentifierError(InputError):
    """An entity id that is neither a UTX id nor a legacy reference."""


class RepairRunningError(InputError):
    """Another repair of the same system is running (an operator's or the monitor's):
    refused before anything was read, nothing repaired."""


class EntityNotFoundError(UnistatusError):
    """No transaction exists for the given id."""

    def __init__(self, entity_id: str) -> None:
        self.entity_id = entity_id
        super().__init__(f"no transaction {entity_id}")


class ModeError(UnistatusError):
    """The operation is not possible in the current write mode."""


# The longest-open holders a ModeLockBusyError names (the rest are counted).
SHOWN_HOLDERS = 5


class ModeLockBusyError(ModeError):
    """A mode switch (or replay) gave up waiting for the mode lock: other sessions held
    it for longer than it waits (a caller's transaction left open, say). ``outcome``
    says what was left undone (default: nothing was changed); ``holders`` are those
    sessions (pid, application_name, state, open_seconds: None when unknown)."""

    def __init__(
        self,
        what: str,
        waited: float,
        holders: list[dict[str, Any]],
        *,
        outcome: str = "nothing was changed",
    ) -> None:
        self.what, self.waited, self.holders = what, waited, holders
        super().__init__(
            f"gave up after {waited:.0f} s waiting for the {what}, held by "
            f"{self.describe(holders)}; {outcome}, and writers went on meanwhile. End "
            "those transactions (their applications' own, or pg_terminate_backend) and run "
            "it again"
        )

    @staticmethod
    def describe(holders: list[dict[str, Any]]) -> str:
        """The holders in one line, the longest-open first (those given are in that order)."""
        if not holders:
            return "no session any more (it was free again as it gave up)"
        shown = "; ".join(
            f"pid {h['pid']} ({h['application_name'] or 'no application_name'}, {h['state']}, "
            + (
                "transaction open for how long unknown: no pg_read_all_stats)"
                if h["open_seconds"] is None
                else f"transaction open {h['open_seconds']:g} s)"
            )
            for h in holders[:SHOWN_HOLDERS]
        )
        more = len(holders) - SHOWN_HOLDERS
        return shown + (f" and {more} more" if more > 0 else "")


class GateError(UnistatusError):
    """A phase gate did not pass."""


class PhaseMovedError(GateError):
    """A phase step given the phase it leaves (``--from-phase``) found another: a retried
    or duplicated step that would have moved a second phase. Nothing changed."""

    def __init__(self, what: str, expected: int, actual: int | None, who: str) -> None:
        self.expected = expected
        self.actual = actual
        now = f"phase {actual}" if actual is not None else "different phases"
        super().__init__(
            f"refusing to {what}: {who} in {now}, not {expected}: another step moved it "
            "(a retry, a second run, a rollback); nothing changed. Check `unistatus phase "
            "status` before going on"
        )


class StorageError(UnistatusError):
    """The database failed or could not be reached."""


class ConnectionLimitError(StorageError):
    """The server refused a new connection for a limit (SQLSTATE 53300: the role's or
    the database's ``CONNECTION LIMIT``, ``max_connections``, the slots reserved for
    superusers): reachable and up, but full. Nothing was sent on it, so nothing was
    written; the adapter retried within the write's time before it gave up. ``pool``:
    how many connections unistatus's pool for this process may open (None: unknown)."""

    def __init__(self, message: str, pool: int | None = None) -> None:
        self.pool = pool
        super().__init__(message)


class TableLockBusyError(StorageError):
    """A command that changes tables (a retirement, its undo, `capture enable`, `init`)
    gave up waiting for them: other sessions held them for longer than it waits (the
    ``mode_lock_wait_seconds`` setting), a long reader or a transaction left open, say.
    It never queued behind such a transaction, so writers went on; nothing changed.
    ``holders``: those sessions (pid, application_name, state, open_seconds: None when
    unknown, ``locks``: what each holds); ``command``: what to run again."""

    def __init__(
        self, what: str, waited: float, holders: list[dict[str, Any]], command: str
    ) -> None:
        self.what, self.waited, self.holders, self.command = what, waited, holders, command
        super().__init__(
            f"cannot {what} (nothing changed): gave up after {waited:.0f} s waiting for "
            f"the locks on the tables it must change, held by {self.describe(holders)}; it did not "
            "queue behind them, so their writers went on. End those transactions (their "
            f"applications' own, or pg_terminate_backend), then run `{command}` again"
        )

    @staticmethod
    def describe(holders: list[dict[str, Any]]) -> str:
        """The holders in one line, the longest-open first (those given are in that order)."""
        if not holders:
            return (
                "no session any more (short transactions kept it waiting; it was free as it "
                "gave up)"
            )
        shown = "; ".join(
            f"pid {h['pid'] if h['pid'] is not None else '(prepared)'} "
            f"({h['application_name'] or 'no application_name'}, {h['state']}, "
            + (
                "transaction open for how long unknown: no pg_read_all_stats"
                if h["open_seconds"] is None
                else f"transaction open {h['open_seconds']:g} s"
            )
            + f", holding {', '.join(h['locks'])})"
            for h in holders[:SHOWN_HOLDERS]
        )
        more = len(holders) - SHOWN_HOLDERS
        return shown + (f" and {more} more" if more > 0 else "")


class CallerTransactionError(StorageError):
    """The database failed inside the caller's transaction (an operation given
    ``connection=``). The transaction may now be unusable: only the caller can (and
    must) roll it back; nothing was retried. ``result`` is the failed
    :class:`~unistatus.adapter.model.DualWriteResult` of a write (None for a read).

    ``retryable``: the transaction lost a race (a deadlock, a serialization failure, a
    lock or statement timeout): rolled back and run again, it may succeed. ``sqlstate``:
    the database's code for the failure, where it gave one."""

    def __init__(
        self,
        message: str,
        result: Any = None,
        *,
        sqlstate: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.result = result
        self.sqlstate = sqlstate
        self.retryable = retryable
        super().__init__(message)


class CallerWriteRefusedError(CallerTransactionError):
    """The refusal of :class:`WriteRefusedError` in the caller's transaction
    (``connection=``): counted refused, not in the error rate, but, as for any
    :class:`CallerTransactionError`, the transaction must be rolled back (PostgreSQL
    aborted it; on SQLite the call's own writes are undone, its savepoint rolled back,
    but the mode lock it took stays). Not an :class:`InputError`, whose transaction stays
    usable."""


class CallerKeyTakenError(CallerTransactionError):
    """A keyed create in the caller's transaction whose idempotency key a concurrent
    call committed first (a client's retry racing its first request): nothing of this
    call stands. Roll the transaction back (PostgreSQL aborted it) and repeat the call:
    it returns the first call's result (``replayed=True``). Counted refused, not in the
    error rate: the caller's duplicate, not the database failing."""


class ModeNotRestoredError(StorageError):
    """A run that set the write mode for itself (the load test) could not put the
    previous one back: ``left`` is the mode each system is in (as last seen), ``previous``
    the mode it should be in, ``command`` the command that puts it back, ``restore_error``
    why it could not and ``run_error`` the run's own error, if it had failed first."""

    def __init__(
        self,
        message: str,
        *,
        left: dict[Any, Any],
        previous: Any,
        command: str,
        restore_error: BaseException,
        run_error: BaseException | None = None,
    ) -> None:
        self.left, self.previous, self.command = left, previous, command
        self.restore_error, self.run_error = restore_error, run_error
        super().__init__(message)
