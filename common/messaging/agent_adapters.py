"""The agent's Kafka adapters (stage 3): work arrives on task-dispatch-topic, reports leave on
the bus. The agent itself is the one of every stage (common/agent/agent.py).

`KafkaDispatchIntake`:
1. Position: claim the one partition of task-dispatch-topic this agent reads (in ZooKeeper,
   `common/coordination/dispatch_partitions.py`: the one it read last time if free, else the
   first free one from a place its id hashes to; every one claimed: share the least-read),
   and read it from this agent's last committed offset there, or from its end. The partition
   and position are fixed when the agent starts, *before* it registers in ZooKeeper with the
   partition in its node, so the scheduler (which produces an agent's dispatches to the
   partition its node names) cannot publish to it before it reads.
2. Take (one worker at a time, and only when that worker is free): read dispatches; skip
   those whose `agentId` header names another agent; for its own, take the entry off its
   inbox in Redis (`DispatchLedger.accept`: a redelivered or republished dispatch is refused
   there), then store the offset.

`KafkaEventSink`: RUNNING, each output line, and the final report on the status and logs
topics; heartbeats on agent-heartbeat-topic. The manager applies them to Redis.

Pattern: Observer / publish-subscribe (introduced in stage 2 with ZooKeeper watches, on a bus
here): the agent publishes what happened and does not know who listens.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from redis.exceptions import RedisError

from common.adapters.redis_events import Acceptance, DispatchLedger
from common.domain.dispatch import least_shared, partition_order
from common.domain.outcome import AttemptReport
from common.messaging.clients import Bus, EventPublisher, consumer_config
from common.messaging.dead_letter import DeadLetters, DeadLetterUnavailable, header
from common.messaging.dispatch import AGENT_HEADER
from common.messaging.schemas import (
    DispatchMessage,
    Heartbeat,
    LogLine,
    MalformedMessage,
    StatusEvent,
    configured_max_payload_bytes,
    decode,
)
from common.messaging.topics import DISPATCH, HEARTBEAT, LOGS, STATUS
from common.observability import get_logger, tracing
from common.observability.tracing import TRACEPARENT
from common.ports.agent import Assignment, EventSink, WorkIntake

log = get_logger("tasklab.agent")

# A single output line longer than this is cut: one runaway line must not make a log message
# bigger than the broker accepts (1 MB by default).
MAX_LINE_CHARS = 16 * 1024


class KafkaDispatchIntake(WorkIntake):
    def __init__(
        self,
        agent_id: str,
        bus: Bus,
        ledger: DispatchLedger,
        publisher: EventPublisher,
        recover: Callable[[], int],
        retry_wait: float = 0.5,
        claim: Callable[[list[int]], int | None] = lambda order: order[0],
        announced: Callable[[], Mapping[int, int]] = dict,
        on_partition: Callable[[int], None] | None = None,
    ) -> None:
        self.agent_id = agent_id
        # Claim a dispatch partition (in ZooKeeper: the first free one of an order), count how
        # many live agents read each (to share the least-read when all are claimed), and tell
        # the partition read (to the registry, which puts it in this agent's node).
        self._claim = claim
        self._announced = announced
        self._on_partition = on_partition
        self.shared = False
        self.partition: int | None = None
        self.bus = bus
        self.ledger = ledger
        self._recover = recover
        self.retry_wait = retry_wait
        self.group = f"tasklab-agent-{agent_id}"
        self.consumer = Consumer(
            consumer_config(bus, self.group, agent_id, **{"auto.offset.reset": "latest"})
        )
        self.dead_letters = DeadLetters(publisher, bus.group(self.group))
        # The payload limit a dispatch is checked against: this process's setting, read once
        # here rather than looked up again for every dispatch.
        self.max_payload_bytes = configured_max_payload_bytes()
        self._lock = threading.Lock()
        # The attempts accepted lately: a retried accept must not take one of them again.
        self._accepted: deque[tuple[str, int]] = deque(maxlen=4096)
        self._stopping = threading.Event()
        self._paused = threading.Event()
        # What the stage 3 docs measure: dispatches read vs. addressed to this agent.
        self.dispatch_read = 0
        self.dispatch_mine = 0
        self.refused = 0

    def open(self, stopping: threading.Event, paused: threading.Event) -> None:
        self._stopping, self._paused = stopping, paused
        self._position()

    def recover(self) -> int:
        return self._recover()

    def close(self) -> None:
        # Commits the offsets stored so far.
        self.consumer.close()
        log.info(
            "read %d dispatch(es), %d addressed to this agent",
            self.dispatch_read,
            self.dispatch_mine,
        )

    # -- 1. position ---------------------------------------------------------------------
    # --8<-- [start:position]
    def _position(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                positions = self._positions()
                break
            except KafkaException as exc:
                # Right after the topic is created its partition may not have taken up its
                # leadership yet (NOT_LEADER_FOR_PARTITION, not flagged retriable by the
                # client): that passes in a moment. Past the deadline, the error stands.
                if time.monotonic() >= deadline:
                    raise
                log.info("dispatch topic not ready (%s); retrying", exc.args[0].str())
                time.sleep(0.2)
        # assign(), not subscribe(): the agent reads the partition it chose in its own group,
        # so there is no group membership, no rebalance, and no stop-the-world when agents
        # come and go (see the stage 3 docs' trade-offs).
        self.consumer.assign(positions)
        if self._on_partition is not None:
            self._on_partition(positions[0].partition)

    def _positions(self) -> list[TopicPartition]:
        topic = self.bus.topic(DISPATCH)
        metadata = self.consumer.list_topics(topic, timeout=10)
        count = len(metadata.topics[topic].partitions)
        committed = self.consumer.committed(
            [TopicPartition(topic, p) for p in range(count)], timeout=10
        )
        # The partition this id read last time: the one with its committed offset (several
        # means offsets left by an older layout that read them all: no preference then).
        had = [tp.partition for tp in committed if tp.offset >= 0]
        order = partition_order(count, had[0] if len(had) == 1 else None, self.agent_id)
        claimed = self._claim(order)
        self.shared = claimed is None
        chosen = (
            least_shared(count, self._announced(), self.agent_id) if claimed is None else claimed
        )
        position = next(tp for tp in committed if tp.partition == chosen)
        if position.offset < 0:
            # Never read it: everything already there was addressed to other agents (or to
            # an id that was failed over long ago), so start at the end. Read here, not left
            # to auto.offset.reset, which would resolve it later, after the scheduler may
            # already have dispatched to us.
            _, position.offset = self.consumer.get_watermark_offsets(
                TopicPartition(topic, chosen), timeout=10
            )
        self.partition = chosen
        log.info(
            "reading partition %d of %s from offset %d (%s)",
            chosen,
            topic,
            position.offset,
            f"shared: all {count} partitions are claimed" if self.shared else "claimed",
        )
        return [position]

    # --8<-- [end:position]
    # -- 2. take -------------------------------------------------------------------------
    def take(self, timeout: float) -> Assignment | None:
        # One worker reads at a time, and only a free one asks: an accepted dispatch always
        # has a worker waiting for it, and offsets are stored in the order they were read.
        if not self._lock.acquire(timeout=timeout):
            return None
        try:
            deadline = time.monotonic() + timeout
            while not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                msg = self.consumer.poll(min(0.2, left))
                if msg is None:
                    continue
                if msg.error() is not None:
                    log.warning("dispatch consumer: %s", msg.error())
                    continue
                taken = self._take(msg)
                if taken is not None:
                    return taken
            return None
        finally:
            self._lock.release()

    # --8<-- [start:take]
    def _take(self, msg: Message) -> Assignment | None:
        self.dispatch_read += 1
        target = header(msg, AGENT_HEADER)
        if target is not None and target != self.agent_id:
            # Someone else's: skipped on the header alone, without parsing the body.
            self.consumer.store_offsets(message=msg)
            return None
        try:
            dispatch = decode(
                DispatchMessage, msg.value(), max_payload_bytes=self.max_payload_bytes
            )
        except MalformedMessage as exc:
            self._dead_letter(msg, str(exc))
            return None
        if dispatch.agent_id != self.agent_id:
            self.consumer.store_offsets(message=msg)
            return None
        self.dispatch_mine += 1
        if self._paused.is_set():
            # ZooKeeper is unsure of us: start nothing now. Read this dispatch again later.
            self._rewind(msg)
            return None
        acceptance = self._accept(dispatch)
        if acceptance is None:
            self._rewind(msg)  # stopping while Redis was away: the next read decides
            return None
        # At-least-once: stored only now that Redis records the outcome. Crash before this
        # line and the dispatch is read again; accept() then refuses it ("taken" or "stale").
        self.consumer.store_offsets(message=msg)
        if not acceptance.accepted:
            self.refused += 1
            log.info(
                "refused dispatch of %s attempt %d: %s (task is %s at attempt %d)",
                dispatch.task_id,
                dispatch.attempt,
                acceptance.reason,
                acceptance.status or "gone",
                acceptance.attempt,
            )
            return None
        return Assignment(
            task=dispatch.task(),
            attempt=dispatch.attempt,
            epoch=dispatch.epoch,
            entry=acceptance.entry,
            traceparent=header(msg, TRACEPARENT) or "",
        )

    # --8<-- [end:take]
    def _accept(self, dispatch: DispatchMessage) -> Acceptance | None:
        """Ask the ledger, retrying while Redis restarts; None if the agent stops first.

        A try that got no answer may have gone through (Redis frozen past the socket
        timeout carries it out on waking), and the next is then refused as "taken": the
        entry it moved would sit on this agent's processing list, run by nobody, with no
        failover to come while the agent lives. So a retry asks `accept_again`, which takes
        that entry as accepted, unless this agent accepted the attempt before (a second
        delivery of a dispatch one of its workers runs looks the same to Redis)."""
        key = (dispatch.task_id, dispatch.attempt)
        unanswered = False
        while not self._stopping.is_set():
            try:
                if unanswered and key not in self._accepted:
                    got = self.ledger.accept_again(self.agent_id, *key)
                else:
                    got = self.ledger.accept(self.agent_id, *key)
            except RedisError as exc:
                unanswered = True
                log.warning("Redis unavailable (%s); retrying", exc)
                self._stopping.wait(self.retry_wait)
                continue
            if got.accepted:
                self._accepted.append(key)
            return got
        return None

    def _rewind(self, msg: Message) -> None:
        self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
        self._stopping.wait(0.05)

    def _dead_letter(self, msg: Message, error: str) -> None:
        while not self._stopping.is_set():
            try:
                self.dead_letters.send(msg, error)
                self.consumer.store_offsets(message=msg)
                return
            except DeadLetterUnavailable as exc:
                log.warning("%s; retrying", exc)
                self._stopping.wait(self.retry_wait)


class KafkaEventSink(EventSink):
    streams_lines = True

    def __init__(
        self,
        agent_id: str,
        publisher: EventPublisher,
        intake: KafkaDispatchIntake,
        max_log_lines: int = 1000,
    ) -> None:
        self.agent_id = agent_id
        self.publisher = publisher
        self.intake = intake
        self.max_log_lines = max_log_lines
        self._beats = 0
        # (taskId, attempt) -> lines published so far: the final report says how many, so
        # the manager applies it only once they are all in.
        self._published: dict[tuple[str, int], int] = {}

    def started(self, assignment: Assignment) -> None:
        self._status(assignment, "RUNNING")

    def line(self, assignment: Assignment, seq: int, stream: str, text: str) -> None:
        # Called on the attempt's worker thread, once per line, in output order.
        if seq > self.max_log_lines + 1:
            return
        self._published[(assignment.task_id, assignment.attempt)] = seq
        if seq > self.max_log_lines:
            stream, text = "stdout", f"[log truncated after {self.max_log_lines} lines]"
        self.publisher.publish(
            LOGS,
            key=assignment.task_id,
            message=LogLine(
                task_id=assignment.task_id,
                attempt=assignment.attempt,
                seq=seq,
                stream=stream,
                line=text[:MAX_LINE_CHARS],
                agent_id=self.agent_id,
            ),
        )

    def finished(self, assignment: Assignment, report: AttemptReport, lines: list[str]) -> None:
        published = self._published.pop((assignment.task_id, assignment.attempt), 0)
        # A superseded run is reported too (as killed): the manager finds it stale and counts
        # it, which is how the fencing's work shows in stats:events.
        killed = report.cancelled or report.superseded
        status = "SUCCESS" if report.success else "CANCELLED" if killed else "FAILED"
        self._status(
            assignment,
            status,
            exit_code=report.exit_code,
            result=report.result,
            error=report.error,
            timed_out=report.timed_out,
            duration=round(report.duration, 3),
            log_lines=published,
        )

    def heartbeat(self, load: int, capacity: int, stopping: bool = False) -> None:
        self._beats += 1
        self.publisher.publish(
            HEARTBEAT,
            key=self.agent_id,
            message=Heartbeat(
                agent_id=self.agent_id,
                load=load,
                capacity=capacity,
                seq=self._beats,
                dispatch_read=self.intake.dispatch_read,
                dispatch_mine=self.intake.dispatch_mine,
                stopping=stopping,
            ),
        )

    def close(self) -> None:
        self.publisher.close()

    def _status(self, assignment: Assignment, status: str, **fields: object) -> None:
        self.publisher.publish(
            STATUS,
            # Sent from inside the attempt's "run" span: the manager's "apply" continues it.
            headers=tracing.headers(),
            key=assignment.task_id,
            message=StatusEvent(
                task_id=assignment.task_id,
                attempt=assignment.attempt,
                epoch=assignment.epoch,
                agent_id=self.agent_id,
                status=status,
                **fields,
            ),
        )
