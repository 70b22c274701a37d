"""In-memory adapters of the agent's and the scheduler's ports, for unit tests
(tests/unit/test_agent.py, tests/unit/test_scheduler.py).

Real implementations of the ports, not mocks: each keeps its state in memory and behaves as
the contract says, and each can be told to fail the way a backing service fails (a
`TransientError` for the next N calls), so the agent's behaviour under faults is tested
without Redis, ZooKeeper or Kafka.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from common.adapters.memory_store import InMemoryTaskStore
from common.coordination.agent_info import AgentInfo
from common.domain.dispatch import DispatchEntry
from common.domain.outcome import AttemptReport
from common.domain.task import RUNNABLE_TYPES, Task, TaskValidationError, parse_task_message
from common.domain.transitions import TaskStatus
from common.executors.base import ExecutionResult, ExecutorLimits, TaskExecutor
from common.executors.factory import ExecutorFactory
from common.ports.agent import Assignment, AttemptControl, EventSink, TransientError, WorkIntake
from common.ports.dispatcher import Dispatcher, NotScheduled, Scheduled
from common.ports.task_store import TransitionResult


class Outage:
    """Fail the next `n` calls with TransientError (a backing service away for a while)."""

    def __init__(self) -> None:
        self.remaining = 0
        self.failed = 0

    def __call__(self, what: str) -> None:
        if self.remaining > 0:
            self.remaining -= 1
            self.failed += 1
            raise TransientError(f"{what}: service unavailable (injected)")


class InMemoryIntake(WorkIntake):
    def __init__(self) -> None:
        self.ready: deque[Assignment] = deque()
        self.leftovers = 0  # what a previous incarnation left, given back by recover()
        self.recovered = 0
        self.recover_calls = 0
        self.outage = Outage()
        self.lost_answers = 0  # takes to carry out and then fail, as if the answer was lost
        self.stranded: list[Assignment] = []  # what those took
        self.reconciled_with: list[Counter[str]] = []  # the `held` of each reconcile
        self.reconcile_outage = Outage()
        self._cond = threading.Condition()

    def put(self, assignment: Assignment) -> None:
        with self._cond:
            self.ready.append(assignment)
            self._cond.notify()

    def recover(self) -> int:
        self.outage("recover")
        self.recover_calls += 1
        n, self.leftovers = self.leftovers, 0
        self.recovered += n
        return n

    def take(self, timeout: float) -> Assignment | None:
        self.outage("take")
        with self._cond:
            if not self.ready:
                self._cond.wait(timeout)
            taken = self.ready.popleft() if self.ready else None
            if taken is not None and self.lost_answers > 0:
                # Carried out, but its answer never reached the agent (Redis past the socket
                # timeout): the attempt sits on this agent's list with no worker to run it.
                self.lost_answers -= 1
                self.stranded.append(taken)
                raise TransientError("take: no answer within the socket timeout (injected)")
            return taken

    def reconcile(self, held: Counter[str]) -> int:
        self.reconcile_outage("reconcile")
        with self._cond:
            self.reconciled_with.append(Counter(held))
            back = [a for a in self.stranded if held[a.entry] == 0]
            self.stranded = [a for a in self.stranded if held[a.entry] > 0]
        for a in back:  # given back as a failover would: a new attempt
            self.put(replace(a, attempt=a.attempt + 1))
        return len(back)


# --8<-- [start:sink]
@dataclass
class InMemorySink(EventSink):
    streams_lines: bool = False
    started_ids: list[tuple[str, int]] = field(default_factory=list)
    reports: list[tuple[Assignment, AttemptReport]] = field(default_factory=list)
    lines: list[tuple[str, int, str]] = field(default_factory=list)
    beats: list[tuple[int, int, bool]] = field(default_factory=list)
    outage: Outage = field(default_factory=Outage)
    closed: bool = False

    def started(self, assignment: Assignment) -> None:
        self.started_ids.append((assignment.task_id, assignment.attempt))

    def line(self, assignment: Assignment, seq: int, stream: str, text: str) -> None:
        self.lines.append((assignment.task_id, seq, text))

    def finished(self, assignment: Assignment, report: AttemptReport, lines: list[str]) -> None:
        self.outage("report")
        self.reports.append((assignment, report))

    def heartbeat(self, load: int, capacity: int, stopping: bool = False) -> None:
        self.beats.append((load, capacity, stopping))

    def close(self) -> None:
        self.closed = True


# --8<-- [end:sink]


class InMemoryControl(AttemptControl):
    def __init__(self) -> None:
        self.stop_reasons: dict[str, str] = {}
        # Task ids whose final report is "still on the bus": not applied yet.
        self.unsettled: set[str] = set()

    def why_stop(self, assignment: Assignment) -> str:
        return self.stop_reasons.get(assignment.task_id, "")

    def settled(self, assignment: Assignment) -> bool:
        return assignment.task_id not in self.unsettled


# What a fake executor does with a task: given the task, its line listener and its
# should-cancel probe, return the result (or raise, as a broken executor would).
Behaviour = Callable[[Task, Callable[[str, str], None] | None, Callable[[], bool]], ExecutionResult]


def succeed(output: str = "ok") -> Behaviour:
    def run(task, on_line, should_cancel) -> ExecutionResult:
        if on_line is not None:
            on_line("stdout", output)
        return ExecutionResult(True, 0, output, None, [output])

    return run


def run_until_cancelled(limit: float = 10.0) -> Behaviour:
    """A task that runs until its probe says stop (polled as the real executors do)."""

    def run(task, on_line, should_cancel) -> ExecutionResult:
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if should_cancel():
                return ExecutionResult(
                    False, -9, "", "cancelled; process group killed", [], cancelled=True
                )
            time.sleep(0.01)
        return ExecutionResult(True, 0, "finished", None, [])

    return run


class FakeExecutors(ExecutorFactory):
    """An executor factory whose executors run `behaviour` instead of a process."""

    def __init__(self, behaviour: Behaviour, limits: ExecutorLimits | None = None) -> None:
        super().__init__(limits or ExecutorLimits(kill_grace_seconds=0.1), warm_fork=False)
        self.behaviour = behaviour
        self.warmed = 0
        self.closed = False
        # What an agent can run: a COMPOSITE parent runs on none (its coordinator drives it).
        for task_type in RUNNABLE_TYPES:
            self.register(task_type, self._make)

    def _make(self, limits: ExecutorLimits, **_: object) -> TaskExecutor:
        factory = self

        class _Fake(TaskExecutor):
            def prepare(self, task: Task) -> list[str]:
                return []

            def run(self, task, on_line=None, should_cancel=None) -> ExecutionResult:
                return factory.behaviour(task, on_line, should_cancel or (lambda: False))

        fake = _Fake(limits, warm_fork=False)
        return fake

    def warm(self, parallel: int = 1) -> None:
        self.warmed = parallel

    def close(self) -> None:
        self.closed = True


# -- the scheduler's ports ---------------------------------------------------------------------
class InMemoryDispatcher(Dispatcher):
    """The dispatcher port over an InMemoryTaskStore: the same placement path and the same
    fencing rule (every write refused below the fence) as RedisDispatcher, in memory."""

    def __init__(self, store: InMemoryTaskStore | None = None) -> None:
        self.store = store or InMemoryTaskStore()
        self.scheduling: list[str] = []
        self.inboxes: dict[str, list[str]] = {}
        self.incarnations: dict[str, int] = {}
        self.seen: set[str] = set()

    @property
    def pending(self) -> list[str]:
        return self.store.queue  # submit() pushes at the front, take() reads the back

    def raise_fence(self, epoch: int) -> tuple[bool, int]:
        if epoch >= self.store.fence:
            self.store.fence = epoch
            return True, epoch
        return False, self.store.fence

    def take(self, timeout: float) -> str | None:
        if not self.pending:
            return None
        raw = self.pending.pop()
        self.scheduling.insert(0, raw)
        return raw

    def take_batch(self, timeout: float, limit: int) -> list[str]:
        taken = []
        while len(taken) < limit and (raw := self.take(timeout)) is not None:
            taken.append(raw)
        return taken

    def schedule(self, raw: str, epoch: int, actor: str) -> Scheduled | NotScheduled:
        if epoch < self.store.fence:
            return NotScheduled("stale_epoch")
        try:
            task_id, spec = parse_task_message(raw)
        except TaskValidationError as exc:
            self.scheduling.remove(raw)
            return NotScheduled(f"dead-lettered: {exc}")
        if task_id is None or self.store.get(task_id) is None:
            task = self.store.create(Task.new(spec, task_id=task_id), actor)
        else:
            task = self.store.get(task_id)
        message = task.to_message()
        self.scheduling[self.scheduling.index(raw)] = message
        r = self.store.transition(
            task.task_id, TaskStatus.SCHEDULED, attempt=task.attempt, epoch=epoch, actor=actor,
            fenced=True,
        )  # fmt: skip
        if not r.accepted:
            self.scheduling.remove(message)
            return NotScheduled(r.reason, r.status, task.task_id)
        return Scheduled(self.store.get(task.task_id), message, r.attempt)

    def dispatch(
        self, scheduled: Scheduled, agent_id: str, epoch: int, actor: str
    ) -> TransitionResult:
        self.seen.add(agent_id)
        r = self.store.transition(
            scheduled.task.task_id, TaskStatus.DISPATCHED, attempt=scheduled.attempt,
            epoch=epoch, actor=actor, fields={"agentId": agent_id, **scheduled.trace},
            fenced=True,
        )  # fmt: skip
        if r.accepted:
            self.scheduling.remove(scheduled.message)
            entry = DispatchEntry(scheduled.task, scheduled.attempt, epoch).to_json()
            self.inboxes.setdefault(agent_id, []).insert(0, entry)
        return r

    def unschedule(
        self, scheduled: Scheduled, epoch: int, actor: str, reason: str
    ) -> TransitionResult:
        r = self.store.transition(
            scheduled.task.task_id, TaskStatus.PENDING, attempt=scheduled.attempt, epoch=epoch,
            actor=actor, reason=reason, fenced=True,
        )  # fmt: skip
        if r.accepted:
            self.scheduling.remove(scheduled.message)
            self.pending.insert(0, scheduled.message)
        return r

    def fail(self, scheduled: Scheduled, epoch: int, actor: str, error: str) -> TransitionResult:
        r = self.store.transition(
            scheduled.task.task_id, TaskStatus.FAILED, attempt=scheduled.attempt, epoch=epoch,
            actor=actor, fields={"error": error}, reason=error, fenced=True,
        )  # fmt: skip
        if r.accepted:
            self.scheduling.remove(scheduled.message)
        return r

    def recover_scheduling(self, epoch: int, actor: str) -> tuple[int, int]:
        if epoch < self.store.fence:
            return -1, 0
        requeued = 0
        while self.scheduling:
            raw = self.scheduling.pop()
            self.pending.append(raw)
            requeued += 1
        return requeued, 0

    def incarnation(self, agent_id: str) -> int:
        return self.incarnations.get(agent_id, 0)

    def reap_agent(
        self,
        agent_id: str,
        actor: str,
        *,
        epoch: int | None = None,
        incarnation: int | None = None,
    ) -> tuple[int, int]:
        if epoch is not None and epoch < self.store.fence:
            return -1, 0
        if incarnation is not None and incarnation != self.incarnation(agent_id):
            return 0, 0  # the agent started again since the leader looked: its work is live
        requeued = dropped = 0
        inbox = self.inboxes.get(agent_id, [])
        while inbox:
            entry = DispatchEntry.parse(inbox.pop())
            task = self.store.get(entry.task_id)
            r = self.store.transition(
                entry.task_id, TaskStatus.PENDING, attempt=entry.attempt,
                epoch=task.epoch if task else 0, actor=actor, clear=("agentId",),
                reason=f"agent {agent_id} lost",
            )  # fmt: skip
            if r.accepted:
                self.pending.append(entry.task.to_message())
                requeued += 1
            else:
                dropped += 1
        return requeued, dropped

    def agents_with_work(self) -> set[str]:
        return set(self.seen)

    def forget_agent_if_idle(self, agent_id: str) -> None:
        if not self.inboxes.get(agent_id):
            self.seen.discard(agent_id)

    def backlog(self, agent_ids: list[str]) -> dict[str, int]:
        return {a: len(self.inboxes.get(a, [])) for a in agent_ids}

    def promote_due(self, epoch: int, limit: int = 500) -> int:
        return -1 if epoch < self.store.fence else 0


class InMemoryLiveAgents:
    """The scheduler's view of live agents (LiveAgentsView's interface), set by the test."""

    def __init__(self, *agents: AgentInfo) -> None:
        self.live: dict[str, AgentInfo] = {a.agent_id: a for a in agents}
        self.changed = threading.Event()
        self._listeners: list[Callable[[set[str]], None]] = []
        self.following = False

    def start(self) -> None:
        self.following = True

    def stop(self) -> None:
        self.following = False

    def on_departure(self, listener: Callable[[set[str]], None]) -> None:
        self._listeners.append(listener)

    def agents(self) -> list[AgentInfo]:
        return sorted(self.live.values(), key=lambda a: a.agent_id)

    def ids(self) -> set[str]:
        return set(self.live)

    def is_registered(self, agent_id: str) -> bool:
        return agent_id in self.live

    def depart(self, agent_id: str) -> None:
        self.live.pop(agent_id, None)
        for listener in self._listeners:
            listener({agent_id})
        self.changed.set()
