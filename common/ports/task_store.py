"""The task store port: where tasks, their state and their history live.

`RedisTaskStore` is the real adapter; `InMemoryTaskStore` implements the same contract for unit
tests (a real implementation, not a mock: it enforces the same transition table).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from common.domain.task import Task, TaskSpec
from common.domain.transitions import TaskStatus


class TransitionResult(NamedTuple):
    accepted: bool
    reason: str  # "ok", "missing", "illegal", "stale_attempt", "stale_epoch"
    status: str  # the status after the call (new if accepted, current if rejected)
    attempt: int


class TaskStore(ABC):
    @abstractmethod
    def submit(self, spec: TaskSpec, actor: str = "client") -> tuple[Task, bool]:
        """Store and enqueue a new task; return (task, created). Same requestId = same task."""

    @abstractmethod
    def get(self, task_id: str) -> Task | None: ...

    @abstractmethod
    def history(self, task_id: str) -> list[dict]: ...

    @abstractmethod
    def logs(self, task_id: str, start: int = 0) -> list[str]: ...

    @abstractmethod
    def list_tasks(
        self, status: TaskStatus | None = None, offset: int = 0, limit: int = 50
    ) -> list[Task]: ...

    @abstractmethod
    def transition(
        self,
        task_id: str,
        to: TaskStatus,
        *,
        attempt: int,
        epoch: int = 0,
        actor: str,
        fields: Mapping[str, object] | None = None,
        clear: Iterable[str] = (),
        reason: str = "",
        fenced: bool = False,
    ) -> TransitionResult:
        """Apply one transition if legal and not stale; never silently."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters of accepted and rejected transitions."""

    def cancel(self, task_id: str, actor: str = "client") -> TransitionResult:
        task = self.get(task_id)
        if task is None:
            return TransitionResult(False, "missing", "", 0)
        return self.transition(
            task_id,
            TaskStatus.CANCELLED,
            attempt=task.attempt,
            epoch=task.epoch,
            actor=actor,
            reason="cancel requested",
        )
