"""Placement strategies: which live agent gets the next task.

Pattern: Strategy (introduced in stage 1 for claiming, used here in stage 2 for placement). The
scheduler asks one question, `choose(task, candidates)`, and never knows which policy answers
it. The policy is picked by configuration (`TASKLAB_SCHEDULER_STRATEGY`), and adding one is one
class with a `@placement("name")` line above it: the registry below is the only list.

Every strategy sees the same candidates: live, not draining, able to run the task's type, and
with room in their inbox. What differs is only the choice among them.
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.coordination.agent_info import AgentInfo
from common.domain.task import Task

STRATEGIES: dict[str, type[PlacementStrategy]] = {}


def placement(name: str) -> Callable[[type[PlacementStrategy]], type[PlacementStrategy]]:
    """Register a strategy under the name configuration uses for it."""

    def register(cls: type[PlacementStrategy]) -> type[PlacementStrategy]:
        STRATEGIES[name] = cls
        cls.name = name
        return cls

    return register


def make_strategy(name: str) -> PlacementStrategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(
            f"unknown placement strategy {name!r} (choose one of {', '.join(sorted(STRATEGIES))})"
        ) from None


@dataclass(frozen=True)
class Candidate:
    """A live agent as the scheduler sees it when placing one task."""

    agent: AgentInfo
    queued: int = 0  # dispatched to it, waiting in its inbox (the leader knows this exactly)

    @property
    def agent_id(self) -> str:
        return self.agent.agent_id

    @property
    def busy(self) -> int:
        # Reported load lags by one ZooKeeper write; the inbox length covers what the leader
        # dispatched since, so a burst does not all land on the agent that looked idle first.
        return self.agent.load + self.queued

    @property
    def utilisation(self) -> float:
        return self.busy / max(1, self.agent.capacity)


class PlacementStrategy(ABC):
    name: str = ""

    @abstractmethod
    def choose(self, task: Task, candidates: Sequence[Candidate]) -> Candidate:
        """Pick one of `candidates` (never empty) for `task`."""


@placement("random")
class RandomStrategy(PlacementStrategy):
    """Uniform choice: no state, no coordination, and fair on average over many tasks."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def choose(self, task: Task, candidates: Sequence[Candidate]) -> Candidate:
        return self.rng.choice(list(candidates))


@placement("round-robin")
class RoundRobinStrategy(PlacementStrategy):
    """Each agent in turn, by id. Remembers the last id, not an index, so agents joining or
    leaving do not make it skip or repeat anyone."""

    def __init__(self) -> None:
        self._last: str | None = None
        self._lock = threading.Lock()

    def choose(self, task: Task, candidates: Sequence[Candidate]) -> Candidate:
        ring = sorted(candidates, key=lambda c: c.agent_id)
        with self._lock:
            chosen = next((c for c in ring if self._last is None or c.agent_id > self._last), None)
            chosen = chosen or ring[0]
            self._last = chosen.agent_id
        return chosen


@placement("least-load")
class LeastLoadStrategy(PlacementStrategy):
    """The agent with the smallest share of its capacity in use; ties go to the fewer busy
    slots, then to the next id after the one chosen last, in turn (deterministic, so a test
    can predict the choice).

    Why the turn: on a mostly idle cluster nearly every decision is a tie (many agents at 0),
    and breaking ties by the lowest id put a stream of short tasks on the same few agents
    while the rest stood idle (bench.scaling with 50 agents: 0-3 tasks on some, 235 on one;
    docs/scaling.md). Taking turns among the tied spreads them as round-robin does, and still
    prefers the least loaded agent whenever loads differ."""

    def __init__(self) -> None:
        self._last: str | None = None
        self._lock = threading.Lock()

    def choose(self, task: Task, candidates: Sequence[Candidate]) -> Candidate:
        best = min((c.utilisation, c.busy) for c in candidates)
        tied = sorted(
            (c for c in candidates if (c.utilisation, c.busy) == best), key=lambda c: c.agent_id
        )
        with self._lock:
            last = self._last
            chosen = next((c for c in tied if last is None or c.agent_id > last), tied[0])
            self._last = chosen.agent_id
        return chosen
