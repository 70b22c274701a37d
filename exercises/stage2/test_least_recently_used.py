"""Exercise 2.2, a least-recently-used placement strategy.

Add a `PlacementStrategy` registered as `@placement("least-recently-used")` in
common/scheduling/strategies.py: it gives each task to the candidate that was given a task
longest ago; a candidate never given one goes first (lowest id first, so a test can predict
it). One class, no services (`make exercise-stage2`).
"""

from __future__ import annotations

from common.coordination.agent_info import AgentInfo
from common.domain.task import Task, TaskSpec
from common.scheduling import strategies
from exercises.support import not_done

TASK = Task.new(TaskSpec(task_type="SHELL", payload="true"))


def least_recently_used():
    if "least-recently-used" not in strategies.STRATEGIES:
        not_done("2.2", 'register a strategy with @placement("least-recently-used")')
    return strategies.make_strategy("least-recently-used")


def agents(*ids: str) -> list[strategies.Candidate]:
    return [
        strategies.Candidate(AgentInfo(agent_id=a, capacity=2, task_types=["SHELL"])) for a in ids
    ]


def test_agents_never_used_go_first_in_id_order_then_the_one_used_longest_ago():
    strategy = least_recently_used()
    candidates = agents("agent-3", "agent-1", "agent-2")
    chosen = [strategy.choose(TASK, candidates).agent_id for _ in range(5)]
    assert chosen == ["agent-1", "agent-2", "agent-3", "agent-1", "agent-2"]


def test_a_joining_agent_is_chosen_next_and_a_missing_one_is_passed_over():
    strategy = least_recently_used()
    everyone = agents("agent-1", "agent-2", "agent-3")
    for _ in range(3):
        strategy.choose(TASK, everyone)  # each used once, agent-1 longest ago
    assert strategy.choose(TASK, everyone + agents("agent-4")).agent_id == "agent-4"
    without_1 = agents("agent-2", "agent-3")
    assert strategy.choose(TASK, without_1).agent_id == "agent-2"
    assert strategy.choose(TASK, everyone).agent_id == "agent-1"
