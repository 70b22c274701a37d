"""The ports of the one agent: where its work comes from, where its reports go, and how it
learns that a running attempt must stop.

Pattern: Ports and Adapters (introduced in stage 1, made explicit here). Every stage runs the
same `Agent` (common/agent/agent.py); a stage's bootstrap chooses the adapters:

| stage | WorkIntake                         | EventSink                  | AttemptControl    |
|-------|------------------------------------|----------------------------|-------------------|
| 1     | `RedisListIntake(queue:pending)`   | `RedisEventSink`           | `RedisControl`    |
| 2     | `RedisListIntake(agent:{id}:tasks)`| `RedisEventSink`           | `RedisControl`    |
| 3     | `KafkaDispatchIntake`              | `KafkaEventSink`           | `RedisControl`    |

So the behaviour under faults (a Redis blip, a superseded attempt, a stop with work running)
is written once, in the agent, and every stage gets it. The in-memory adapters in
common/testing/fakes.py subclass these ports for the agent's unit tests.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass

from common.domain.outcome import AttemptReport
from common.domain.task import Task


@dataclass(frozen=True)
class Assignment:
    """An attempt this agent now owns: the task is RUNNING (or DISPATCHED to it, in stage 3,
    until the manager applies RUNNING) and `entry` sits on its `processing:{agentId}` list."""

    task: Task
    attempt: int
    epoch: int = 0
    entry: str = ""  # the ledger entry, as it sits on the processing list ("" if untracked)
    retries_used: int | None = None  # read with the claim; None = the writer reads it
    # The span this attempt's "run" hangs under: the dispatch message's `traceparent` header
    # (stage 3 on); "" = the task's stored traceparent (common/observability/tracing.py).
    traceparent: str = ""

    @property
    def task_id(self) -> str:
        return self.task.task_id


class TransientError(Exception):
    """A backing service did not answer; the same call may succeed later (the agent retries)."""


class WorkIntake(ABC):
    """Where attempts come from. `take` returns only attempts this agent may start now."""

    def open(self, stopping: threading.Event, paused: threading.Event) -> None:
        """Called once at start, before `recover`: the agent's stop and pause signals (an
        intake that reads ahead must not accept work while paused), and any set-up that
        must happen before the agent registers (stage 3 fixes its read positions here)."""
        return None

    @abstractmethod
    def recover(self) -> int:
        """Give back what a previous incarnation of this agent id left (attempt + 1);
        returns how many tasks went back. Also used to hand work back at a forced stop."""

    @abstractmethod
    def take(self, timeout: float) -> Assignment | None:
        """The next attempt to run, or None if none came within `timeout` seconds.
        Bad messages are dead-lettered inside, never returned and never raised."""

    def reconcile(self, held: Counter[str]) -> int:
        """Give back what this agent's own lists hold beyond `held` (the entries of the
        attempts its workers run now, counted); returns how many tasks went back.

        Called by the agent after a take or a chained report raised TransientError, with no
        other take or report of its own in flight: a call that gave up waiting may still have
        been carried out (Redis frozen past the client's socket timeout carries out, when it
        wakes, what was sent before), leaving an entry no worker runs. An intake whose work
        sits on no list of its own has nothing to reconcile."""
        return 0

    def close(self) -> None:
        """Release connections (called once, after the last `take`)."""
        return None


class EventSink(ABC):
    """Where an agent says what happened. Reports are idempotent by (taskId, attempt): the
    agent retries one that raised TransientError until it goes through or the agent stops."""

    def started(self, assignment: Assignment) -> None:
        """The attempt's process is about to start (stage 3 publishes RUNNING)."""
        return None

    def line(self, assignment: Assignment, seq: int, stream: str, text: str) -> None:
        """One output line, while the task runs (only if `streams_lines`)."""
        return None

    streams_lines = False

    @abstractmethod
    def finished(self, assignment: Assignment, report: AttemptReport, lines: list[str]) -> None:
        """The attempt ended. `lines` are its captured output lines (already capped), for a
        sink that does not stream them."""

    def heartbeat(self, load: int, capacity: int, stopping: bool = False) -> None:
        """Alive, with this load. Called every heartbeat interval."""
        return None

    def close(self) -> None:
        """Flush and release (called once, after the last report)."""
        return None


class AttemptControl(ABC):
    """How a running attempt learns it must stop: asked every ~250 ms while it runs."""

    @abstractmethod
    def why_stop(self, assignment: Assignment) -> str:
        """ "" to keep running; else why it must be killed now ("cancelled", "superseded by
        attempt 3"). Must not raise: when the store cannot be asked, keep running (the
        report is fenced by attempt anyway, and the timeout is enforced locally)."""

    def settled(self, assignment: Assignment) -> bool:
        """Whether the attempt's final report has been applied to the record (the task is
        final, or has moved past this attempt). A stopping agent waits for it before it
        leaves: where reports travel a bus (stage 3), an agent that left while its report was
        still on the way would have its finished task failed over and run again. Must not
        raise; True when it cannot tell, or where reports are written synchronously."""
        return True


class ChainedReport(ABC):
    """An optimisation a bootstrap may opt into: report an attempt and take the next one in
    one round trip (stage 1's finish_take.lua). Returns the next attempt, or None."""

    @abstractmethod
    def finish_and_take(
        self, assignment: Assignment, report: AttemptReport, lines: list[str]
    ) -> Assignment | None: ...
