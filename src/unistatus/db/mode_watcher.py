"""Every system's mode as a running process knows it: re-read at most every interval."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from unistatus.db.control import get_modes
from unistatus.db.mode_reads import common_mode, describe_modes
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import ModeError

__all__ = ["ModeWatcher"]


class ModeWatcher:
    """Every system's mode as this process knows it, re-read (all systems in one query)
    at most every ``interval``."""

    def __init__(self, engine: sa.Engine, interval: float = 1.0) -> None:
        self._engine = engine
        self._interval = interval
        self._lock = threading.Lock()
        self._modes: dict[LegacySystemType, DualWriteMode] | None = None
        self._read_at = 0.0

    def after_fork_in_child(self) -> None:
        """Read afresh, under a lock of the child's own (a thread of the parent may have
        held this one at the fork)."""
        self._lock = threading.Lock()
        self._modes, self._read_at = None, 0.0

    def modes(self) -> dict[LegacySystemType, DualWriteMode]:
        """Every system's mode (a copy)."""
        modes = self._modes
        if modes is None or time.monotonic() - self._read_at >= self._interval:
            with self._lock:
                modes = self._modes
                if modes is None or time.monotonic() - self._read_at >= self._interval:
                    modes = self._modes = get_modes(self._engine)
                    self._read_at = time.monotonic()
        return dict(modes)

    def get(self, system: LegacySystemType | None = None) -> DualWriteMode:
        """``system``'s mode; None: the mode of every system (ModeError if they differ)."""
        modes = self.modes()
        if system is not None:
            return modes[system]
        common = common_mode(modes)
        if common is None:
            raise ModeError(f"the systems are in different modes ({describe_modes(modes)})")
        return common

    def refresh(self, system: LegacySystemType | None = None) -> DualWriteMode:
        with self._lock:
            self._read_at = 0.0
            self._modes = None
        return self.get(system)
