"""The guarantee checks, judged on snapshots: each rule fires past its grace and not before."""

from __future__ import annotations

from common.domain.guarantees import (
    DUPLICATE_ATTEMPTS,
    RUNNING_PAST_TIMEOUT,
    RUNNING_WITHOUT_OWNER,
    STUCK_DISPATCHED,
    STUCK_PENDING,
    STUCK_SCHEDULED,
    Deadlines,
    TaskView,
    count_by_check,
    duplicate_findings,
    oldest_by_check,
    task_findings,
)
from common.domain.transitions import TaskStatus as S

D = Deadlines(owner_grace=10, timeout_grace=5)


def running(entered=1000.0, timeout=60, agent="a1") -> TaskView:
    return TaskView("t1", S.RUNNING, 1, agent, entered, timeout)


def checks(found) -> list[str]:
    return [f.check for f in found]


def test_a_running_task_whose_owner_is_gone_counts_only_after_the_grace():
    task = running()
    assert task_findings(task, 1005, D, owner_live=False, ownerless_since=1000) == []
    found = task_findings(task, 1011, D, owner_live=False, ownerless_since=1000)
    assert checks(found) == [RUNNING_WITHOUT_OWNER] and found[0].since == 1000


def test_a_running_task_with_a_live_owner_or_an_unknown_one_breaks_nothing():
    assert task_findings(running(), 1030, D, owner_live=True) == []
    assert task_findings(running(), 1030, D, owner_live=None) == []


def test_a_task_running_past_its_timeout_and_the_grace_counts():
    assert task_findings(running(timeout=60), 1064, D, owner_live=True) == []
    found = task_findings(running(timeout=60), 1066, D, owner_live=True)
    assert checks(found) == [RUNNING_PAST_TIMEOUT] and found[0].since == 1060


def test_each_waiting_state_has_its_own_deadline_and_waiting_has_none():
    d = Deadlines(per_state={S.PENDING: 100, S.SCHEDULED: 10, S.DISPATCHED: 20})
    for status, check, deadline in (
        (S.PENDING, STUCK_PENDING, 100),
        (S.SCHEDULED, STUCK_SCHEDULED, 10),
        (S.DISPATCHED, STUCK_DISPATCHED, 20),
    ):
        task = TaskView("t", status, entered_at=0.0)
        assert task_findings(task, deadline - 1, d) == []
        assert checks(task_findings(task, deadline + 1, d)) == [check]
    assert task_findings(TaskView("t", S.WAITING, entered_at=0.0), 10**9, d) == []


def test_final_tasks_break_nothing_however_old():
    for status in (S.SUCCESS, S.FAILED, S.CANCELLED, S.SKIPPED):
        assert task_findings(TaskView("t", status, entered_at=0.0), 10**9, D, False, 0) == []


def test_a_task_two_live_agents_hold_is_a_duplicate_but_a_dead_holder_is_not():
    tasks = {"t1": running(agent="a1")}
    assert checks(duplicate_findings({"t1": {"a2"}}, tasks, {"a1", "a2"}, 5)) == [
        DUPLICATE_ATTEMPTS
    ]
    assert duplicate_findings({"t1": {"a1"}}, tasks, {"a1", "a2"}, 5) == []
    assert duplicate_findings({"t1": {"a2"}}, tasks, {"a1"}, 5) == []
    pending = {"t1": TaskView("t1", S.PENDING)}
    assert checks(duplicate_findings({"t1": {"a1", "a2"}}, pending, {"a1", "a2"}, 5)) == [
        DUPLICATE_ATTEMPTS
    ]


def test_counts_and_ages_cover_every_check_with_zeros():
    found = task_findings(running(), 1100, D, owner_live=False, ownerless_since=1000)
    counts = count_by_check(found)
    assert counts[RUNNING_WITHOUT_OWNER] == 1 and counts[RUNNING_PAST_TIMEOUT] == 1
    assert counts[STUCK_PENDING] == 0 and len(counts) == 6
    assert oldest_by_check(found, 1100)[RUNNING_WITHOUT_OWNER] == 100
