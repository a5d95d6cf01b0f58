"""The pacer: a wait for the rate in slices, a rate changed mid-wait taking over the
rest of it. Time is the test's: only the pacer's sleeps pass it."""

from __future__ import annotations

import pytest

from unistatus.backfill.pacing import PACE_SLICE_SECONDS, Clock, Pacer


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def clock(self) -> Clock:
        return Clock(timer=lambda: self.t, sleep=self.sleep)


def test_a_wait_is_slept_in_slices_and_lasts_what_the_rate_asks() -> None:
    time = FakeTime()
    pacer = Pacer(10.0, time.clock())
    calls: list[float] = []

    def counted(seconds: float) -> bool:
        calls.append(seconds)
        return True

    assert pacer.after(25, counted) == pytest.approx(2.5)
    assert max(time.slept) <= PACE_SLICE_SECONDS and calls == time.slept
    assert time.t == pytest.approx(2.5)
    assert Pacer(None, time.clock()).after(1_000_000) == 0.0  # no rate: no wait


def test_a_rate_changed_mid_wait_sets_the_rest_of_it() -> None:
    time = FakeTime()
    pacer = Pacer(10.0, time.clock())  # 100 rows: 10 s

    def faster_after_two_seconds(_seconds: float) -> bool:
        if time.t == pytest.approx(2.0):
            pacer.set_rate(20.0)  # the 80 rows still owed: 4 s at the new rate
        return True

    assert pacer.after(100, faster_after_two_seconds) == pytest.approx(6.0)
    time2 = FakeTime()
    pacer = Pacer(10.0, time2.clock())

    def off_after_one_second(_seconds: float) -> bool:
        if time2.t == pytest.approx(1.0):
            pacer.set_rate(None)
        return True

    assert pacer.after(100, off_after_one_second) == pytest.approx(1.0)


def test_a_wait_ends_when_told_to_stop_and_never_sleeps_an_absurd_length() -> None:
    time = FakeTime()
    pacer = Pacer(1e-9, time.clock())  # a rate no run accepts: 1e11 s for 100 rows
    assert pacer.after(100, lambda _s: time.t < 1.0) == pytest.approx(1.0)
    assert max(time.slept) <= PACE_SLICE_SECONDS
