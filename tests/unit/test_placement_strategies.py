"""Placement strategies, on an in-memory view of live agents (no ZooKeeper needed)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from common.coordination.agent_info import AgentInfo
from common.domain.task import Task, TaskSpec
from common.scheduling.strategies import (
    STRATEGIES,
    Candidate,
    LeastLoadStrategy,
    PlacementStrategy,
    RandomStrategy,
    RoundRobinStrategy,
    make_strategy,
    placement,
)

TASK = Task.new(TaskSpec(task_type="SHELL", payload="echo hi"))


def view(*agents: tuple[str, int, int, int]) -> list[Candidate]:
    """An in-memory view: (agentId, capacity, reported load, queued in its inbox)."""
    return [
        Candidate(AgentInfo(agent_id=a, capacity=c, task_types=["SHELL"], load=load), queued)
        for a, c, load, queued in agents
    ]


def test_least_load_prefers_the_idle_agent():
    candidates = view(("agent-1", 4, 3, 0), ("agent-2", 4, 0, 0), ("agent-3", 4, 1, 0))
    assert LeastLoadStrategy().choose(TASK, candidates).agent_id == "agent-2"


def test_least_load_counts_what_waits_in_the_inbox_not_only_the_reported_load():
    # agent-1 reports idle, but the leader already dispatched two tasks it has not started
    candidates = view(("agent-1", 2, 0, 2), ("agent-2", 2, 1, 0))
    assert LeastLoadStrategy().choose(TASK, candidates).agent_id == "agent-2"


def test_least_load_compares_shares_of_capacity_so_a_big_agent_takes_more():
    candidates = view(("big", 8, 3, 0), ("small", 2, 1, 0))
    assert LeastLoadStrategy().choose(TASK, candidates).agent_id == "big"


def test_least_load_breaks_ties_by_agent_id_so_the_choice_is_predictable():
    candidates = view(("agent-b", 2, 0, 0), ("agent-a", 2, 0, 0))
    assert LeastLoadStrategy().choose(TASK, candidates).agent_id == "agent-a"


def test_least_load_takes_turns_among_tied_agents_so_an_idle_cluster_is_spread():
    strategy = LeastLoadStrategy()
    idle = view(("agent-3", 2, 0, 0), ("agent-1", 2, 0, 0), ("agent-2", 2, 0, 0))
    chosen = [strategy.choose(TASK, idle).agent_id for _ in range(4)]
    assert chosen == ["agent-1", "agent-2", "agent-3", "agent-1"]


def test_least_load_prefers_a_less_loaded_agent_over_the_next_turn():
    strategy = LeastLoadStrategy()
    strategy.choose(TASK, view(("agent-1", 2, 0, 0), ("agent-2", 2, 0, 0)))  # agent-1's turn
    # agent-2 is next in turn, but agent-1 is now the less loaded one
    assert strategy.choose(TASK, view(("agent-1", 2, 0, 0), ("agent-2", 2, 1, 0))).agent_id == (
        "agent-1"
    )


def test_round_robin_gives_each_agent_a_turn_in_id_order():
    strategy = RoundRobinStrategy()
    candidates = view(("agent-3", 1, 0, 0), ("agent-1", 1, 0, 0), ("agent-2", 1, 0, 0))
    chosen = [strategy.choose(TASK, candidates).agent_id for _ in range(6)]
    assert chosen == ["agent-1", "agent-2", "agent-3"] * 2


def test_round_robin_neither_skips_nor_repeats_when_an_agent_leaves_or_joins():
    strategy = RoundRobinStrategy()
    everyone = view(("agent-1", 1, 0, 0), ("agent-2", 1, 0, 0), ("agent-3", 1, 0, 0))
    assert strategy.choose(TASK, everyone).agent_id == "agent-1"
    without_2 = [c for c in everyone if c.agent_id != "agent-2"]
    assert strategy.choose(TASK, without_2).agent_id == "agent-3"
    with_4 = everyone + view(("agent-4", 1, 0, 0))
    assert strategy.choose(TASK, with_4).agent_id == "agent-4"
    assert strategy.choose(TASK, with_4).agent_id == "agent-1"


def test_random_spreads_tasks_over_every_agent():
    strategy = RandomStrategy(random.Random(7))
    candidates = view(("agent-1", 1, 0, 0), ("agent-2", 1, 0, 0), ("agent-3", 1, 0, 0))
    counts = Counter(strategy.choose(TASK, candidates).agent_id for _ in range(3000))
    assert set(counts) == {"agent-1", "agent-2", "agent-3"}
    assert all(800 < n < 1200 for n in counts.values()), counts


def test_strategies_are_chosen_by_the_name_configuration_uses():
    assert isinstance(make_strategy("least-load"), LeastLoadStrategy)
    assert isinstance(make_strategy("round-robin"), RoundRobinStrategy)
    assert isinstance(make_strategy("random"), RandomStrategy)
    with pytest.raises(ValueError, match="choose one of least-load, random, round-robin"):
        make_strategy("fastest")


def test_adding_a_strategy_is_one_class():
    @placement("first")
    class FirstStrategy(PlacementStrategy):
        def choose(self, task, candidates):
            return candidates[0]

    try:
        candidates = view(("agent-2", 1, 0, 0), ("agent-1", 1, 0, 0))
        assert make_strategy("first").choose(TASK, candidates).agent_id == "agent-2"
        assert FirstStrategy.name == "first"
    finally:
        del STRATEGIES["first"]


def test_an_unknown_strategy_in_configuration_is_a_one_line_error(monkeypatch):
    from common.config import ConfigError, load_settings

    monkeypatch.setenv("TASKLAB_SCHEDULER_STRATEGY", "fastest")
    with pytest.raises(ConfigError, match="TASKLAB_SCHEDULER_STRATEGY") as err:
        load_settings()
    assert "\n" not in str(err.value)
