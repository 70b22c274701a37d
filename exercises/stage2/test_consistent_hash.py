"""Exercise 2.1, a consistent-hash placement strategy.

Add a `PlacementStrategy` registered as `@placement("consistent-hash")` in
common/scheduling/strategies.py: each agent owns many points on a hash ring, and a task goes to
the owner of the first point after the hash of its taskId. The same task always lands on the
same agent (a cache on that agent stays warm), and when an agent joins or leaves, only the
tasks on the ring segments it gains or loses move. No services (`make exercise-stage2`).
"""

from __future__ import annotations

import uuid
from collections import Counter

from common.coordination.agent_info import AgentInfo
from common.domain.task import Task, TaskSpec
from common.scheduling import strategies
from exercises.support import not_done

TASKS = [
    Task.new(TaskSpec(task_type="SHELL", payload="true"), task_id=str(uuid.UUID(int=n * 7919)))
    for n in range(1, 3001)
]


def consistent_hash():
    if "consistent-hash" not in strategies.STRATEGIES:
        not_done("2.1", 'register a strategy with @placement("consistent-hash")')
    return strategies.make_strategy("consistent-hash")


def agents(*ids: str) -> list[strategies.Candidate]:
    return [
        strategies.Candidate(AgentInfo(agent_id=a, capacity=2, task_types=["SHELL"])) for a in ids
    ]


def placement(strategy, candidates) -> dict[str, str]:
    return {t.task_id: strategy.choose(t, candidates).agent_id for t in TASKS}


def test_the_same_task_goes_to_the_same_agent_whatever_the_order_or_the_instance():
    candidates = agents("agent-1", "agent-2", "agent-3")
    first = placement(consistent_hash(), candidates)
    again = placement(consistent_hash(), list(reversed(candidates)))
    assert first == again, "the choice must depend on the task and the agents, nothing else"


def test_tasks_spread_over_every_agent():
    counts = Counter(placement(consistent_hash(), agents("agent-1", "agent-2", "agent-3")).values())
    assert set(counts) == {"agent-1", "agent-2", "agent-3"}
    # Many points per agent (virtual nodes) keep the shares near a third each.
    assert all(n > 0.2 * len(TASKS) for n in counts.values()), counts


def test_an_agent_leaving_moves_only_its_own_tasks():
    strategy = consistent_hash()
    before = placement(strategy, agents("agent-1", "agent-2", "agent-3"))
    after = placement(strategy, agents("agent-1", "agent-3"))
    moved = {t for t in before if before[t] != after[t]}
    assert moved == {t for t in before if before[t] == "agent-2"}, (
        "a task whose agent is still there must stay where it was"
    )


def test_an_agent_joining_takes_tasks_only_for_itself():
    strategy = consistent_hash()
    before = placement(strategy, agents("agent-1", "agent-2"))
    after = placement(strategy, agents("agent-1", "agent-2", "agent-3"))
    moved = {t: after[t] for t in before if before[t] != after[t]}
    assert moved, "the new agent must get some tasks"
    assert set(moved.values()) == {"agent-3"}, "a task may only move to the agent that joined"
