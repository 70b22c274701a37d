"""In-memory adapters of the agent's ports, for unit tests (tests/unit/test_agent.py).

Real implementations of the ports, not mocks: each keeps its state in memory and behaves as
the contract says, and each can be told to fail the way a backing service fails (a
`TransientError` for the next N calls), so the agent's behaviour under faults is tested
without Redis, ZooKeeper or Kafka.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from common.domain.outcome import AttemptReport
from common.domain.task import Task, TaskType
from common.executors.base import ExecutionResult, ExecutorLimits, TaskExecutor
from common.executors.factory import ExecutorFactory
from common.ports.agent import Assignment, AttemptControl, EventSink, TransientError, WorkIntake


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
            return self.ready.popleft() if self.ready else None


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

    def why_stop(self, assignment: Assignment) -> str:
        return self.stop_reasons.get(assignment.task_id, "")


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
        for task_type in TaskType:
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
