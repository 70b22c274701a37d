"""The schedule firer on the in-memory store and a manual clock: Kubernetes' CronJob rules
carried out, fenced, and idempotent by fire time."""

from __future__ import annotations

import threading
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY

from common.adapters.clock import ManualClock
from common.adapters.memory_schedule import InMemoryScheduleStore
from common.adapters.memory_store import InMemoryTaskStore
from common.domain.schedule import run_id, validate_schedule
from common.domain.transitions import TaskStatus
from common.observability import metrics
from common.ports.schedule import ScheduleExists
from common.scheduling.fencing import Deposed
from common.scheduling.schedules import ScheduleFirer

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=ZoneInfo("UTC")).timestamp()  # a */5 fire time
EPOCH = 7


def make(**over):
    tasks = InMemoryTaskStore()
    tasks.fence = EPOCH
    store = InMemoryScheduleStore(tasks)
    clock = ManualClock(T0 - 30)
    doc = {
        "name": "every5",
        "schedule": "*/5 * * * *",
        "task": {"taskType": "SHELL", "payload": "echo hi"},
        **over,
    }
    spec = validate_schedule(doc)
    store.create(spec, clock.now(), T0)
    firer = ScheduleFirer(store, tasks, "scheduler:s1", clock)
    return store, tasks, clock, firer


def runs(tasks: InMemoryTaskStore) -> dict[float, str]:
    return {float(t["scheduledFor"]): tid for tid, t in tasks.tasks.items() if t.get("scheduleId")}


def finish(tasks: InMemoryTaskStore, task_id: str, status: TaskStatus) -> None:
    tasks.tasks[task_id]["status"] = status.value


def test_nothing_fires_before_the_first_fire_time_and_it_fires_once_when_it_comes():
    store, tasks, clock, firer = make()
    firer.tick(EPOCH)
    assert runs(tasks) == {}
    clock.set(T0 + 1)
    firer.tick(EPOCH)
    firer.tick(EPOCH)
    assert list(runs(tasks)) == [T0]
    state = store.get("every5")
    assert state.last_schedule_time == T0
    assert state.next_check == T0 + 300


def test_a_run_is_an_ordinary_pending_task_with_its_schedule_and_fire_time():
    store, tasks, clock, firer = make()
    clock.set(T0 + 1)
    firer.tick(EPOCH)
    uid = store.get("every5").uid
    task = tasks.get(run_id(uid, T0))
    assert task is not None
    assert task.status == TaskStatus.PENDING
    assert (task.schedule_id, task.scheduled_for) == ("every5", T0)
    assert task.task_name == f"every5-{int(T0 // 60)}"
    assert tasks.queue and task.task_id in tasks.queue[0]


def test_two_leaders_deciding_the_same_fire_time_make_one_run():
    store, tasks, clock, firer = make()
    other = ScheduleFirer(store, tasks, "scheduler:s2", clock)
    clock.set(T0 + 1)
    state = store.get("every5")
    # Both decided from the same state; the second write is answered "already".
    assert firer.reconcile("every5", EPOCH, clock.now()).outcome == "fired"
    store.due_at["every5"] = T0  # as if the second read the due set before the first wrote
    assert state.last_schedule_time is None
    assert other.reconcile("every5", EPOCH, clock.now()).outcome == "recorded"
    assert len(runs(tasks)) == 1


def test_a_deposed_leader_writes_nothing_and_its_term_ends():
    store, tasks, clock, firer = make()
    tasks.fence = EPOCH + 1
    clock.set(T0 + 1)
    with pytest.raises(Deposed):
        firer.tick(EPOCH)
    assert runs(tasks) == {}
    assert store.counters["rejected_stale_epoch"] == 1


def test_after_downtime_only_the_most_recent_missed_time_runs():
    store, tasks, clock, firer = make()
    clock.set(T0 + 3 * 300 + 5)
    firer.tick(EPOCH)
    assert list(runs(tasks)) == [T0 + 900]
    assert store.get("every5").last_missed == 4


def test_forbid_skips_while_the_run_is_active_then_runs_the_skipped_time_late():
    store, tasks, clock, firer = make(concurrencyPolicy="Forbid")
    clock.set(T0 + 1)
    firer.tick(EPOCH)
    first = runs(tasks)[T0]
    clock.set(T0 + 301)
    firer.tick(EPOCH)
    assert list(runs(tasks)) == [T0]
    assert store.get("every5").last_skip == "forbid_active"
    finish(tasks, first, TaskStatus.SUCCESS)
    clock.set(T0 + 303)  # the recheck (1 s) has come
    firer.tick(EPOCH)
    assert sorted(runs(tasks)) == [T0, T0 + 300]


def test_replace_cancels_the_active_run_and_fires():
    store, tasks, clock, firer = make(concurrencyPolicy="Replace")
    clock.set(T0 + 1)
    firer.tick(EPOCH)
    first = runs(tasks)[T0]
    clock.set(T0 + 301)
    firer.tick(EPOCH)
    assert sorted(runs(tasks)) == [T0, T0 + 300]
    assert tasks.get(first).status == TaskStatus.CANCELLED
    assert tasks.get(runs(tasks)[T0 + 300]).status == TaskStatus.PENDING


def test_allow_runs_beside_the_active_one():
    store, tasks, clock, firer = make()
    clock.set(T0 + 1)
    firer.tick(EPOCH)
    clock.set(T0 + 301)
    firer.tick(EPOCH)
    assert all(tasks.get(r).status == TaskStatus.PENDING for r in runs(tasks).values())


def test_a_suspended_schedule_fires_nothing_and_on_resume_runs_within_its_deadline():
    store, tasks, clock, firer = make(startingDeadlineSeconds=60)
    store.set_suspend("every5", True, clock.now())
    clock.set(T0 + 601)
    firer.tick(EPOCH)
    assert runs(tasks) == {}
    clock.set(T0 + 900 + 30)
    store.set_suspend("every5", False, clock.now())
    firer.tick(EPOCH)
    assert list(runs(tasks)) == [T0 + 900]


def test_finished_runs_past_the_history_limits_are_deleted():
    store, tasks, clock, firer = make(successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)
    outcomes = [TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.SUCCESS, TaskStatus.FAILED]
    for i, outcome in enumerate(outcomes):
        clock.set(T0 + 300 * i + 1)
        firer.tick(EPOCH)
        finish(tasks, runs(tasks)[T0 + 300 * i], outcome)
    clock.set(T0 + 300 * 4 + 1)
    firer.tick(EPOCH)
    state = store.get("every5")
    assert [r.scheduled_for for r in state.succeeded] == [T0 + 600]
    assert [r.scheduled_for for r in state.failed] == [T0 + 900]
    assert sorted(runs(tasks)) == [T0 + 600, T0 + 900, T0 + 1200]


def test_a_name_is_taken_once():
    store, tasks, clock, firer = make()
    with pytest.raises(ScheduleExists):
        store.create(store.get("every5").spec, clock.now(), T0)


def test_a_deleted_schedule_fires_no_more():
    store, tasks, clock, firer = make()
    assert store.delete("every5")
    clock.set(T0 + 1)
    firer.tick(EPOCH)
    assert runs(tasks) == {}


def test_the_loop_stops_when_told_and_a_stale_write_ends_it_with_deposed():
    store, tasks, clock, firer = make()
    firer.interval = 0.01
    stop = threading.Event()
    thread = threading.Thread(target=firer.run, args=(EPOCH, stop))
    thread.start()
    clock.set(T0 + 1)
    for _ in range(500):
        if runs(tasks):
            break
        stop.wait(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert list(runs(tasks)) == [T0]
    tasks.fence = EPOCH + 1
    clock.set(T0 + 301)
    with pytest.raises(Deposed):
        firer.run(EPOCH, threading.Event())


def test_more_than_a_hundred_missed_times_are_warned_about_once_and_the_latest_runs(caplog):
    store, tasks, clock, firer = make(schedule="* * * * *")
    clock.set(T0 + 150 * 60 + 5)
    with caplog.at_level("INFO", logger="tasklab.schedules"):
        firer.tick(EPOCH)
        firer.tick(EPOCH)
    assert list(runs(tasks)) == [T0 + 150 * 60]
    warnings = [r for r in caplog.records if "too many missed start times" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert store.get("every5").last_missed == 151


# -- metrics --------------------------------------------------------------------------------------


def counted() -> dict[str, float]:
    """The schedule counters now (the process's registry: compare before and after)."""
    value = REGISTRY.get_sample_value
    return {
        "fires": value("tasklab_schedule_fires_total") or 0.0,
        "missed": value("tasklab_schedule_missed_fires_total") or 0.0,
        **{
            reason: value("tasklab_schedule_skipped_total", {"reason": reason})
            for reason in metrics.SCHEDULE_SKIP_REASONS
        },
    }


def grown(before: dict[str, float]) -> dict[str, float]:
    return {k: v - before[k] for k, v in counted().items() if v != before[k]}


def test_the_firer_counts_a_fire_the_start_times_it_passed_over_and_a_forbid_skip_once():
    # After downtime: one fire, three older start times passed over
    store, tasks, clock, firer = make()
    before = counted()
    clock.set(T0 + 3 * 300 + 5)
    firer.tick(EPOCH)
    firer.tick(EPOCH)
    assert grown(before) == {"fires": 1, "missed": 3}
    # Forbid, a run active: the due time is skipped, counted once however often it is seen
    store, tasks, clock, firer = make(concurrencyPolicy="Forbid")
    clock.set(T0 + 1)
    firer.tick(EPOCH)
    before = counted()
    for second in (301, 302, 303):
        clock.set(T0 + second)
        firer.tick(EPOCH)
    assert grown(before) == {"forbid_active": 1}
    # A second leader deciding a fire time already fired counts nothing
    other = ScheduleFirer(store, tasks, "scheduler:s2", clock)
    before = counted()
    store.due_at["every5"] = T0
    other.reconcile("every5", EPOCH, T0 + 304)
    assert grown(before).get("fires") is None
