"""Cron schedules on real Redis and ZooKeeper: fired by the elected leader only, fenced, and
exactly once per fire time through kill -9 and SIGSTOP of the leader at a fire time.

The schedulers read the time from a file the test writes (TASKLAB_CLOCK_FILE, a FileClock):
a five-field schedule fires at most once a minute, and a controllable clock makes a fire
time come exactly when the test says, with no minutes of waiting.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from common import keys
from common.adapters.clock import FileClock
from common.adapters.redis_schedule import RedisScheduleStore
from common.adapters.redis_scripts import script_source
from common.domain.schedule import run_id, validate_schedule
from common.domain.task import Task
from common.domain.transitions import TaskStatus
from common.ports.schedule import Finished, Sync
from common.scheduling.schedules import create_schedule, make_run
from common.testing.wait import eventually

# A */5 fire time, years ahead of the real clock: nothing here happens at the real time.
T0 = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
EVERY5 = "*/5 * * * *"


@pytest.fixture
def clock(tmp_path) -> FileClock:
    c = FileClock(tmp_path / "clock")
    c.set(T0 - 30)
    return c


@pytest.fixture
def schedules(redis_client) -> RedisScheduleStore:
    return RedisScheduleStore(redis_client)


@pytest.fixture
def sched(scheduler, clock):
    """sched(name) starts a stage 2 scheduler on the test's clock."""

    def start(name: str, **settings: object):
        return scheduler(name, clock_file=str(clock.path), schedule_interval=0.05, **settings)

    return start


def make(schedules, clock, name="every5", **over):
    doc = {
        "name": name,
        "schedule": EVERY5,
        "task": {"taskType": "SHELL", "payload": "echo scheduled"},
        **over,
    }
    return create_schedule(schedules, validate_schedule(doc), clock.now())


def runs_of(redis_client, name: str) -> dict[float, list[str]]:
    """Every task a schedule created, by the fire time it belongs to."""
    out: dict[float, list[str]] = {}
    for key in redis_client.scan_iter(match="task:*", count=500):
        k = key.decode()
        if k.count(":") != 1:
            continue
        data = redis_client.hmget(k, "scheduleId", "scheduledFor")
        if data[0] and data[0].decode() == name:
            out.setdefault(float(data[1]), []).append(k.removeprefix("task:"))
    return out


def creations(redis_client, task_id: str) -> int:
    """How many times the task was created (history entries with no `from` state)."""
    entries = [json.loads(e) for e in redis_client.lrange(keys.history(task_id), 0, -1)]
    return sum(1 for e in entries if "from" not in e)


def stat(redis_client, name: str) -> int:
    return int(redis_client.hget(keys.SCHEDULE_STATS, name) or 0)


def assert_fired_exactly_once(redis_client, name: str, fire_times: list[float]) -> None:
    runs = runs_of(redis_client, name)
    assert sorted(runs) == sorted(fire_times), runs
    for at, ids in runs.items():
        assert len(ids) == 1, (at, ids)
        assert creations(redis_client, ids[0]) == 1, at
    queued = [json.loads(m)["taskId"] for m in redis_client.lrange(keys.PENDING_QUEUE, 0, -1)]
    for ids in runs.values():
        assert queued.count(ids[0]) <= 1
    assert stat(redis_client, "fired") == len(fire_times)


# -- the store on real Redis ---------------------------------------------------------------------


def test_a_fire_time_creates_its_run_once_however_often_it_is_written(
    schedules, clock, redis_client
):
    state = make(schedules, clock)
    run = make_run(state, T0, T0 + 1)
    write = Sync(uid=state.uid, next_check=T0 + 300, fire_at=T0, fire=run, missed=1)
    redis_client.set(keys.SCHEDULER_FENCE, 5)
    assert schedules.sync("every5", write, 5, "s", T0 + 1).outcome == "fired"
    assert schedules.sync("every5", write, 6, "s", T0 + 2).outcome == "already"
    assert run.task_id == run_id(state.uid, T0)
    assert_fired_exactly_once(redis_client, "every5", [T0])
    stored = Task.from_hash(
        {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.task(run.task_id)).items()}
    )
    assert (stored.schedule_id, stored.scheduled_for, stored.status) == (
        "every5",
        T0,
        TaskStatus.PENDING,
    )
    after = schedules.get("every5")
    assert after.last_schedule_time == T0 and after.next_check == T0 + 300
    assert [r.run_id for r in after.active] == [run.task_id]


def test_a_write_below_the_fence_changes_nothing(schedules, clock, redis_client):
    state = make(schedules, clock)
    redis_client.set(keys.SCHEDULER_FENCE, 9)
    write = Sync(uid=state.uid, next_check=T0 + 300, fire_at=T0, fire=make_run(state, T0, T0))
    result = schedules.sync("every5", write, 8, "s", T0 + 1)
    assert (result.accepted, result.outcome) == (False, "stale_epoch")
    assert runs_of(redis_client, "every5") == {}
    assert schedules.get("every5").last_schedule_time is None
    assert stat(redis_client, "rejected_stale_epoch") == 1


def test_a_schedule_made_again_under_its_name_is_not_written_by_a_decision_about_the_old_one(
    schedules, clock, redis_client
):
    old = make(schedules, clock)
    schedules.delete("every5")
    make(schedules, clock)
    write = Sync(uid=old.uid, next_check=T0 + 300, fire_at=T0, fire=make_run(old, T0, T0))
    assert schedules.sync("every5", write, 0, "s", T0 + 1).outcome == "gone"
    assert runs_of(redis_client, "every5") == {}


def test_pause_resume_list_and_delete(schedules, clock):
    make(schedules, clock, name="a")
    make(schedules, clock, name="b", timeZone="Europe/Berlin")
    assert [s.name for s in schedules.list()] == ["a", "b"]
    paused = schedules.set_suspend("a", True, T0)
    assert paused.spec.suspend is True
    resumed = schedules.set_suspend("a", False, T0 + 5)
    assert resumed.spec.suspend is False and resumed.next_check == T0 + 5
    assert schedules.set_suspend("nope", True, T0) is None
    assert schedules.delete("a") and not schedules.delete("a")
    assert [s.name for s in schedules.list()] == ["b"]
    assert schedules.get("b").spec.time_zone == "Europe/Berlin"


def test_every_schedule_script_touches_only_the_keys_it_declares(
    schedules, clock, redis_client, redis_url
):
    from tests.stage2_coordination.test_composite_store import keys_touched

    for name in ("schedule_sync", "schedule_create", "schedule_suspend"):
        redis_client.script_load(script_source(name))
    seen = {}
    state = None

    def create():
        nonlocal state
        state = make(schedules, clock, successfulJobsHistoryLimit=0)

    seen["create"] = keys_touched(redis_client, redis_url, create)
    assert state is not None
    first = make_run(state, T0, T0)
    fire = Sync(uid=state.uid, next_check=T0 + 300, fire_at=T0, fire=first, missed=1)
    seen["fire"] = keys_touched(
        redis_client, redis_url, lambda: schedules.sync("every5", fire, 0, "s", T0)
    )
    redis_client.hset(keys.task(first.task_id), "status", "SUCCESS")
    redis_client.rpush(keys.logs(first.task_id), "a line")
    second = make_run(state, T0 + 300, T0 + 300)
    trim = Sync(
        uid=state.uid,
        next_check=T0 + 600,
        fire_at=T0 + 300,
        fire=second,
        finished=[Finished(first.task_id, "succeeded")],
        delete=[first.task_id],
    )
    seen["fire, finish and trim"] = keys_touched(
        redis_client, redis_url, lambda: schedules.sync("every5", trim, 0, "s", T0 + 300)
    )
    seen["pause"] = keys_touched(
        redis_client, redis_url, lambda: schedules.set_suspend("every5", True, T0)
    )
    for name, scripts in seen.items():
        assert scripts, f"{name}: no script ran"
        for declared, touched in scripts:
            assert touched, f"{name}: MONITOR showed no command of the script"
            assert touched <= declared, f"{name} touched undeclared keys {touched - declared}"
    # and the trim deleted the first run, as Kubernetes deletes a CronJob's old Jobs
    assert not redis_client.exists(keys.task(first.task_id), keys.logs(first.task_id))
    assert schedules.get("every5").succeeded == ()


# -- the leader fires ----------------------------------------------------------------------------


def leader_elected(probe):
    eventually(probe.fence, 20, message="a leader elected")
    return eventually(probe.leader, 5, message="the leader's name")


def fired(redis_client, name: str, at: float):
    return lambda: at in runs_of(redis_client, name)


def test_the_leader_fires_a_schedule_when_its_clock_reaches_a_fire_time(
    sched, probe, clock, schedules, redis_client
):
    sched("sched-a")
    leader_elected(probe)
    make(schedules, clock)
    clock.set(T0 - 1)
    eventually(lambda: stat(redis_client, "fired") == 0 and schedules.get("every5"), 2)
    clock.set(T0)
    eventually(fired(redis_client, "every5", T0), 10, message="fired at T0")
    clock.set(T0 + 300)
    eventually(fired(redis_client, "every5", T0 + 300), 10, message="fired at T0 + 300")
    assert_fired_exactly_once(redis_client, "every5", [T0, T0 + 300])


@pytest.mark.slow
def test_killing_the_leader_at_a_fire_time_neither_doubles_nor_skips_it(
    sched, probe, clock, schedules, redis_client
):
    procs = {n: sched(n) for n in ("sched-a", "sched-b")}
    make(schedules, clock)
    leader = leader_elected(probe)
    fire_times = []
    for i, kill_after_fire in enumerate((False, True, False)):
        at = T0 + 300 * i
        epoch = probe.fence()
        clock.set(at)
        if kill_after_fire:
            # Killed just after its write: the next leader decides the same time, and the
            # store answers "already".
            eventually(fired(redis_client, "every5", at), 10, message="fired before the kill")
        procs[leader].kill()  # else: killed at once, most likely before it wrote
        fire_times.append(at)
        eventually(lambda e=epoch: probe.fence() > e, 20, message="a new leader")
        eventually(fired(redis_client, "every5", at), 10, message=f"fire {i} happened")
        dead = leader
        leader = eventually(probe.leader, 5)
        assert leader != dead
        procs[dead] = sched(dead)  # back as a standby for the next round
    assert_fired_exactly_once(redis_client, "every5", fire_times)


@pytest.mark.slow
def test_freezing_the_leader_at_a_fire_time_neither_doubles_nor_skips_it(
    sched, probe, clock, schedules, redis_client
):
    procs = {n: sched(n) for n in ("sched-a", "sched-b")}
    make(schedules, clock)
    leader = leader_elected(probe)
    epoch = probe.fence()
    # Frozen at the fire time: it may be mid-write, or not have looked yet.
    clock.set(T0)
    procs[leader].pause()
    eventually(lambda: probe.fence() > epoch, 20, message="a new leader")
    eventually(fired(redis_client, "every5", T0), 10, message="T0 fired")
    clock.set(T0 + 300)
    eventually(fired(redis_client, "every5", T0 + 300), 10, message="T0 + 300 fired")
    # The old leader wakes exactly as T0 + 600 comes due: it may try to fire it with its old
    # epoch (refused by the fence) or learn first that its session is gone; either way the
    # time fires once, by the new leader.
    clock.set(T0 + 600)
    procs[leader].resume()
    eventually(fired(redis_client, "every5", T0 + 600), 10, message="T0 + 600 fired")
    eventually(
        lambda: probe.log_lines(procs[leader], "stepping down|no longer leader|leadership ended"),
        20,
        message="the old leader stepped down",
    )
    assert_fired_exactly_once(redis_client, "every5", [T0, T0 + 300, T0 + 600])


@pytest.mark.slow
def test_after_downtime_across_three_fire_times_only_the_one_within_the_deadline_runs(
    sched, probe, clock, schedules, redis_client
):
    proc = sched("sched-a")
    leader_elected(probe)
    make(schedules, clock, name="deadline", startingDeadlineSeconds=100)
    make(schedules, clock, name="no-deadline")
    epoch = probe.fence()
    proc.kill()
    # Down across T0, T0 + 300 and T0 + 600; back 50 s after the last.
    clock.set(T0 + 650)
    sched("sched-b")
    eventually(lambda: probe.fence() > epoch, 20, message="a new leader")
    eventually(fired(redis_client, "deadline", T0 + 600), 10, message="the last fire ran")
    eventually(fired(redis_client, "no-deadline", T0 + 600), 10, message="the last fire ran")
    assert sorted(runs_of(redis_client, "deadline")) == [T0 + 600]
    assert sorted(runs_of(redis_client, "no-deadline")) == [T0 + 600]
    # With a deadline only the times within it are even considered; without, all three are
    # counted as missed (the one run among them), as Kubernetes counts them.
    assert schedules.get("deadline").last_missed == 1
    assert schedules.get("no-deadline").last_missed == 3


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["Forbid", "Replace"])
def test_a_long_running_run_makes_forbid_skip_and_replace_cancel_it(
    policy, sched, agent, probe, clock, schedules, redis_client, tasks
):
    sched("sched-a")
    agent("agent-1", capacity=2)
    eventually(lambda: len(probe.live_agents()) == 1, 20, message="agent registered")
    leader_elected(probe)
    doc = {"concurrencyPolicy": policy, "task": {"taskType": "SHELL", "payload": "sleep 60"}}
    make(schedules, clock, name="long", **doc)
    clock.set(T0)
    eventually(fired(redis_client, "long", T0), 10, message="first run created")
    (first,) = runs_of(redis_client, "long")[T0]
    eventually(lambda: tasks.get(first).status == TaskStatus.RUNNING, 20, message="first runs")
    clock.set(T0 + 300)
    if policy == "Forbid":
        eventually(lambda: schedules.get("long").last_skip == "forbid_active", 10, message="skip")
        assert sorted(runs_of(redis_client, "long")) == [T0]
        assert tasks.get(first).status == TaskStatus.RUNNING
    else:
        eventually(fired(redis_client, "long", T0 + 300), 10, message="second run created")
        eventually(
            lambda: tasks.get(first).status == TaskStatus.CANCELLED, 20, message="first cancelled"
        )
        (second,) = runs_of(redis_client, "long")[T0 + 300]
        eventually(
            lambda: tasks.get(second).status == TaskStatus.RUNNING, 20, message="second runs"
        )


def test_no_scheduler_reads_a_clock_it_cannot_parse_as_a_fire_time(
    sched, probe, clock, schedules, redis_client
):
    # A clock file that says nothing sensible stops firing (logged), it does not fire at
    # some other time; fixed, firing goes on.
    proc = sched("sched-a")
    leader_elected(probe)
    make(schedules, clock)
    clock.path.write_text("not a time")
    eventually(lambda: probe.log_lines(proc, "cannot read the clock"), 10, message="logged")
    assert runs_of(redis_client, "every5") == {}
    clock.set(T0)
    eventually(fired(redis_client, "every5", T0), 10, message="fired once the clock is back")
    assert time.time() < T0  # the real clock never reached the fire time
