"""The agent's Redis adapters (stages 1 and 2): intake from a Redis list, reports to Redis.

- `RedisListIntake`: takes messages from `queue:pending` (stage 1) or the agent's own
  `agent:{agentId}:tasks` inbox (stage 2) with a claim strategy, and claims them.
- `RedisEventSink`: writes the outcome decision (`RedisOutcomeWriter`) and the heartbeat key.
- `RedisControl`: reads whether a running attempt was cancelled or superseded (every stage).
- `RedisReaper`: stage 1's housekeeping, agents giving back the work of agents whose
  heartbeat expired, and releasing retries whose backoff elapsed.

Pattern: Strategy (introduced in stage 1) for *how* a task is claimed: `NaiveClaim` (BRPOP,
loses a task if the agent dies, kept in stage1_mvp to be broken), `ReliableClaim` (BLMOVE to a
processing list + reaper). `RedisChainedReport` is an optimisation a bootstrap opts into: a
report also moves the next message to the processing list, in the same round trip.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import Counter

from redis.exceptions import RedisError

from common import keys
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_queue import Claim, RedisWorkQueue, Rejected
from common.domain.outcome import AttemptReport
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.observability import get_logger, metrics
from common.ports.agent import (
    Assignment,
    AttemptControl,
    ChainedReport,
    EventSink,
    TransientError,
    WorkIntake,
)

log = get_logger("tasklab.agent")


# --8<-- [start:claim-strategy]
class ClaimStrategy(ABC):
    """How an agent takes its next task off a Redis list."""

    tracked: bool  # does the message stay on a processing list while the task runs?

    @abstractmethod
    def take(self, queue: RedisWorkQueue, agent_id: str, timeout: float) -> str | None: ...

    def next(self, queue: RedisWorkQueue, agent_id: str, timeout: float) -> Claim | Rejected | None:
        """Take a message and claim it; None if none came within `timeout`."""
        raw = self.take(queue, agent_id, timeout)
        return None if raw is None else queue.claim(agent_id, raw, tracked=self.tracked)


class ReliableClaim(ClaimStrategy):
    """BLMOVE to `processing:{agentId}`: the message is never only in this process's memory."""

    tracked = True

    def take(self, queue: RedisWorkQueue, agent_id: str, timeout: float) -> str | None:
        return queue.take_reliably(agent_id, timeout)


# --8<-- [end:claim-strategy]


def _assignment(claim: Claim, tracked: bool) -> Assignment:
    return Assignment(
        task=claim.task,
        attempt=claim.attempt,
        epoch=claim.epoch,
        # Untracked (the naive claim): nothing of it sits on a processing list.
        entry=claim.message if tracked else "",
        retries_used=claim.retries_used,
    )


class RedisListIntake(WorkIntake):
    def __init__(self, queue: RedisWorkQueue, agent_id: str, claim: ClaimStrategy) -> None:
        self.queue = queue
        self.agent_id = agent_id
        self.claim = claim
        # Messages a claim refused since start (dead-lettered, cancelled, stale copies).
        self.rejected = 0

    def recover(self) -> int:
        if not self.claim.tracked:
            return 0
        try:
            requeued, _ = self.queue.reap(self.agent_id, actor=self.agent_id, force=True)
        except RedisError as exc:
            raise TransientError(str(exc)) from exc
        return requeued

    def reconcile(self, held: Counter[str]) -> int:
        if not self.claim.tracked:
            return 0
        try:
            requeued, _ = self.queue.give_back_unheld(self.agent_id, held)
        except RedisError as exc:
            raise TransientError(str(exc)) from exc
        return requeued

    def take(self, timeout: float) -> Assignment | None:
        try:
            got = self.claim.next(self.queue, self.agent_id, timeout)
        except RedisError as exc:
            raise TransientError(str(exc)) from exc
        return self._accepted(got)

    def _accepted(self, got: Claim | Rejected | None) -> Assignment | None:
        if isinstance(got, Rejected):
            self.rejected += 1
            log.info("skipped a message: %s", got.reason)
            return None
        return None if got is None else _assignment(got, self.claim.tracked)


# --8<-- [start:event-sink]
class RedisEventSink(EventSink):
    """Stages 1 and 2: the agent writes its own outcome decisions to Redis, fenced."""

    def __init__(
        self,
        queue: RedisWorkQueue,
        writer: RedisOutcomeWriter,
        agent_id: str,
        heartbeat_ttl: float,
    ) -> None:
        self.queue = queue
        self.writer = writer
        self.agent_id = agent_id
        self.heartbeat_ttl = heartbeat_ttl
        self._lock = threading.Lock()
        self._last_beat = float("-inf")
        self._fresh_since = float("inf")

    def finished(self, assignment: Assignment, report: AttemptReport, lines: list[str]) -> None:
        try:
            decision = self.writer.decide(assignment.task, report, assignment.retries_used)
            result = self.writer.write(assignment, decision, self.agent_id, lines)
        except RedisError as exc:
            raise TransientError(str(exc)) from exc
        log_refused(result, assignment, decision.to)

    def heartbeat(self, load: int, capacity: int, stopping: bool = False) -> None:
        try:
            if stopping:
                # Say goodbye at once rather than let the key expire: `tasklab agents` shows
                # the truth, and the reaper need not wait a TTL for work left behind.
                self.queue.forget(self.agent_id)
                return
            self.queue.heartbeat(self.agent_id, self.heartbeat_ttl)
        except RedisError as exc:
            raise TransientError(str(exc)) from exc
        now = time.monotonic()
        with self._lock:
            if now - self._last_beat > self.heartbeat_ttl:
                # Our own key may have lapsed (Redis was away or paused, or we were): so may
                # everyone's. A fresh stretch of heartbeats starts now.
                self._fresh_since = now
            self._last_beat = now

    def fresh_for(self) -> float:
        """How long this agent's heartbeats have gone through without a gap of a TTL; 0 while
        the last one that went through is more than a TTL old (a gap is under way)."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_beat > self.heartbeat_ttl:
                return 0.0
            return max(0.0, now - self._fresh_since)


# --8<-- [end:event-sink]


def log_refused(result, assignment: Assignment, to: TaskStatus | None = None) -> None:
    if result.accepted:
        return
    if to is not None and result.status == to.value and result.attempt == assignment.attempt:
        # A report sent again after a try whose answer was lost (Redis past the socket
        # timeout): the first try went through. Nothing was refused that mattered.
        log.info("report already recorded: task is %s at attempt %s", to.value, result.attempt)
        return
    # A late report (we were presumed dead and the task was re-run, or it was cancelled):
    # the store refused it, which is the point.
    log.warning(
        "report rejected as %s: task is %s at attempt %s, we ran attempt %s",
        result.reason,
        result.status,
        result.attempt,
        assignment.attempt,
    )


# --8<-- [start:chained-report]
class RedisChainedReport(ChainedReport):
    """Report an attempt and take the next one in one round trip (finish_take.lua): the busy
    agent's steady state. The script claims the next message itself when it is one the
    previous report saw at the queue's tail (their keys are passed in); otherwise it moves the
    message and claim.lua claims it, a second round trip. An optimisation the stage 1 and 2
    bootstraps opt into."""

    def __init__(self, intake: RedisListIntake, sink: RedisEventSink) -> None:
        self.intake = intake
        self.sink = sink
        # The tail the last report saw. Shared by the worker threads, each peek used once: two
        # threads passing the same one would race for it, and one of them would miss.
        self._peeked: list[str] = []
        self._lock = threading.Lock()

    def finish_and_take(
        self, assignment: Assignment, report: AttemptReport, lines: list[str]
    ) -> Assignment | None:
        queue, writer, agent_id = self.intake.queue, self.sink.writer, self.sink.agent_id
        try:
            decision = writer.decide(assignment.task, report, assignment.retries_used)
            if not decision.writes:
                self.sink.finished(assignment, report, lines)
                return None
            all_keys, arg = writer.request(assignment, decision, agent_id, lines)
            with self._lock:
                peeked, self._peeked = self._peeked, []
            result, taken, tail = queue.finish_and_take(
                agent_id, all_keys, arg, assignment.entry, peeked
            )
            metrics.record_outcome(
                assignment.task.task_type.value, decision.verdict.value, result.accepted
            )
            with self._lock:
                self._peeked = tail
            log_refused(result, assignment, decision.to)
        except RedisError as exc:
            raise TransientError(str(exc)) from exc
        return self.intake._accepted(taken)


# --8<-- [end:chained-report]


# --8<-- [start:control]
class RedisControl(AttemptControl):
    """Reads the task in Redis: where a cancel is decided (one atomic transition) and where a
    failover's new attempt is recorded, so reading it there cannot miss or misorder either."""

    def __init__(self, client) -> None:
        self.client = client

    def why_stop(self, assignment: Assignment) -> str:
        try:
            status, attempt = self._state(assignment)
        except RedisError:
            return ""  # cannot tell: keep running; the report is fenced by attempt anyway
        if status is None:
            return ""
        if status == TaskStatus.CANCELLED:
            return "cancelled"
        if attempt != assignment.attempt:
            return f"superseded by attempt {attempt}"
        return ""

    def settled(self, assignment: Assignment) -> bool:
        try:
            status, attempt = self._state(assignment)
        except RedisError:
            return False  # cannot tell yet: the caller's wait is bounded
        if status is None:
            return True  # gone (retention): nothing left to fail over
        return status in TERMINAL_STATES or attempt != assignment.attempt

    def _state(self, assignment: Assignment) -> tuple[str | None, int]:
        """The task's status and current attempt as the store has them (None: no task)."""
        status, attempt = self.client.hmget(keys.task(assignment.task_id), "status", "attempt")
        return (None if status is None else status.decode()), int(attempt or 0)


# --8<-- [end:control]


# --8<-- [start:reaper]
class RedisReaper:
    """Stage 1 housekeeping (every agent runs it; there is no leader): give back the work of
    agents whose heartbeat key expired, and release retries whose backoff elapsed.

    After an outage, silence is no evidence: if Redis was away or paused longer than the TTL,
    every heartbeat key lapsed, and the first agent back would re-run everyone's live work.
    So an agent reaps only once its own heartbeats have gone through for a whole TTL since
    its last gap: by then every live agent has written its key again.
    """

    def __init__(self, queue: RedisWorkQueue, sink: RedisEventSink, agent_id: str) -> None:
        self.queue = queue
        self.sink = sink
        self.agent_id = agent_id
        self.actor = f"reaper:{agent_id}"

    def run(self) -> int:
        if self.sink.fresh_for() < self.sink.heartbeat_ttl:
            return 0
        try:
            # Checked again in each entry's script, on Redis's clock: this agent's own key must
            # be live when the entry moves (a reap carried out after a freeze finds it lapsed).
            requeued = self.queue.reap_dead_agents(actor=self.actor, reaper=self.agent_id)
            self.queue.promote_due()
        except RedisError as exc:
            raise TransientError(str(exc)) from exc
        if requeued:
            metrics.record_failover("reaper", requeued)
        return requeued


# --8<-- [end:reaper]
