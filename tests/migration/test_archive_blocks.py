"""Archive lines compressed in a thread beside the reading: same bytes, errors of either
half raised in the caller, nothing left running."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import threading
from collections.abc import Iterator

import pytest

from unistatus.migration.archive_blocks import WRITE_BLOCK_LINES, compress_lines

LINES = [f'[{i},"PENDING","USD",{i * 7 % 1000}.25]\n'.encode() for i in range(5 * 1000 + 17)]


def _one_after_another(lines: list[bytes]) -> tuple[bytes, str]:
    """The file and hash as the blocks give them when written in the caller's thread."""
    raw, content = io.BytesIO(), hashlib.sha256()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for start in range(0, len(lines), WRITE_BLOCK_LINES):
            block = b"".join(lines[start : start + WRITE_BLOCK_LINES])
            gz.write(block)
            content.update(block)
    return raw.getvalue(), content.hexdigest()


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "archive-writer"]


def test_the_file_and_its_hash_are_those_of_writing_block_after_block() -> None:
    raw, content = io.BytesIO(), hashlib.sha256()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        rows = compress_lines(iter(LINES), gz, content)
    assert rows == len(LINES)
    assert (raw.getvalue(), content.hexdigest()) == _one_after_another(LINES)
    assert gzip.decompress(raw.getvalue()) == b"".join(LINES)
    assert not _writers()


def test_no_lines_still_makes_a_valid_empty_file() -> None:
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        assert compress_lines(iter([]), gz) == 0
    assert gzip.decompress(raw.getvalue()) == b""


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return len(data)


def test_a_failed_write_is_raised_in_the_caller_and_stops_the_reading() -> None:
    read = 0

    def lines() -> Iterator[bytes]:
        nonlocal read
        for line in LINES * 20:
            read += 1
            yield line

    gz = gzip.GzipFile(filename="", mode="wb", fileobj=_FullDisk(room=2_000), mtime=0)
    with pytest.raises(OSError) as caught:
        compress_lines(lines(), gz)
    assert caught.value.errno == errno.ENOSPC
    assert read < len(LINES) * 20 // 2, f"read {read} lines after the disk was full"
    assert not _writers()


def test_a_failed_read_is_raised_and_what_was_queued_after_it_is_not_written() -> None:
    class Broken(Exception):
        pass

    def lines() -> Iterator[bytes]:
        yield from LINES[: 2 * WRITE_BLOCK_LINES + 5]
        raise Broken("the server went away")

    raw = io.BytesIO()
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
    with pytest.raises(Broken):
        compress_lines(lines(), gz)
    assert not _writers()
    gz.close()
    written = gzip.decompress(raw.getvalue())
    # At most the two whole blocks put before the failure; never the partial third.
    assert written in (b"", *(b"".join(LINES[: n * WRITE_BLOCK_LINES]) for n in (1, 2)))
