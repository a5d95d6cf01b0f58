"""Archive lines into a gzip file, compressed beside the reading.

An export is two halves of about equal cost: reading and encoding the rows (Python,
holding the GIL) and compressing and hashing the bytes (zlib and hashlib, which let go
of the GIL on a block). :func:`compress_lines` gives the second half a thread of its
own, a few blocks behind the first, so on two cores they overlap. The file's bytes are
the same as compressing the blocks one after another: one writer, in order.
"""

from __future__ import annotations

import gzip
import queue
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

WRITE_BLOCK_LINES = 1_000
QUEUED_BLOCKS = 8  # how far reading may run ahead of compressing (memory: 8 blocks)


def compress_lines(
    lines: Iterable[bytes],
    gz: gzip.GzipFile,
    content: Any | None = None,
    on_block: Callable[[int], None] | None = None,
) -> int:
    """Write ``lines`` to ``gz`` (and to the ``content`` hash), a block of lines at a
    time: per line, the compressor's and the hash's calls cost more than the bytes.
    The blocks are compressed in a thread while the next ones are read. Returns how
    many lines; an error of either half is raised here, and nothing more is written.
    ``on_block(lines)``: called with the lines read so far after each full block."""
    rows, block = 0, []
    with _BlockWriter(gz, content) as writer:
        for line in lines:
            block.append(line)
            rows += 1
            if len(block) == WRITE_BLOCK_LINES:
                writer.put(b"".join(block))
                block = []
                if on_block is not None:
                    on_block(rows)
        writer.put(b"".join(block))
    return rows


class _BlockWriter:
    """One thread that writes queued blocks to the gzip file and the hash, in order."""

    def __init__(self, gz: gzip.GzipFile, content: Any | None) -> None:
        self._gz = gz
        self._content = content
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED_BLOCKS)
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)

    def __enter__(self) -> _BlockWriter:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._abandoned = kind is not None  # the reading failed: drop what is queued
        self._blocks.put(None)
        self._thread.join()
        if kind is None and self._error is not None:
            raise self._error

    def put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error  # e.g. the disk is full: stop reading
        self._blocks.put(data)

    def _run(self) -> None:
        while (data := self._blocks.get()) is not None:
            if self._error is not None or self._abandoned:
                continue  # keep taking blocks so the reader never waits on a full queue
            try:
                self._gz.write(data)
                if self._content is not None:
                    self._content.update(data)
            except BaseException as exc:  # raised in the reader's thread
                self._error = exc
