"""Dispatch over Kafka: only the agent a dispatch names runs it, and only that agent reads it
(each agent reads the partition it announced; read amplification measured), a dispatch that
never reached Kafka is published again, and a poisoned dispatch is moved aside."""

from __future__ import annotations

import json
import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import keys
from common.adapters.redis_dispatch import RedisDispatcher
from common.adapters.redis_store import RedisTaskStore
from common.domain.transitions import TaskStatus
from common.messaging import dead_letter
from common.messaging.clients import Bus
from common.messaging.dispatch import AGENT_HEADER
from common.messaging.schemas import DispatchMessage
from common.messaging.topics import DEAD_LETTER, DISPATCH, ensure_topics
from common.testing import eventually

AGENTS = ("agent-1", "agent-2", "agent-3")


def test_only_the_agent_a_dispatch_names_runs_it_and_only_that_agent_reads_it(role, probe):
    # Given a scheduler, three agents and a manager
    role("scheduler", "scheduler-1")
    role("manager", "manager-1")
    for name in AGENTS:
        role("agent", name, agent_capacity=2)
    probe.wait_for_agents(*AGENTS)

    # When 90 tasks are submitted
    labels = probe.submit_counted(90, extra="sleep 0.05")
    ids = list(labels.values())
    started = time.monotonic()
    eventually(lambda: probe.all_succeeded(ids), 60, message="all 90 tasks SUCCESS")
    elapsed = time.monotonic() - started

    # Then each ran exactly once, on the agent the scheduler placed it on
    runs = probe.runs()
    for label, task_id in labels.items():
        assert runs[label] == [probe.tasks.get(task_id).agent_id], label
    # and each agent read a partition of its own: only the dispatches addressed to it
    partitions = {a: probe.dispatch_partition(a) for a in AGENTS}
    assert len(set(partitions.values())) == len(AGENTS), partitions
    total = probe.dispatches()
    beats = probe.latest_heartbeats(
        lambda b: set(AGENTS) <= set(b) and sum(b[a].dispatch_mine for a in AGENTS) >= total
    )
    per_agent = {a: (beats[a].dispatch_read, beats[a].dispatch_mine) for a in AGENTS}
    assert all(read == mine for read, mine in per_agent.values()), (total, per_agent)
    assert sum(mine for _, mine in per_agent.values()) == total
    assert all(mine > 0 for _, mine in per_agent.values()), per_agent
    amplification = sum(read for read, _ in per_agent.values()) / total
    print(
        f"\n{len(ids)} tasks, {total} dispatch messages, {elapsed:.1f}s; "
        + ", ".join(f"{a} read {r} ran {m}" for a, (r, m) in per_agent.items())
        + f"; read amplification {amplification:.2f}"
    )
    assert amplification == 1.0


def test_a_dispatch_that_never_reached_kafka_is_published_again_and_runs(role, probe, redis_client):
    # Given an agent and a manager, and no scheduler yet
    role("manager", "manager-1")
    role("agent", "agent-1")
    probe.wait_for_agents("agent-1")
    # When a leader (played by the test, with epoch 1) marks a task DISPATCHED to agent-1 in
    # Redis and dies before publishing the dispatch to Kafka
    task, _ = probe.tasks.submit({"taskType": "SHELL", "payload": "echo relayed"})
    dying = RedisDispatcher(redis_client, RedisTaskStore(redis_client))
    assert dying.raise_fence(1)[0]
    scheduled = dying.schedule(dying.take(1.0), epoch=1, actor="scheduler:dying")
    assert dying.dispatch(scheduled, "agent-1", epoch=1, actor="scheduler:dying").accepted
    assert probe.dispatches() == 0
    # and a new leader is elected
    scheduler = role("scheduler", "scheduler-1")

    # Then its recovery sweep publishes the dispatch again, and agent-1 runs the task
    done = eventually(
        lambda: (t := probe.tasks.get(task.task_id)).is_terminal and t, 15, message="task done"
    )
    assert (done.status, done.result, done.agent_id) == (TaskStatus.SUCCESS, "relayed\n", "agent-1")
    assert probe.dispatches() == 1
    assert "published again" in scheduler.log_text()


def test_a_poisoned_dispatch_is_dead_lettered_by_its_agent_and_the_next_one_runs_in_a_second(
    role, probe
):
    # Given the whole stage, warmed up by one task
    role("scheduler", "scheduler-1")
    role("manager", "manager-1")
    role("agent", "agent-1")
    probe.wait_for_agents("agent-1")
    first, _ = probe.tasks.submit({"taskType": "SHELL", "payload": "true"})
    eventually(lambda: probe.tasks.get(first.task_id).is_terminal, 15, message="warm-up done")

    # When a dispatch for agent-1 arrives that is not a valid DispatchMessage
    bad = {"taskId": first.task_id, "attempt": 1, "agentId": "agent-1", "taskType": "NOPE"}
    partition = probe.dispatch_partition("agent-1")
    poison = probe.produce(
        DISPATCH,
        first.task_id,
        json.dumps(bad),
        headers={AGENT_HEADER: "agent-1"},
        partition=partition,
    )
    # and right after it a real task
    task, _ = probe.tasks.submit({"taskType": "SHELL", "payload": "echo next"})
    submitted = time.monotonic()

    # Then the real task runs to SUCCESS within a second
    eventually(
        lambda: probe.tasks.get(task.task_id).status == TaskStatus.SUCCESS,
        1.0,
        message="next task SUCCESS",
    )
    took = time.monotonic() - submitted
    # and the poison sits in the dead-letter topic, saying where it came from and why
    [letter] = probe.read(DEAD_LETTER, lambda got: len(got) >= 1)
    headers = probe.headers(letter)
    assert headers[dead_letter.ORIGINAL_TOPIC] == probe.bus.topic(DISPATCH)
    assert headers[dead_letter.ORIGINAL_PARTITION] == str(poison.partition())
    assert headers[dead_letter.ORIGINAL_OFFSET] == str(poison.offset())
    assert "taskType" in headers[dead_letter.ERROR]
    assert headers[dead_letter.CONSUMER_GROUP] == probe.bus.group("tasklab-agent-agent-1")
    assert headers[AGENT_HEADER] == "agent-1"
    print(f"\nnext task SUCCESS {took * 1000:.0f} ms after submit, past the poisoned dispatch")
    # A valid dispatch for a task that is not this agent's to run is refused, not run twice
    stale = DispatchMessage.for_task(probe.tasks.get(first.task_id), 1, 0, "agent-1")
    probe.produce(
        DISPATCH,
        first.task_id,
        stale.encode(),
        headers={AGENT_HEADER: "agent-1"},
        partition=partition,
    )
    eventually(
        lambda: int(probe.redis.hget(keys.TRANSITION_STATS, "rejected_dispatch_taken") or 0) == 1,
        5,
        message="stale dispatch refused",
    )
    assert [h["state"] for h in probe.history(first.task_id)].count("RUNNING") == 1


def committed_offset(bus: Bus, agent_id: str, partition: int) -> int:
    """The offset agent_id's group committed on a partition of task-dispatch-topic (-1: none)."""
    consumer = Consumer(
        {"bootstrap.servers": bus.bootstrap, "group.id": bus.group(f"tasklab-agent-{agent_id}")}
    )
    try:
        [tp] = consumer.committed([TopicPartition(bus.topic(DISPATCH), partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def test_a_restarted_agent_takes_its_partition_back_and_a_joining_one_takes_a_free_one(role, probe):
    # Given a scheduler, a manager and two agents, each reading a partition of its own, that
    # ran tasks (so agent-1 has a committed offset on its partition)
    role("scheduler", "scheduler-1")
    role("manager", "manager-1")
    first = role("agent", "agent-1", agent_capacity=2)
    role("agent", "agent-2", agent_capacity=2)
    probe.wait_for_agents("agent-1", "agent-2")
    before = {a: probe.dispatch_partition(a) for a in ("agent-1", "agent-2")}
    assert before["agent-1"] != before["agent-2"]
    warm = probe.submit_counted(20, prefix="w")
    eventually(lambda: probe.all_succeeded(list(warm.values())), 60, message="warm-up done")
    eventually(
        lambda: committed_offset(probe.bus, "agent-1", before["agent-1"]) >= 0,
        15,
        message="agent-1 committed its partition's offset",
    )

    # When agent-1 is killed -9 and started again under its id, and agent-3 joins
    first.kill()
    role("agent", "agent-1", agent_capacity=2)
    role("agent", "agent-3", agent_capacity=2)
    probe.wait_for_agents("agent-1", "agent-2", "agent-3", timeout=60)

    # Then agent-1 reads its partition again, agent-3 one nobody reads
    after = {a: probe.dispatch_partition(a) for a in ("agent-1", "agent-2", "agent-3")}
    assert after["agent-1"] == before["agent-1"]
    assert len(set(after.values())) == 3, after
    # and every task runs exactly once, each dispatch read only by the agent it names
    labels = probe.submit_counted(60)
    eventually(lambda: probe.all_succeeded(list(labels.values())), 90, message="all SUCCESS")
    runs = probe.runs()
    for label, task_id in {**warm, **labels}.items():
        assert len(runs[label]) == 1, (label, runs[label])
        assert runs[label] == [probe.tasks.get(task_id).agent_id], label
    agents = ("agent-1", "agent-2", "agent-3")
    # (agent-1's counters start again from its restart: it ran the new tasks since)
    beats = probe.latest_heartbeats(
        lambda b: set(agents) <= set(b) and sum(b[a].dispatch_mine for a in agents) >= len(labels)
    )
    assert all(beats[a].dispatch_read == beats[a].dispatch_mine for a in agents), {
        a: (beats[a].dispatch_read, beats[a].dispatch_mine) for a in agents
    }


def test_agents_that_outnumber_the_partitions_share_them_and_still_run_each_task_once(
    role, bus, probe_on
):
    # Given a dispatch topic of two partitions (a cluster that made it so) and three agents
    shared = Bus(bus.bootstrap, f"share{uuid.uuid4().hex[:8]}")
    admin = AdminClient({"bootstrap.servers": shared.bootstrap})
    topic = shared.topic(DISPATCH)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    ensure_topics(shared.bootstrap, shared.namespace)
    probe = probe_on(shared)
    bus = shared
    agents = ("agent-1", "agent-2", "agent-3")
    role("scheduler", "scheduler-1", kafka_namespace=bus.namespace)
    role("manager", "manager-1", kafka_namespace=bus.namespace)
    for name in agents:
        role("agent", name, agent_capacity=2, kafka_namespace=bus.namespace)
    probe.wait_for_agents(*agents)
    partitions = {a: probe.dispatch_partition(a) for a in agents}
    assert set(partitions.values()) == {0, 1}, partitions

    # When 60 tasks run
    labels = probe.submit_counted(60)
    eventually(lambda: probe.all_succeeded(list(labels.values())), 90, message="all SUCCESS")

    # Then each ran exactly once, on the agent it was placed on, though two agents read every
    # dispatch of their shared partition (and skipped the other's on its header)
    runs = probe.runs()
    for label, task_id in labels.items():
        assert runs[label] == [probe.tasks.get(task_id).agent_id], label
    total = probe.dispatches()
    beats = probe.latest_heartbeats(
        lambda b: set(agents) <= set(b) and sum(b[a].dispatch_mine for a in agents) >= total
    )
    reads = sum(beats[a].dispatch_read for a in agents)
    assert total < reads < 2 * total, (total, reads)
