"""``check --out FILE``: every mismatching pair as one JSON line; ``repair --from FILE``.

A line holds the pair's key (system, legacy id, transaction id), the kinds it shows,
both statuses, the fields that differ with both values, and both updated times. Lines
are written as the check finds them (no more than 64 KiB held in memory) and flushed to disk
before the range's position is committed, so a resumed run cuts the file back to what
its committed ranges wrote and goes on: no line is lost or written twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from unistatus.domain import consistency
from unistatus.domain.ids import UTX_PATTERN, UtxId
from unistatus.domain.inputs import MAX_BIGINT
from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError, InvalidIdentifierError, StorageError
from unistatus.migration.private_files import FILE_MODE, private

__all__ = [
    "ListedKeys",
    "MismatchKey",
    "MismatchWriter",
    "mismatch_record",
    "read_mismatch_keys",
]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return consistency.shown_value(value)


def _side(values: Mapping[str, Any] | None, name: str) -> Any:
    return _plain(values.get(name)) if values else None


def mismatch_record(
    system: LegacySystemType,
    legacy_id: int | None,
    transaction_id: str | None,
    kinds: tuple[str, ...],
    legacy: Mapping[str, Any] | None,
    unified: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One line of the file: the pair, its kinds, both sides' values."""
    details = consistency.compare(system, legacy, unified)
    fields = [
        {"field": d.field, "legacy": _plain(d.legacy_value), "unified": _plain(d.unified_value)}
        for d in details
        if d.field is not None and d.field in consistency.SHARED_FIELDS
    ]
    return {
        "system": system.value,
        "legacy_id": legacy_id,
        "transaction_id": transaction_id,
        "kinds": list(kinds),
        "legacy_status": _side(legacy, "status"),
        "unified_status": _side(unified, "status"),
        "unified_legacy_status": _side(unified, "legacy_status"),
        "fields": fields,
        "legacy_updated_at": _side(legacy, "updated_at"),
        "unified_updated_at": _side(unified, "updated_at"),
    }


# Lines are gathered up to this many bytes before they are written: the file is written
# by this class alone (no hidden buffer that a failed write would flush again later).
_BUFFER_BYTES = 64 * 1024


class MismatchWriter:
    """Appends lines to the --out file; :meth:`sync` makes them durable, returns the size.

    A write that fails (a full disk) cuts the file back to what the last :meth:`sync`
    made durable, whole lines only (what the run's committed ranges wrote, which a
    resumed run goes on from), and is a StorageError "cannot write <path>: <reason>".
    """

    def __init__(self, path: str | os.PathLike[str], *, keep_bytes: int = 0) -> None:
        self.path = Path(path)
        try:
            self._file: IO[bytes] = _open_out(self.path, keep_bytes)
        except OSError as exc:
            raise InputError(f"--out {self.path}: {exc.strerror or exc}") from None
        self.lines = 0
        self._synced = keep_bytes
        self._pending = bytearray()

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        self._pending += line.encode("utf-8")
        self.lines += 1
        if len(self._pending) >= _BUFFER_BYTES:
            self._write_pending()

    def sync(self) -> int:
        self._write_pending()
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._fail(exc)
        self._synced = self._file.tell()
        return self._synced

    def close(self) -> None:
        """Closed; lines not synced yet belong to no committed range (a resumed run
        would cut them off): dropped."""
        self._pending.clear()
        self._file.close()

    def _write_pending(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        try:
            done = 0
            while done < len(data):  # a write may take part of the bytes only
                done += self._file.write(data[done:]) or 0
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> NoReturn:
        """The file cut back to its last synced size (whole lines), then the error."""
        self._pending.clear()
        try:
            self._file.truncate(self._synced)
            os.fsync(self._file.fileno())
        except OSError:
            pass  # the error said below stands; a resumed run cuts the file back itself
        raise StorageError(
            f"cannot write {self.path}: {exc.strerror or exc} (it keeps the whole lines "
            f"of the ranges checked so far, {self._synced:,} bytes; a stored run goes on "
            "with `unistatus check --resume` once there is room)"
        ) from None


def _open_out(path: Path, keep_bytes: int) -> IO[bytes]:
    """A new file (``keep_bytes`` 0), or a resumed run's, cut back to ``keep_bytes``:
    what its committed ranges wrote. Unbuffered: :class:`MismatchWriter` buffers.

    A resumed run's file must still hold those bytes: one moved away or cut short
    would be extended with NUL bytes (its committed lines lost, a `repair --from`
    failing on them, the report saying complete). Refused, the file left as it is, so
    the run resumes once the file is back.
    """
    if not keep_bytes:
        # Not cut before it is locked: another check's lines would be gone.
        # Opened without O_TRUNC and without O_APPEND (whose position stays at the old
        # end: the bytes a range commits were counted from there, and a resume refused).
        fd = private(path, os.O_WRONLY | os.O_CREAT)
        handle = _locked(open(fd, "wb", buffering=0, closefd=True), path)  # noqa: SIM115
        handle.truncate(0)
        handle.seek(0)
        # A file there before keeps its mode else; one of another user's is not ours to
        # change (written as before).
        with contextlib.suppress(PermissionError):
            os.fchmod(handle.fileno(), FILE_MODE)
        return handle
    try:
        handle = open(path, "r+b", buffering=0)  # noqa: SIM115 - never creates it
    except FileNotFoundError:
        raise InputError(
            f"--out {path} is gone (moved or deleted?): the run being resumed wrote "
            f"{keep_bytes:,} bytes of mismatches there. Put the file back and resume, or "
            "start a new run (`unistatus check` without --resume)"
        ) from None
    handle = _locked(handle, path)
    size = os.fstat(handle.fileno()).st_size
    if size < keep_bytes:
        handle.close()
        raise InputError(
            f"--out {path} is shorter ({size:,} bytes) than what the run being resumed "
            f"wrote there ({keep_bytes:,} bytes): not its file, or cut short. Put the "
            "run's file back and resume, or start a new run (`unistatus check` without "
            "--resume)"
        )
    handle.truncate(keep_bytes)
    handle.seek(keep_bytes)
    return handle


def _locked(handle: IO[bytes], path: Path) -> IO[bytes]:
    """``handle``, locked for this run until it is closed (an advisory lock: another
    `unistatus check` respects it); InputError, the file left as it is, when another run
    holds it (two checks given one --out spliced their lines into one file)."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(
            f"--out {path} is being written by another check: give each run a file of "
            "its own (nothing was written to it)"
        ) from None
    return handle


@dataclass(frozen=True)
class MismatchKey:
    """What ``repair --from`` needs of a line: which entity (``legacy_id`` derived from
    a UTX id when the line gives only that)."""

    line: int
    system: LegacySystemType
    legacy_id: int | None
    transaction_id: str | None


class _Repeated(Exception):
    """A key given twice in one JSON object (json takes the last one silently)."""


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Repeated(key)
        out[key] = value
    return out


def _key_of(line_no: int, text: str, where: str) -> MismatchKey:
    def bad(why: str) -> InputError:
        return InputError(f"{where}:{line_no}: {why}")

    try:
        data = json.loads(text, object_pairs_hook=_once_each)
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc.msg})") from None
    except _Repeated as exc:  # {"system": "CASHOUT", ..., "system": "ESCROW"}: which?
        raise bad(f"{exc.args[0]!r} given twice") from None
    if not isinstance(data, dict):
        raise bad("not a JSON object (a line of `unistatus check --out`)")
    legacy_id, utx = data.get("legacy_id"), data.get("transaction_id")
    if "system" in data:
        try:
            system = LegacySystemType.parse(str(data["system"]))
        except InputError as exc:
            raise bad(str(exc)) from None
    else:
        system = _system_of(utx, bad)
    if legacy_id is not None and (isinstance(legacy_id, bool) or not isinstance(legacy_id, int)):
        raise bad(f"legacy_id must be an integer or null, got {legacy_id!r}")
    if legacy_id is not None and not 0 < legacy_id <= MAX_BIGINT:
        # Refused with the file, not met mid-run: SQLite cannot bind it (a crash after
        # the lines before were repaired), PostgreSQL refuses it as that line's failure.
        raise bad(f"legacy_id out of range (1..{MAX_BIGINT}), got {legacy_id}")
    if utx is not None and not isinstance(utx, str):
        raise bad(f"transaction_id must be a string or null, got {utx!r}")
    if legacy_id is None and utx is None:
        raise bad("neither legacy_id nor transaction_id: no entity to repair")
    if utx is not None:
        legacy_id = _derived_legacy_id(system, legacy_id, utx, bad)
    return MismatchKey(line_no, system, legacy_id, utx)


def _system_of(utx: object, bad: Callable[[str], InputError]) -> LegacySystemType:
    """The system of a line without one: the one its ``transaction_id`` was derived from."""
    derived = None
    if isinstance(utx, str) and UTX_PATTERN.fullmatch(utx):
        try:
            derived = UtxId(utx).derived_ref
        except InvalidIdentifierError:
            derived = None
    if derived is None:
        raise bad("no 'system' (nor a transaction_id derived from a legacy row to tell it)")
    return derived.system


def _derived_legacy_id(
    system: LegacySystemType,
    legacy_id: int | None,
    utx: str,
    bad: Callable[[str], InputError],
) -> int | None:
    """The legacy id of a line that names a UTX id: its own, else the one the UTX id
    was derived from (as the repair queue's :func:`queue_target` reads a row).

    Without it a line naming a transaction by its id alone was taken for an orphan and
    left unrepaired. A system or legacy id that the UTX id contradicts names two
    entities: refused with the file rather than one of them guessed.
    """
    if not UTX_PATTERN.fullmatch(utx):
        raise bad(f"transaction_id {utx!r} is not a UTX id (UTX and 15 digits)")
    try:
        derived = UtxId(utx).derived_ref
    except InvalidIdentifierError as exc:
        raise bad(f"transaction_id {utx!r} is not a UTX id: {exc}") from None
    if derived is None:  # born unified: its id names no legacy row
        return legacy_id
    if derived.system is not system:
        raise bad(f"transaction_id {utx} is {derived}, not a {system.value} id")
    if legacy_id is not None and legacy_id != derived.legacy_id:
        raise bad(f"legacy_id {legacy_id} disagrees with transaction_id {utx} ({derived})")
    return derived.legacy_id


_GZIP_MAGIC = b"\x1f\x8b"


def read_mismatch_keys(path: str | os.PathLike[str]) -> Iterator[MismatchKey]:
    """The entities of a --out file, line by line (blank lines skipped).

    Raises :class:`InputError` naming the first bad line. Reads one line at a time; to
    validate the whole file before acting on it, :class:`ListedKeys` reads it once.
    """
    where = str(path)
    if where == "-":
        raise InputError("--from -: give a file (a pipe: --from /dev/stdin)")
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"--from {where}: {exc.strerror or exc}") from None
    with handle:
        for n, raw in enumerate(handle, start=1):
            if n == 1 and raw.startswith(_GZIP_MAGIC):
                raise InputError(f"{where}: gzip-compressed: uncompress it first (gunzip)")
            try:
                # A byte-order mark an editor put before the first line is no content.
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{where}:{n}: not UTF-8 text") from None
            if text.strip():
                yield _key_of(n, text, where)


class ListedKeys:
    """The entities of a --out file, read and validated once, kept in a temporary file
    of their own until :meth:`close`, to be acted on as they were validated: a pipe is
    read once (a second read found it empty: nothing repaired, exit 0), and a line
    written to the file meanwhile is not read after repairs committed. One line each,
    so a file of millions of entities needs no more memory than one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.count = 0
        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        try:
            for key in read_mismatch_keys(path):
                row = [key.line, key.system.value, key.legacy_id, key.transaction_id]
                self._spool.write(json.dumps(row) + "\n")
                self.count += 1
        except BaseException:
            self._spool.close()
            raise

    def __iter__(self) -> Iterator[MismatchKey]:
        self._spool.seek(0)
        for text in self._spool:
            line, system, legacy_id, transaction_id = json.loads(text)
            yield MismatchKey(line, LegacySystemType(system), legacy_id, transaction_id)

    def close(self) -> None:
        self._spool.close()
