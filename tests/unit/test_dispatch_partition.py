"""Which partition of task-dispatch-topic an agent reads: `choose_partition` (stage 3 on)."""

import pytest

from common.coordination.agent_info import AgentInfo
from common.domain.dispatch import choose_partition


def test_agents_joining_one_by_one_each_get_a_partition_of_their_own():
    announced: dict[int, int] = {}
    for n in range(12):
        chosen = choose_partition(12, announced, None, f"agent-{n + 1}")
        announced[chosen] = announced.get(chosen, 0) + 1
    assert sorted(announced) == list(range(12))
    assert set(announced.values()) == {1}


def test_more_agents_than_partitions_share_them_evenly():
    announced: dict[int, int] = {}
    for n in range(7):
        chosen = choose_partition(3, announced, None, f"agent-{n + 1}")
        announced[chosen] = announced.get(chosen, 0) + 1
    assert sorted(announced.values()) == [2, 2, 3]


def test_a_restarted_agent_takes_back_its_partition_if_nobody_took_it():
    assert choose_partition(12, {0: 1, 1: 1}, 7, "agent-3") == 7


def test_a_restarted_agent_whose_partition_was_taken_picks_a_free_one():
    chosen = choose_partition(4, {0: 1, 1: 1, 2: 1}, 1, "agent-3")
    assert chosen == 3


def test_a_previous_partition_beyond_the_topic_is_ignored():
    assert choose_partition(2, {0: 1}, 5, "agent-1") == 1


def test_agents_starting_blind_to_each_other_spread_by_their_ids():
    # Twelve agents that all read "nobody announced anything" at once.
    chosen = {choose_partition(12, {}, None, f"agent-{n + 1}") for n in range(12)}
    # Not a guarantee (a hash), but the ids of a default topology do not all collide.
    assert len(chosen) > 1


def test_a_topic_without_partitions_is_an_error():
    with pytest.raises(ValueError, match="0 partitions"):
        choose_partition(0, {}, None, "agent-1")


def test_an_agents_node_carries_its_dispatch_partition_only_when_it_has_one():
    info = AgentInfo(agent_id="a", capacity=2, task_types=["SHELL"], dispatch_partition=4)
    assert b'"dispatchPartition":4' in info.to_json()
    assert AgentInfo.from_json(info.to_json()).dispatch_partition == 4
    plain = AgentInfo(agent_id="a", capacity=2, task_types=["SHELL"])
    assert b"dispatchPartition" not in plain.to_json()
    assert AgentInfo.from_json(plain.to_json()).dispatch_partition is None
