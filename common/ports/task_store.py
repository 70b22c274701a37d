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


class CancelResult(NamedTuple):
    """What a cancel did. `accepted`: the task is CANCELLED now (by this call or an earlier
    one); else `reason` says why not ("already_final", "missing") and `status` is the truth."""

    accepted: bool
    reason: str  # "ok", "already_cancelled", "already_final", "missing"
    status: str  # the status after the call
    attempt: int
    cancelled_from: str = ""  # the state the task was cancelled from ("" if it was not)


class TaskStore(ABC):
    @abstractmethod
    def submit(
        self,
        spec: TaskSpec,
        actor: str = "client",
        retry_of: str | None = None,
        traceparent: str | None = None,
    ) -> tuple[Task, bool]:
        """Store and enqueue a new task; return (task, created). Same requestId = same task.

        `retry_of`: the id of the finished task this one retries, kept on the new task.
        `traceparent`: the span that submitted it, stored with its trace id (tracing.py)."""

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

    @abstractmethod
    def cancel(self, task_id: str, actor: str = "client") -> CancelResult:
        """Cancel the task from any non-terminal state at its current attempt, atomically.

        Idempotent: cancelling a CANCELLED task is accepted again ("already_cancelled"). A
        SUCCESS or FAILED task is not touched ("already_final", with its status).
        """
