"""The dispatcher port: the leader-elected scheduler's writes (stage 2 on).

`RedisDispatcher` (stage 2) and `KafkaDispatcher` (stage 3, the same writes plus a message on
the bus) are the real adapters; `InMemoryDispatcher` (common/testing/fakes.py) keeps the same
rules in memory for the scheduler's unit tests. Every write takes the leader's epoch and is
refused when a newer leader raised the fence: that is the contract a fake must keep too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
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


@dataclass(frozen=True)
class Placed:
    """What became of one message of a batch (`Dispatcher.place_batch`).

    `outcome` is the dispatch's TransitionResult when an agent was chosen for the task (accepted:
    it is DISPATCHED to `agent_id`); a `Scheduled` when none was (the caller places it itself:
    a pinned task, or one no candidate runs); a `NotScheduled` when the message was not
    schedulable (dead-lettered, a duplicate, cancelled, or "stale_epoch": the batch was refused
    whole)."""

    outcome: Scheduled | NotScheduled | TransitionResult
    agent_id: str | None = None
    task_id: str | None = None


# Given a task about to be scheduled, the agent to dispatch it to, or None to leave it SCHEDULED
# for the caller. Called once per task, in the batch's order, so it can count what it placed.
Chooser = Callable[[Task], str | None]


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

    def take_batch(self, timeout: float, limit: int) -> list[str]:
        """Move up to `limit` pending messages to the scheduling list, oldest first; waits up to
        `timeout` for the first only. This default takes one."""
        raw = self.take(timeout)
        return [] if raw is None else [raw]

    def place_batch(
        self, raws: Sequence[str], epoch: int, actor: str, choose: Chooser
    ) -> list[Placed]:
        """Schedule each message just taken and dispatch it where `choose` says, one `Placed`
        per message in order. Fenced as every write: below the fence, every message of the
        batch is refused ("stale_epoch") and stays on the scheduling list.

        This default is the one-task path, message by message (`schedule`, then `dispatch`);
        an adapter that can do a batch in one round trip overrides it, keeping these rules.
        """
        placed: list[Placed] = []
        for raw in raws:
            scheduled = self.schedule(raw, epoch, actor)
            if isinstance(scheduled, NotScheduled):
                placed.append(Placed(scheduled, task_id=scheduled.task_id))
                if scheduled.reason == "stale_epoch":
                    break  # deposed: the rest stay on the scheduling list too
                continue
            agent_id = choose(scheduled.task)
            if agent_id is None:
                placed.append(Placed(scheduled, task_id=scheduled.task.task_id))
                continue
            result = self.dispatch(scheduled, agent_id, epoch, actor)
            placed.append(Placed(result, agent_id, scheduled.task.task_id))
            if result.reason == "stale_epoch":
                break
        return placed

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

    def await_room(self, timeout: float) -> bool:
        """Wait at most `timeout` s for a sign that an agent took an entry off its inbox.
        A hint: it may return with no room, and room may come with no sign. False: this
        dispatcher gives no such sign, and the caller waits its own way."""
        return False

    @abstractmethod
    def promote_due(self, epoch: int, limit: int = 500) -> int:
        """Release retries whose backoff elapsed; -1 if `epoch` is stale."""
