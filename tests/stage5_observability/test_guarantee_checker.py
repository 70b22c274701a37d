"""The guarantee checker, on real services: each broken guarantee is made to happen for real
(an agent killed with its leader frozen, a frozen agent past a task's timeout, a leader gone
between taking and placing a task, a task held by two agents, a dead letter), read from the
checker's own /metrics over HTTP, and seen to clear once the platform repairs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from observability_support import promtool_problems, scrape, wait_ready

from common import keys
from common.adapters.redis_client import redis_client
from common.adapters.redis_dispatch import RedisDispatcher
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.domain.transitions import TaskStatus
from common.testing import eventually

pytestmark = pytest.mark.integration

FAST_CHECKS = {
    "TASKLAB_CHECKER_INTERVAL": "0.2",
    "TASKLAB_CHECKER_OWNER_GRACE": "1",
    "TASKLAB_CHECKER_TIMEOUT_GRACE": "0.5",
    "TASKLAB_CHECKER_SCHEDULED_DEADLINE": "1",
}
CHECKER_FAMILIES = {
    "tasklab_guarantee_violations": "gauge",
    "tasklab_guarantee_oldest_violation_seconds": "gauge",
    "tasklab_dead_letters_unseen": "gauge",
    "tasklab_dead_letters_unseen_oldest_seconds": "gauge",
    "tasklab_checker_is_leader": "gauge",
    "tasklab_checker_passes_total": "counter",
    "tasklab_checker_pass_errors_total": "counter",
    "tasklab_checker_last_cycle_timestamp_seconds": "gauge",
    "tasklab_checker_pass_duration_seconds": "gauge",
}


@pytest.fixture
def stage1_env(redis_url) -> dict[str, str]:
    return {"TASKLAB_REDIS_URL": redis_url}


@pytest.fixture
def stage2_env(redis_url, zookeeper_service, zk_chroot) -> dict[str, str]:
    return {"TASKLAB_REDIS_URL": redis_url, "TASKLAB_ZK_CHROOT": zk_chroot, **zookeeper_service.env}


def start_checker(observed_role, stage: int, env: dict[str, str], name: str = "checker-1"):
    proc, address = observed_role(
        "checker", stage, {**env, **FAST_CHECKS, "TASKLAB_CHECKER_ID": name}, name
    )
    wait_ready(proc, address)
    return proc, address


def violations(address: str, check: str) -> float | None:
    """The checker's count for `check`, or None while it serves none (not leading yet)."""
    samples = scrape(address).samples("tasklab_guarantee_violations", check=check)
    return samples[0] if samples else None


def wait_violations(address: str, check: str, expected: int, timeout: float = 30.0) -> None:
    eventually(
        lambda: violations(address, check) == expected,
        timeout,
        0.1,
        message=f"tasklab_guarantee_violations{{check={check!r}}} == {expected}",
    )


def tasks_of(env: dict[str, str]) -> TaskClient:
    return TaskClient(RedisTaskStore(redis_client(env["TASKLAB_REDIS_URL"])))


def wait_status(tasks: TaskClient, task_id: str, status: TaskStatus, timeout: float = 30.0):
    return eventually(
        lambda: tasks.get(task_id).status == status,
        timeout,
        0.05,
        message=f"task {task_id} {status.value}",
    )


def explain(env: dict[str, str], task_id: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "explain", task_id],
        env={**os.environ, **env, "TASKLAB_STAGE": "2"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_running_task_whose_agent_was_killed_has_no_live_owner_until_the_failover(
    observed_role, stage2_env
):
    # Given a scheduler, an agent whose ZooKeeper session expires 4 s after it dies, a checker
    scheduler, scheduler_address = observed_role(
        "scheduler", 2, {**stage2_env, "TASKLAB_ZK_SESSION_TIMEOUT": "4"}, "scheduler-g1"
    )
    agent, agent_address = observed_role(
        "agent", 2, {**stage2_env, "TASKLAB_ZK_SESSION_TIMEOUT": "4"}, "agent-g1"
    )
    wait_ready(scheduler, scheduler_address)
    wait_ready(agent, agent_address)
    checker, address = start_checker(observed_role, 2, stage2_env)
    tasks = tasks_of(stage2_env)
    task = tasks.submit({"taskType": "SHELL", "payload": "sleep 60", "executionTimeout": 120})[0]
    wait_status(tasks, task.task_id, TaskStatus.RUNNING)
    wait_violations(address, "running_without_owner", 0)

    # When the leader is frozen (nobody fails the agent over) and the agent is killed
    os.kill(scheduler.pid, signal.SIGSTOP)
    try:
        os.kill(agent.pid, signal.SIGKILL)
        # Then, once its session expired and the grace passed, the task has no live owner
        wait_violations(address, "running_without_owner", 1)
        metrics = scrape(address)
        assert (
            metrics.value(
                "tasklab_guarantee_oldest_violation_seconds", check="running_without_owner"
            )
            > 0
        )
        assert promtool_problems(metrics.text) == ""
        # ...and explain says so, with the checker's finding
        text = explain(stage2_env, task.task_id)
        assert "Its agent agent-g1 is not live: not registered in ZooKeeper" in text
        assert "found a broken guarantee: running_without_owner" in text
    finally:
        os.kill(scheduler.pid, signal.SIGCONT)

    # Then the woken leader fails the agent over, and the violation clears
    wait_status(tasks, task.task_id, TaskStatus.PENDING, timeout=40)
    wait_violations(address, "running_without_owner", 0)
    text = explain(stage2_env, task.task_id)
    assert "1 of its attempts were lost with their agent" in text
    assert "agent agent-g1 lost" in text


def test_a_task_still_running_past_its_timeout_on_a_frozen_agent_counts_until_it_is_killed(
    observed_role, stage1_env
):
    # Given a stage 1 agent (its heartbeat key outlives a short freeze) and a checker
    env = {**stage1_env, "TASKLAB_HEARTBEAT_TTL": "60"}
    agent, agent_address = observed_role("agent", 1, env, "agent-t1")
    wait_ready(agent, agent_address)
    checker, address = start_checker(observed_role, 1, stage1_env)
    assert scrape(address).value("tasklab_checker_is_leader") == 1
    tasks = tasks_of(env)
    task = tasks.submit({"taskType": "SHELL", "payload": "sleep 30", "executionTimeout": 2})[0]
    wait_status(tasks, task.task_id, TaskStatus.RUNNING)

    # When the agent is frozen, so that its timer cannot kill the task
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        # Then the task counts as running past its timeout (2 s + 0.5 s grace)
        wait_violations(address, "running_past_timeout", 1)
        assert violations(address, "running_without_owner") == 0
        metrics = scrape(address)
        for name, kind in CHECKER_FAMILIES.items():
            assert metrics.families().get(name) == kind, name
        assert promtool_problems(metrics.text) == ""
    finally:
        os.kill(agent.pid, signal.SIGCONT)

    # Then the woken agent kills it, and the count goes back to 0
    wait_status(tasks, task.task_id, TaskStatus.FAILED)
    wait_violations(address, "running_past_timeout", 0)


def test_a_task_left_scheduled_by_a_vanished_leader_is_stuck_until_a_new_leader_recovers_it(
    observed_role, stage2_env
):
    # Given a task that a leader took and scheduled with the real scripts, then vanished
    client = redis_client(stage2_env["TASKLAB_REDIS_URL"])
    tasks = tasks_of(stage2_env)
    task = tasks.submit({"taskType": "SHELL", "payload": "true"})[0]
    dispatcher = RedisDispatcher(client, RedisTaskStore(client), 64 * 1024)
    assert dispatcher.raise_fence(5)[0]
    raw = dispatcher.take(5.0)
    assert raw is not None
    dispatcher.schedule(raw, 5, "scheduler:gone")
    assert tasks.get(task.task_id).status == TaskStatus.SCHEDULED

    # When a checker looks
    checker, address = start_checker(observed_role, 2, stage2_env)

    # Then the task is stuck in SCHEDULED past its 1 s deadline
    wait_violations(address, "stuck_scheduled", 1)
    text = explain(stage2_env, task.task_id)
    assert "It is SCHEDULED since" in text
    assert "Its message is on queue:scheduling" in text
    assert "It was last written at epoch 5, the current fence:scheduler" in text
    assert "stuck_scheduled: SCHEDULED for" in text

    # When a new scheduler leads: its recovery sweep gives the task back to the queue
    scheduler, scheduler_address = observed_role("scheduler", 2, stage2_env, "scheduler-g3")
    wait_ready(scheduler, scheduler_address)
    wait_status(tasks, task.task_id, TaskStatus.PENDING)
    wait_violations(address, "stuck_scheduled", 0)
    assert violations(address, "stuck_pending") == 0


def test_a_task_two_live_agents_hold_at_once_counts_as_a_duplicate_attempt(
    observed_role, stage2_env
):
    # Given two live agents, one of them running a task
    scheduler, scheduler_address = observed_role("scheduler", 2, stage2_env, "scheduler-g4")
    agents = {}
    for name in ("agent-d1", "agent-d2"):
        proc, agent_address = observed_role("agent", 2, stage2_env, name)
        wait_ready(proc, agent_address)
        agents[name] = proc
    wait_ready(scheduler, scheduler_address)
    checker, address = start_checker(observed_role, 2, stage2_env)
    tasks = tasks_of(stage2_env)
    task = tasks.submit({"taskType": "SHELL", "payload": "sleep 60", "executionTimeout": 120})[0]
    running = wait_status(tasks, task.task_id, TaskStatus.RUNNING)
    assert running
    owner = tasks.get(task.task_id).agent_id
    other = next(a for a in agents if a != owner)
    client = redis_client(stage2_env["TASKLAB_REDIS_URL"])
    wait_violations(address, "duplicate_attempts", 0)

    # When the other live agent holds the same attempt as well (the claim a fencing bug or a
    # copied dispatch would give it: the owner's processing entry, byte for byte)
    entry = client.lindex(keys.processing(owner), 0)
    assert entry is not None
    client.lpush(keys.processing(other), entry)

    # Then the checker counts a duplicate attempt, and stops once the copy is gone
    wait_violations(address, "duplicate_attempts", 1)
    client.lrem(keys.processing(other), 1, entry)
    wait_violations(address, "duplicate_attempts", 0)


def test_a_dead_letter_counts_as_unseen_until_it_is_marked_looked_at(observed_role, stage1_env):
    # Given a stage 1 agent and a checker
    agent, agent_address = observed_role("agent", 1, stage1_env, "agent-l1")
    wait_ready(agent, agent_address)
    checker, address = start_checker(observed_role, 1, stage1_env)
    eventually(lambda: scrape(address).value("tasklab_dead_letters_unseen") == 0 or None, 15)

    # When a message that is not a task is pushed by hand: the agent dead-letters it
    client = redis_client(stage1_env["TASKLAB_REDIS_URL"])
    client.lpush(keys.PENDING_QUEUE, "this is not json")
    eventually(
        lambda: scrape(address).value("tasklab_dead_letters_unseen") == 1,
        20,
        0.1,
        message="one dead letter unseen",
    )
    eventually(lambda: scrape(address).value("tasklab_dead_letters_unseen_oldest_seconds") > 0, 10)

    # When an operator marks them looked at
    done = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "dead-letters-seen"],
        env={**os.environ, **stage1_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("marked 1 new dead letter(s) as looked at")

    # Then none is unseen, and the age is 0
    eventually(
        lambda: (
            scrape(address).value("tasklab_dead_letters_unseen") == 0
            and scrape(address).value("tasklab_dead_letters_unseen_oldest_seconds") == 0
        ),
        10,
        0.1,
        message="no dead letter unseen",
    )


def test_one_of_two_checkers_leads_and_the_standby_takes_over_when_it_is_killed(
    observed_role, stage2_env
):
    # Given two checkers on one ZooKeeper
    addresses = {}
    procs = {}
    for name in ("checker-a", "checker-b"):
        procs[name], addresses[name] = start_checker(observed_role, 2, stage2_env, name)

    def leaders() -> list[str]:
        return [n for n, a in addresses.items() if scrape(a).value("tasklab_checker_is_leader")]

    leader = eventually(lambda: leaders()[0] if len(leaders()) == 1 else None, 20, 0.1)
    standby = next(n for n in addresses if n != leader)
    # Then only the leader serves findings
    assert violations(addresses[standby], "stuck_pending") is None
    assert violations(addresses[leader], "stuck_pending") == 0

    # When the leader is killed, the standby leads once the session expires
    os.kill(procs[leader].pid, signal.SIGKILL)
    eventually(lambda: violations(addresses[standby], "stuck_pending") == 0, 40, 0.2)
    assert scrape(addresses[standby]).value("tasklab_checker_is_leader") == 1


def test_the_checker_reads_a_bounded_window_per_pass_and_publishes_once_a_cycle(redis_client):
    # Given five tasks on Redis, each past a PENDING deadline of 0 s, and a checker that reads
    # two task records per pass (in this process: the reads are what is under test)
    from common.adapters.redis_guarantees import RedisGuaranteeReader
    from common.domain.guarantees import Deadlines
    from common.scheduling.checker import GuaranteeChecker

    tasks = TaskClient(RedisTaskStore(redis_client))
    ids = {tasks.submit({"taskType": "SHELL", "payload": "true"})[0].task_id for _ in range(5)}
    reader = RedisGuaranteeReader(redis_client, window=2)
    checker = GuaranteeChecker(
        reader, reader.heartbeating, Deadlines(per_state={TaskStatus.PENDING: 0.0})
    )

    # When it runs pass after pass
    counts = [len(checker.run_pass().task_findings) for _ in range(3)]

    # Then the first two passes (2 + 2 records) end no cycle, so nothing is published yet;
    # the third reads the last record, ends the cycle and publishes all five
    assert counts == [0, 0, 5]
    stored = {k.decode() for k in redis_client.hkeys(keys.CHECKER_FINDINGS)}
    assert stored == ids
    assert float(redis_client.get(keys.CHECKER_LAST_PASS)) > 0
    # ...and while the next cycle walks the index again, the last cycle's count stands
    assert [len(checker.run_pass().task_findings) for _ in range(3)] == [5, 5, 5]


def test_a_dead_letter_on_the_kafka_topic_counts_as_unseen_until_it_is_marked_looked_at(
    observed_role, stage2_env, kafka_service, kafka_namespace
):
    from confluent_kafka import Producer

    from common.messaging.clients import Bus
    from common.messaging.topics import DEAD_LETTER, STATUS, ensure_topics

    # Given a stage 3 manager and checker
    bus = Bus(kafka_service.env["TASKLAB_KAFKA_BOOTSTRAP"], kafka_namespace)
    ensure_topics(bus.bootstrap, bus.namespace)
    env = {
        **stage2_env,
        "TASKLAB_KAFKA_BOOTSTRAP": bus.bootstrap,
        "TASKLAB_KAFKA_NAMESPACE": bus.namespace,
    }
    manager, _ = observed_role("manager", 3, env, "manager-k1")
    checker, address = start_checker(observed_role, 3, env)

    def unseen() -> float | None:
        samples = scrape(address).samples("tasklab_dead_letters_unseen", channel="kafka")
        return samples[0] if samples else None

    eventually(lambda: unseen() == 0, 30, 0.2, message="no kafka dead letter unseen")

    # When a status message that is not JSON is published: the manager dead-letters it
    producer = Producer({"bootstrap.servers": bus.bootstrap})
    producer.produce(bus.topic(STATUS), key=b"poison", value=b"this is not json")
    assert producer.flush(15) == 0

    # Then the checker counts one unseen dead letter on the topic, with its age
    eventually(lambda: unseen() == 1, 60, 0.2, message="one kafka dead letter unseen")
    assert manager.alive()
    metrics = scrape(address)
    assert metrics.value("tasklab_dead_letters_unseen_oldest_seconds", channel="kafka") > 0
    assert metrics.value("tasklab_dead_letters_unseen", channel="redis") == 0
    assert promtool_problems(metrics.text) == ""

    # When an operator marks them looked at, none is unseen
    done = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "dead-letters-seen"],
        env={**os.environ, **env, "TASKLAB_STAGE": "3"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"marked 1 new dead letter(s) on {bus.topic(DEAD_LETTER)}" in done.stdout
    eventually(lambda: unseen() == 0, 20, 0.2, message="the kafka dead letter looked at")
