"""Break it: run several managers, add and remove them while agents run long tasks.

Managers share the topics' partitions; each reads only the heartbeats of the partitions it is
assigned. A manager that kept judging agents whose partition moved to another manager would
see them fall silent while others are still heard, and fail them over: their live work
re-queued with attempt + 1 and run a second time. Nothing of that may happen.
"""

from __future__ import annotations

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from common.messaging.schemas import Heartbeat, decode
from common.messaging.topics import HEARTBEAT
from common.testing import eventually

pytestmark = pytest.mark.slow


def heartbeat_owners(probe) -> dict[str, list[int]] | None:
    """client id -> the heartbeat partitions it is assigned, once the managers' group is
    stable (no rebalance under way); None while it is not."""
    admin = AdminClient({"bootstrap.servers": probe.bus.bootstrap})
    group = probe.bus.group("tasklab-manager")
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    if description.state != ConsumerGroupState.STABLE:
        return None
    topic = probe.bus.topic(HEARTBEAT)
    return {
        member.client_id: sorted(
            tp.partition for tp in member.assignment.topic_partitions if tp.topic == topic
        )
        for member in description.members
    }


def test_managers_joining_and_leaving_while_tasks_run_fail_over_no_live_agent(role, probe):
    # Given the stage with one manager and three agents whose heartbeats land on different
    # partitions (keyed by agentId), so a rebalance moves some agents away from the first
    # manager while it still hears the others
    role("scheduler", "scheduler-1")
    managers = {"manager-1": role("manager", "manager-1")}
    agents = ("agent-1", "agent-2", "agent-3")
    for name in agents:
        # Room for every task on any agent: placement may be uneven, no task waits.
        role("agent", name, agent_capacity=6)
    probe.wait_for_agents(*agents)
    partition_of: dict[str, int] = {}

    def heard_all(messages) -> bool:
        for msg in messages:
            partition_of[decode(Heartbeat, msg.value()).agent_id] = msg.partition()
        return set(agents) <= set(partition_of)

    probe.read(HEARTBEAT, heard_all)
    assert len({partition_of[a] for a in agents}) > 1, partition_of

    # and six tasks that run for 25 s each, spread over the agents
    labels = probe.submit_counted(6, extra="sleep 25")
    ids = list(labels.values())
    eventually(lambda: probe.statuses(ids)["RUNNING"] == 6, 30, message="all six RUNNING")
    busy = {probe.tasks.get(task_id).agent_id for task_id in ids}
    assert len({partition_of[a] for a in busy}) > 1, busy

    # When a second and a third manager join (each join moves partitions: a rebalance)
    for name in ("manager-2", "manager-3"):
        managers[name] = role("manager", name)
    three = eventually(
        lambda: (owners := heartbeat_owners(probe)) and len(owners) == 3 and owners,
        30,
        interval=0.5,
        message="three managers sharing the partitions",
    )
    assert sorted(p for ps in three.values() for p in ps) == [0, 1, 2], three
    # and the third stops again: once its session ends (static membership: 10 s), its
    # partitions move to the other two
    managers["manager-3"].stop()
    two = eventually(
        lambda: (owners := heartbeat_owners(probe)) and len(owners) == 2 and owners,
        30,
        interval=0.5,
        message="manager-3's partitions taken over by the others",
    )
    assert sorted(p for ps in two.values() for p in ps) == [0, 1, 2], two
    assert "no longer judging heartbeats" in managers["manager-1"].log_text()
    # (still within the tasks' 25 s: the rebalances happened while every task ran)
    assert probe.statuses(ids)["RUNNING"] == 6

    # Then every task ends SUCCESS, at attempt 1, having run exactly once
    eventually(lambda: probe.all_succeeded(ids), 60, message="all six SUCCESS")
    runs = probe.runs()
    assert {label: len(ran) for label, ran in runs.items()} == {label: 1 for label in labels}
    for task_id in ids:
        assert probe.tasks.get(task_id).attempt == 1
        history = probe.history(task_id)
        given_back = [h for h in history if h["state"] == "PENDING" and h.get("from")]
        assert given_back == [], given_back
        text = str(history)
        assert "lost" not in text and "missed heartbeats" not in text, history
    # and no manager failed an agent over
    assert probe.event_stats()["agent_failovers"] == 0
    for name, proc in managers.items():
        assert "silent on the heartbeat topic" not in proc.log_text(), name
