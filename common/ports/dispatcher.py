"""The dispatcher port: the leader-elected scheduler's writes (stage 2 on).

`RedisDispatcher` (stage 2) and `KafkaDispatcher` (stage 3, the same writes plus a message on
the bus) are the real adapters; `InMemoryDispatcher` (common/testing/fakes.py) keeps the same
rules in memory for the scheduler's unit tests. Every write takes the leader's epoch and is
refused when a newer leader raised the fence: that is the contract a fake must keep too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.domain.task import Task
from common.ports.task_store import TransitionResult


@dataclass(frozen=True)
class Scheduled:
    """A task the leader moved to SCHEDULED; `message` is its copy on queue:scheduling."""

    task: Task
    message: str
    attempt: int
    # Task fields the dispatch writes with DISPATCHED: the trace a new attempt started
    # (traceId, traceparent, traceAttempt; common/observability/tracing.py). Empty: none.
    trace: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NotScheduled:
    reason: str  # "dead-lettered", "stale_epoch", "illegal", "duplicate_request", ...
    status: str = ""
    task_id: str | None = None


class Dispatcher(ABC):
    @abstractmethod
    def raise_fence(self, epoch: int) -> tuple[bool, int]:
        """Raise the fence to `epoch` (never down); (raised, fence now)."""

    @abstractmethod
    def take(self, timeout: float) -> str | None:
        """Move the next pending message to the scheduling list; None if none came."""

    @abstractmethod
    def schedule(self, raw: str, epoch: int, actor: str) -> Scheduled | NotScheduled:
        """PENDING -> SCHEDULED for the message just taken (creating a hand-pushed task)."""

    @abstractmethod
    def dispatch(
        self, scheduled: Scheduled, agent_id: str, epoch: int, actor: str
    ) -> TransitionResult:
        """SCHEDULED -> DISPATCHED and onto the agent's inbox, in one fenced step."""

    @abstractmethod
    def unschedule(
        self, scheduled: Scheduled, epoch: int, actor: str, reason: str
    ) -> TransitionResult:
        """SCHEDULED -> PENDING, back to the queue."""

    @abstractmethod
    def fail(self, scheduled: Scheduled, epoch: int, actor: str, error: str) -> TransitionResult:
        """SCHEDULED -> FAILED and off queue:scheduling, fenced: a pinned task (a broadcast's
        child) whose one agent is gone. Final: no retry, as no other agent may run it."""

    @abstractmethod
    def recover_scheduling(self, epoch: int, actor: str) -> tuple[int, int]:
        """Re-queue what a previous leader left in flight; (-1, 0) if `epoch` is stale."""

    @abstractmethod
    def incarnation(self, agent_id: str) -> int:
        """How many times the agent has started (read before asking ZooKeeper about it)."""

    @abstractmethod
    def reap_agent(
        self,
        agent_id: str,
        actor: str,
        *,
        epoch: int | None = None,
        incarnation: int | None = None,
    ) -> tuple[int, int]:
        """Give a departed agent's work back with attempt + 1; (requeued, dropped), or
        (-1, 0) if `epoch` is stale."""

    @abstractmethod
    def agents_with_work(self) -> set[str]: ...

    @abstractmethod
    def forget_agent_if_idle(self, agent_id: str) -> None: ...

    @abstractmethod
    def backlog(self, agent_ids: list[str]) -> dict[str, int]:
        """How many dispatched entries wait in each agent's inbox."""

    @abstractmethod
    def promote_due(self, epoch: int, limit: int = 500) -> int:
        """Release retries whose backoff elapsed; -1 if `epoch` is stale."""
