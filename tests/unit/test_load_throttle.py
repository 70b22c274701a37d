"""A stage 2 agent's load reports: at most one per interval, the latest value always last."""

from __future__ import annotations

from common.coordination.load_reports import ThrottledLoad
from common.testing.wait import eventually


def test_a_burst_of_load_changes_is_one_report_now_and_one_with_the_last_value_later():
    reports: list[int] = []
    throttle = ThrottledLoad(reports.append, interval=1.0)
    # When the load changes six times in a row (three tasks started and finished)
    for load in (1, 0, 1, 0, 1, 0):
        throttle(load)
    # Then the first change is reported at once, the others wait for the interval's end
    assert reports == [1]
    # where one report carries the latest value
    eventually(lambda: reports == [1, 0], 5, message="the trailing report")


def test_a_change_after_a_quiet_interval_is_reported_at_once():
    reports: list[int] = []
    throttle = ThrottledLoad(reports.append, interval=0.0)
    throttle(1)
    throttle(0)
    assert reports == [1, 0]
