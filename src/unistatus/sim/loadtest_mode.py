"""The write mode a load test sets for its run, and putting the previous one back.

The mode is database-wide: left behind, it changes what every adapter writes (dual
writes off in LEGACY_ONLY, legacy frozen in UNIFIED_ONLY). So the restore is not one
attempt: while the database fails or is unreachable it tries again, for up to
``seconds``, and if it still cannot, :class:`~unistatus.errors.ModeNotRestoredError`
says per system which mode was left instead of which, and the command that puts it
back, with the run's own error (if any) in the same line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from unistatus.config import NetworkSettings, Settings
from unistatus.db.claims import hold_claim
from unistatus.db.control import get_modes, set_mode, write_mode
from unistatus.db.failures import one_line
from unistatus.db.mode_reads import mode_summary
from unistatus.db.system_keys import SYSTEMS
from unistatus.domain.statuses import DualWriteMode, LegacySystemType
from unistatus.errors import InputError, ModeNotRestoredError, StorageError, UnistatusError
from unistatus.migration.replay import replay_pending

__all__ = ["ACTOR", "FIX_REASON", "RESTORE_SECONDS", "ModeGuard", "claim_mode"]

ACTOR = "loadtest"
# How long the restore keeps trying while the database fails or is unreachable.
RESTORE_SECONDS = 60.0
# The reason of the command the error names, to be run by hand.
FIX_REASON = "restore the mode after an interrupted load test"
_PAUSE_S = (0.2, 0.5, 1.0, 2.0)  # between attempts; the last one repeats

log = logging.getLogger("unistatus.sim.loadtest")

# The database failed or was unreachable: worth another attempt once it is back. The
# rest (a refused switch, a bug) would fail the same way again.
_OUTAGE = (StorageError, sa.exc.OperationalError, sa.exc.InterfaceError)


# The load tests' claim on the write mode (:func:`claim_mode`).
_CLAIM = "unistatus.loadtest:mode"


@contextmanager
def claim_mode(
    engine: sa.Engine, *, exclusive: bool, network: NetworkSettings | None = None
) -> Iterator[None]:
    """Hold the write mode for a load test, from before it reads the mode it will put
    back to after it put it back; InputError at once while another load test holds it.

    Two load tests at once would each put back the mode it found: the second finds the
    first's temporary mode, and puts that back once the first has restored the real one
    (phase 2 left with dual writes off). ``exclusive``: the run sets a mode (``--mode``,
    ``--baseline``); otherwise it shares the claim with runs that set none. The claim is
    the check runs' (:func:`unistatus.db.claims.hold_claim`): gone with its process,
    however it ends (a kill too). ``network``: the settings' bounds of the claim's
    connection (None: the defaults)."""
    with hold_claim(
        engine,
        _CLAIM,
        lambda: _busy(engine),
        tag="loadtest",
        shared=not exclusive,
        network=network,
    ):
        yield


def _busy(engine: sa.Engine) -> InputError:
    try:
        now = f"the mode is {mode_summary(get_modes(engine))} for it"
    except (UnistatusError, sa.exc.SQLAlchemyError) as exc:
        now = f"the mode cannot be read: {one_line(exc)}"
    return InputError(
        f"another load test holds the write mode right now ({now}): wait for it to end. "
        "A load test puts back the mode it found; one started beside it would find the "
        "other's mode and put that back. Only load tests that set no mode (no --mode, no "
        "--baseline) run side by side"
    )


class ModeGuard:
    """Switches the mode for a run and remembers what it may have left behind."""

    def __init__(self, engine: sa.Engine, settings: Settings, previous: DualWriteMode) -> None:
        self.engine, self.settings, self.previous = engine, settings, previous
        # The mode each system may be in now; certain once a switch returned or a
        # restore attempt read it.
        self.left: dict[LegacySystemType, DualWriteMode] = dict.fromkeys(SYSTEMS, previous)
        self.certain = True
        # The modes that are the run's own: its last switch's once it returned, and while
        # a switch is in flight (its commit unknown) the one before it too. A system found
        # in another mode at the restore was switched by someone else meanwhile (an
        # emergency rollback) and is left as it is (``left_alone``), never switched
        # back over their decision. A run that switched nothing restores nothing.
        self.own: set[DualWriteMode] = set()
        self.left_alone: dict[LegacySystemType, DualWriteMode] = {}

    def switch(self, mode: DualWriteMode, reason: str) -> None:
        if self.certain and all(m is mode for m in self.left.values()):
            return
        # Until set_mode returns, the switch may or may not have committed.
        self.left, self.certain = dict.fromkeys(SYSTEMS, mode), False
        self.own.add(mode)
        set_mode(self.engine, mode, reason=reason, actor=ACTOR)
        self.own, self.certain = {mode}, True

    def restore(self, seconds: float, run_error: BaseException | None = None) -> None:
        """Put the previous mode back, retrying for up to ``seconds`` while the database
        fails; else raise ModeNotRestoredError (``run_error``: the run's own, named too).

        Ctrl-C (or SIGTERM, which the CLI turns into one) during the retries stops them
        and raises the same error: the operator learns what was left behind."""
        deadline = time.monotonic() + seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                self._restore_once()
                return
            except _OUTAGE as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._not_restored(
                        exc, run_error, f"gave up after {seconds:g} s"
                    ) from exc
                pause = min(_PAUSE_S[min(attempt, len(_PAUSE_S)) - 1], left)
                log.warning(
                    "could not put the write mode %s back (%s); retrying for %.0f s more",
                    self.previous.value,
                    one_line(exc),
                    left,
                )
                try:
                    time.sleep(pause)
                except KeyboardInterrupt as stop:
                    raise self._not_restored(exc, run_error, "interrupted") from stop
            except KeyboardInterrupt as stop:
                raise self._not_restored(stop, run_error, "interrupted") from stop
            except Exception as exc:
                raise self._not_restored(exc, run_error, "refused") from exc

    def _restore_once(self) -> None:
        """One attempt. Out of UNIFIED_ONLY into a mode that writes legacy, the run's
        changes are replayed to legacy first and the switch commits with the last
        replayed batch (the rollback path), so legacy misses nothing the load test wrote."""
        previous = self.previous
        current = get_modes(self.engine)
        self.left, self.certain = current, True
        moving = [s for s, mode in current.items() if mode is not previous]
        if moving:
            others = {s: current[s] for s in moving if current[s] not in self.own}
            for system, mode in others.items():
                if system not in self.left_alone:
                    log.warning(
                        "%s is in %s, not a mode the load test set: switched by someone "
                        "else during the run (a rollback?), left as it is",
                        system.value,
                        mode.value,
                    )
            self.left_alone.update(others)
            moving = [s for s in moving if s not in others]
        if not moving:
            return
        self.certain = False  # the switch may commit, its reply lost: "may be left at"
        each: list[LegacySystemType | None] = [None] if len(moving) == len(SYSTEMS) else [*moving]
        for one in each:
            self._put_back(current, moving if one is None else [one], one)
            if one is not None:
                self.left[one] = previous
        self.left, self.certain = {**current, **dict.fromkeys(moving, previous)}, True

    def _put_back(
        self,
        current: Mapping[LegacySystemType, DualWriteMode],
        systems: list[LegacySystemType],
        system: LegacySystemType | None,
    ) -> None:
        """``systems`` back in the previous mode (``system`` None: every system at once)."""
        previous = self.previous
        if all(current[s] is not DualWriteMode.UNIFIED_ONLY for s in systems) or not (
            previous.writes_legacy
        ):
            reason = "load test finished: mode restored"
            set_mode(self.engine, previous, system=system, reason=reason, actor=ACTOR)
            return
        reason = "load test finished: UNIFIED_ONLY changes replayed, mode restored"

        def finish(conn: sa.Connection, _summary: dict[str, Any]) -> None:
            write_mode(conn, previous, system=system, actor=ACTOR, reason=reason)

        replay_pending(
            self.engine, self.settings, finish=finish, actor=ACTOR, reason=reason, system=system
        )

    def _not_restored(
        self, exc: BaseException, run_error: BaseException | None, how: str
    ) -> ModeNotRestoredError:
        previous = self.previous.value
        # A system someone else switched during the run is theirs: neither named as
        # left behind nor in the command (which would undo their rollback).
        left = {s: m for s, m in self.left.items() if s not in self.left_alone}
        behind = [s for s, m in left.items() if m is not self.previous or not self.certain]
        command = f'unistatus mode set {previous} --reason "{FIX_REASON}"'
        if self.left_alone:
            command = "; ".join(
                f'unistatus mode set {previous} --system {s.value.lower()} --reason "{FIX_REASON}"'
                for s in behind or [s for s in SYSTEMS if s not in self.left_alone]
            )
        why = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else one_line(exc)
        text = (
            f"the load test could not put the write mode back ({how}: {why}): "
            f"{_describe(left, self.previous, self.certain)}; every adapter writes in "
            f"that mode until it is put back. Once the database is reachable, run: {command}"
        )
        if self.left_alone:
            text += (
                f" ({', '.join(s.value for s in self.left_alone)} switched by someone else "
                "during the run: left as it is)"
            )
        if any(m is DualWriteMode.UNIFIED_ONLY for m in left.values()):
            text += (
                " (refused while UNIFIED_ONLY changes are not replayed: `unistatus rollback "
                "--emergency` replays them and goes to LEGACY_ONLY)"
            )
        if isinstance(run_error, KeyboardInterrupt):
            text += "; the run itself had been interrupted"
        elif run_error is not None:
            text += f"; the run itself had failed first: {one_line(run_error)}"
        return ModeNotRestoredError(
            text,
            left=left,
            previous=self.previous,
            command=command,
            restore_error=exc,
            run_error=run_error,
        )


def _describe(
    left: Mapping[LegacySystemType, DualWriteMode], previous: DualWriteMode, certain: bool
) -> str:
    """``CASHOUT, ESCROW, EXCHANGE left at LEGACY_ONLY instead of ...``, per mode left."""
    verb = "left at" if certain else "may be left at"
    by_mode: dict[DualWriteMode, list[str]] = {}
    for system, mode in left.items():
        if mode is not previous:
            by_mode.setdefault(mode, []).append(system.value)
    parts = [
        f"{', '.join(systems)} {verb} {mode.value} instead of {previous.value}"
        for mode, systems in by_mode.items()
    ]
    return "; ".join(parts) or f"every system back at {previous.value} as last read"
