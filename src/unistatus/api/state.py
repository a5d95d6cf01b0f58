"""What the HTTP endpoints share: settings, engine, a lazily built adapter, the monitor.

One :class:`ServiceState` per app (``app.state.service``). The adapter is built on the
first write (it records its operation statistics itself, unless the settings turn
them off, and :meth:`ServiceState.close` flushes them); the monitor thread, when started,
evaluates the alert rules every ``interval`` seconds until :meth:`ServiceState.close`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa

from unistatus.adapter import DualWriteAdapter
from unistatus.config import Settings
from unistatus.errors import StorageError
from unistatus.migration.verify import (
    DEFAULT_BUSY_MAX_WAIT,
    DEFAULT_ROWS_PER_ROUND,
    DEFAULT_SECONDS_PER_ROUND,
)
from unistatus.observe.alert_state import load_states
from unistatus.observe.alerts import Monitor

__all__ = ["ServiceState"]

# The service's log (the name it has always had).
log = logging.getLogger("unistatus.api.service")


class ServiceState:
    """What the endpoints share: settings, engine, a lazily built adapter, the monitor."""

    def __init__(self, settings: Settings, engine: sa.Engine, window_seconds: float) -> None:
        self.settings = settings
        self.engine = engine
        self.window_seconds = window_seconds
        self._adapter: DualWriteAdapter | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor_thread: threading.Thread | None = None
        self.monitor: Monitor | None = None  # the background one, once started
        # Why the background monitor's last evaluation failed (None: it did not, or
        # none ran yet); /health is degraded while it is set.
        self.evaluation_failure: BaseException | None = None

    def adapter(self) -> DualWriteAdapter:
        with self._lock:
            if self._adapter is None:
                self._adapter = DualWriteAdapter(self.engine, settings=self.settings)
            return self._adapter

    def alerts(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in load_states(self.engine)]

    def start_monitor(
        self,
        interval: float,
        *,
        verify_rows: int = DEFAULT_ROWS_PER_ROUND,
        verify_seconds: float | None = DEFAULT_SECONDS_PER_ROUND,
        verify_busy_wait: float = DEFAULT_BUSY_MAX_WAIT,
    ) -> None:
        monitor = Monitor(
            self.engine,
            self.settings,
            window_seconds=self.window_seconds,
            verify_rows=verify_rows,
            verify_seconds=verify_seconds,
            verify_busy_wait=verify_busy_wait,
        )
        self.monitor = monitor

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    monitor.evaluate()
                    self.evaluation_failure = (
                        None
                        if monitor.unstored is None
                        else StorageError(f"alert state not stored ({monitor.unstored})")
                    )
                except Exception as exc:  # the service keeps serving whatever it hits
                    log.exception("alert evaluation failed")
                    # Without its frames (logged first): kept until the next evaluation,
                    # it must not keep what they referenced (a connection) alive.
                    self.evaluation_failure = exc.with_traceback(None)
                self._stop.wait(interval)

        self._monitor_thread = threading.Thread(target=loop, name="unistatus-monitor", daemon=True)
        self._monitor_thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._monitor_thread is not None:
            self._monitor_thread.join(timeout=10)
        if self._adapter is not None:
            self._adapter.close()
