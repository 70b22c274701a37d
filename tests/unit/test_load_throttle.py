"""A stage 2 agent's load reports: at most one per interval, the latest value always last."""

from __future__ import annotations

import threading

from common.coordination.load_reports import ThrottledLoad
from common.testing.wait import eventually


class FakeClock:
    """Time that moves only when the test moves it: "not yet reported" is then a fact of the
    clock, not of how fast the reporting thread happened to run."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_load_changes_is_one_report_now_and_one_with_the_last_value_later():
    reports: list[int] = []
    throttle = ThrottledLoad(reports.append, interval=1.0)
    try:
        # When the load changes six times in a row (three tasks started and finished)
        for load in (1, 0, 1, 0, 1, 0):
            throttle(load)
        # Then the first change is reported at once, the others wait for the interval's end
        assert reports == [1]
        # where one report carries the latest value
        eventually(lambda: reports == [1, 0], 5, message="the trailing report")
    finally:
        throttle.stop()


def test_a_change_after_a_quiet_interval_is_reported_at_once():
    reports: list[int] = []
    throttle = ThrottledLoad(reports.append, interval=0.0)
    throttle(1)
    throttle(0)
    assert reports == [1, 0]
    throttle.stop()


def test_reports_are_at_most_one_per_interval_and_each_carries_the_latest_value():
    clock = FakeClock()
    reports: list[tuple[float, int]] = []
    throttle = ThrottledLoad(lambda load: reports.append((clock(), load)), 0.1, clock)
    try:
        # Given a first change, reported at once
        throttle(1)
        assert reports == [(0.0, 1)]
        # When two more come within the interval, and time moves to just short of its end
        throttle(2)
        throttle(3)
        clock.now = 0.05
        # Then nothing more is reported before the interval ends
        assert reports == [(0.0, 1)]
        # and at its end one report carries the latest value
        clock.now = 0.1
        eventually(lambda: reports == [(0.0, 1), (0.1, 3)], 5, message="the deferred report")
        # When changes come right after that report, the next interval defers them too
        throttle(4)
        clock.now = 0.15
        throttle(5)
        assert reports[-1] == (0.1, 3)
        clock.now = 0.2
        eventually(lambda: reports[-1] == (0.2, 5), 5, message="the second deferred report")
        # And after a quiet interval a change is reported at once, by the caller
        clock.now = 0.5
        throttle(6)
        assert reports == [(0.0, 1), (0.1, 3), (0.2, 5), (0.5, 6)]
    finally:
        throttle.stop()


def test_every_deferred_report_is_made_by_one_long_lived_thread():
    reporters: list[threading.Thread] = []
    reports: list[int] = []

    def report(load: int) -> None:
        reports.append(load)
        if threading.current_thread() is not threading.main_thread():
            reporters.append(threading.current_thread())

    throttle = ThrottledLoad(report, interval=0.05)
    try:
        # When three bursts each leave a deferred report
        for burst in range(3):
            throttle(10 * burst + 1)
            throttle(10 * burst + 2)
            eventually(lambda b=burst: reports[-1] == 10 * b + 2, 5, message=f"burst {burst}")
        # Then one thread made them all (a thread per report would be one per burst)
        assert len(reporters) >= 3
        assert all(thread is reporters[0] for thread in reporters)
    finally:
        throttle.stop()


def test_stop_ends_the_reporting_thread_and_drops_a_deferred_report():
    clock = FakeClock()
    reports: list[int] = []
    before = set(threading.enumerate())
    throttle = ThrottledLoad(reports.append, 0.1, clock)
    # Given a report deferred to the interval's end
    throttle(1)
    throttle(2)
    started = set(threading.enumerate()) - before
    assert len(started) == 1
    # When the owner stops the throttle (the agent has stopped) and the interval then ends
    throttle.stop()
    clock.now = 1.0
    # Then its thread has ended, the deferred value was not reported, nor are later ones
    (thread,) = started
    assert not thread.is_alive()
    throttle(3)
    assert reports == [1]
