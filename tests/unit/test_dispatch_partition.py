"""Which partition of task-dispatch-topic an agent reads (stage 3 on): the order it claims them
in (`partition_order`) and the one it shares when all are claimed (`least_shared`)."""

import pytest

from common.coordination.agent_info import AgentInfo
from common.domain.dispatch import least_shared, partition_order


def claim_in_order(partitions: int, ids: list[str]) -> dict[str, int | None]:
    """What ZooKeeper's creates make of agents claiming one after another."""
    held: set[int] = set()
    out: dict[str, int | None] = {}
    for agent_id in ids:
        free = [p for p in partition_order(partitions, None, agent_id) if p not in held]
        out[agent_id] = free[0] if free else None
        if free:
            held.add(free[0])
    return out


def test_every_partition_is_tried_once_starting_where_the_id_hashes():
    order = partition_order(12, None, "agent-1")
    assert sorted(order) == list(range(12))
    assert order == [(order[0] + k) % 12 for k in range(12)]


def test_a_restarted_agent_tries_its_previous_partition_first():
    order = partition_order(12, 7, "agent-3")
    assert order[0] == 7 and sorted(order) == list(range(12))


def test_a_previous_partition_beyond_the_topic_is_ignored():
    assert partition_order(2, 5, "agent-1") == partition_order(2, None, "agent-1")


def test_twelve_agents_claiming_twelve_partitions_each_get_one_of_their_own():
    claims = claim_in_order(12, [f"agent-{n + 1}" for n in range(12)])
    assert sorted(claims.values()) == list(range(12))


def test_an_agent_past_the_partitions_claims_none_and_shares_the_least_read():
    claims = claim_in_order(2, ["agent-1", "agent-2", "agent-3"])
    assert claims["agent-3"] is None
    assert least_shared(2, {0: 2, 1: 1}, "agent-3") == 1


def test_sharing_spreads_over_the_least_read_partitions():
    announced: dict[int, int] = {0: 1, 1: 1, 2: 1}
    for n in range(4):
        chosen = least_shared(3, announced, f"agent-{n + 4}")
        announced[chosen] += 1
    assert sorted(announced.values()) == [2, 2, 3]


def test_a_topic_without_partitions_is_an_error():
    with pytest.raises(ValueError, match="0 partitions"):
        partition_order(0, None, "agent-1")


def test_an_agents_node_carries_its_dispatch_partition_only_when_it_has_one():
    info = AgentInfo(agent_id="a", capacity=2, task_types=["SHELL"], dispatch_partition=4)
    assert b'"dispatchPartition":4' in info.to_json()
    assert AgentInfo.from_json(info.to_json()).dispatch_partition == 4
    plain = AgentInfo(agent_id="a", capacity=2, task_types=["SHELL"])
    assert b"dispatchPartition" not in plain.to_json()
    assert AgentInfo.from_json(plain.to_json()).dispatch_partition is None
