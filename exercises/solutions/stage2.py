"""Stage 2: consistent-hash (2.1) and least-recently-used (2.2) placement."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import threading
from collections.abc import Sequence

from common.domain.task import Task
from common.scheduling.strategies import Candidate, PlacementStrategy, placement


def _point(text: str) -> int:
    # A stable hash (Python's hash() of a str changes from process to process).
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class ConsistentHashStrategy(PlacementStrategy):
    """Each agent owns `points` places on a ring; a task goes to the first one after its own."""

    points = 100

    def __init__(self) -> None:
        self._rings: dict[tuple[str, ...], list[tuple[int, str]]] = {}

    def _ring(self, agent_ids: tuple[str, ...]) -> list[tuple[int, str]]:
        # Rebuilt only when the set of candidates changes, not for every task.
        if agent_ids not in self._rings:
            self._rings = {
                agent_ids: sorted(
                    (_point(f"{a}#{n}"), a) for a in agent_ids for n in range(self.points)
                )
            }
        return self._rings[agent_ids]

    def choose(self, task: Task, candidates: Sequence[Candidate]) -> Candidate:
        ring = self._ring(tuple(sorted(c.agent_id for c in candidates)))
        at = bisect.bisect(ring, (_point(task.task_id), ""))
        owner = ring[at % len(ring)][1]
        return next(c for c in candidates if c.agent_id == owner)


class LeastRecentlyUsedStrategy(PlacementStrategy):
    """The candidate given a task longest ago; never given one = first, lowest id first."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        self._clock = itertools.count(1)
        self._lock = threading.Lock()

    def choose(self, task: Task, candidates: Sequence[Candidate]) -> Candidate:
        with self._lock:
            chosen = min(candidates, key=lambda c: (self._used.get(c.agent_id, 0), c.agent_id))
            self._used[chosen.agent_id] = next(self._clock)
        return chosen


def install() -> None:
    placement("consistent-hash")(ConsistentHashStrategy)
    placement("least-recently-used")(LeastRecentlyUsedStrategy)
