"""The stage 3 agent: work arrives on task-dispatch-topic, reports leave on the bus.

Its life, in numbered phases:

1. Recover: give back what a previous incarnation with the same id left on its inbox and
   processing list (attempt + 1), exactly as the stage 2 agent does.
2. Position: read task-dispatch-topic from this agent's last committed offsets, or from the
   end of each partition if it never ran. The positions are fixed *before* the agent
   registers in ZooKeeper, so no dispatch addressed to it can be published before it reads.
3. Intake (one thread): read every dispatch; skip those whose `agentId` header names another
   agent; for its own, wait for a free slot, then take the entry off its inbox in Redis
   (`DispatchLedger.accept`: a redelivered or republished dispatch is refused there), then
   store the offset. Then publish RUNNING and hand the task to a worker.
4. Work (`capacity` threads): run the task in its own process group; stream each output line
   to task-logs-topic while it runs; publish SUCCESS / FAILED / CANCELLED with the result.
   Cancellation is read from the task's status in Redis (see `_should_stop`).
5. Heartbeat (one thread): publish load and counters to agent-heartbeat-topic.
6. Stop: take no new dispatch, let running tasks finish (bounded), publish a last heartbeat
   saying so, flush the producer, commit offsets.

Pattern: Observer / publish-subscribe (introduced in stage 2 with ZooKeeper watches, on a bus
here): the agent publishes what happened and does not know who listens. The manager applies
it to Redis today; a metrics exporter or an audit log could subscribe tomorrow, unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from redis.exceptions import RedisError

from common.adapters.redis_events import DispatchLedger
from common.domain.transitions import TaskStatus
from common.executors.factory import ExecutorFactory
from common.messaging.clients import Bus, EventPublisher, consumer_config
from common.messaging.dead_letter import DeadLetters, DeadLetterUnavailable, header
from common.messaging.dispatch import AGENT_HEADER
from common.messaging.schemas import (
    DispatchMessage,
    Heartbeat,
    LogLine,
    MalformedMessage,
    StatusEvent,
    decode,
)
from common.messaging.topics import DISPATCH, HEARTBEAT, LOGS, STATUS
from common.observability import bind, get_logger

log = get_logger("tasklab.agent")

# A single output line longer than this is cut: one runaway line must not make a log message
# bigger than the broker accepts (1 MB by default).
MAX_LINE_CHARS = 16 * 1024


class KafkaAgent:
    def __init__(
        self,
        agent_id: str,
        bus: Bus,
        publisher: EventPublisher,
        ledger: DispatchLedger,
        executors: ExecutorFactory,
        recover: Callable[[], tuple[int, int]],
        capacity: int = 2,
        heartbeat_interval: float = 1.0,
        max_log_lines: int = 1000,
    ) -> None:
        self.agent_id = agent_id
        self.bus = bus
        self.publisher = publisher
        self.ledger = ledger
        self.executors = executors
        self.recover = recover
        self.capacity = capacity
        self.heartbeat_interval = heartbeat_interval
        self.max_log_lines = max_log_lines
        self.group = f"tasklab-agent-{agent_id}"
        self.consumer = Consumer(
            consumer_config(bus, self.group, agent_id, **{"auto.offset.reset": "latest"})
        )
        self.dead_letters = DeadLetters(publisher, bus.group(self.group))
        self.stopping = threading.Event()
        self.paused = threading.Event()  # set = take no new work (ZooKeeper SUSPENDED)
        self.on_load_change: Callable[[int], None] | None = None
        self._slots = threading.BoundedSemaphore(capacity)
        self._pool = ThreadPoolExecutor(capacity, thread_name_prefix=f"{agent_id}-worker")
        self._running: set[Future] = set()
        self._load = 0
        self._load_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # What the stage 3 docs measure: dispatches read vs. addressed to this agent.
        self.dispatch_read = 0
        self.dispatch_mine = 0
        self.refused = 0
        self.completed = 0
        self._beats = 0

    @property
    def load(self) -> int:
        return self._load

    # -- phases --------------------------------------------------------------------------
    def start(self) -> None:
        requeued, _ = self.recover()
        if requeued:
            log.warning("re-queued %d task(s) left by a previous run of this agent", requeued)
        self._position()
        self._spawn(self._intake, "intake")
        self._spawn(self._heartbeat, "heartbeat")
        log.info(
            "agent %s started: capacity %d, executors %s, reading %s",
            self.agent_id,
            self.capacity,
            ",".join(t.value for t in self.executors.supported()),
            self.bus.topic(DISPATCH),
        )

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        _, still = wait_all(list(self._running), timeout=max(0.0, deadline - time.monotonic()))
        if still:
            log.warning("%d task(s) still running at shutdown", len(still))
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._beat(stopping=True)
        self.publisher.close()
        # Commits the offsets stored so far.
        self.consumer.close()
        log.info(
            "agent %s stopped after %d task(s); read %d dispatch(es), %d addressed to it",
            self.agent_id,
            self.completed,
            self.dispatch_read,
            self.dispatch_mine,
        )

    # -- 2. position ---------------------------------------------------------------------
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
        # assign(), not subscribe(): every agent reads every partition in its own group, so
        # there is no group membership, no rebalance, and no stop-the-world when agents come
        # and go. The price is that each agent reads every dispatch (see the stage 3 docs).
        self.consumer.assign(positions)

    def _positions(self) -> list[TopicPartition]:
        topic = self.bus.topic(DISPATCH)
        metadata = self.consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
        positions = self.consumer.committed(partitions, timeout=10)
        for tp in positions:
            if tp.offset < 0:
                # Never ran: everything already in the topic was addressed to other agents
                # (or to an id that was failed over long ago), so start at the end. Read here,
                # not left to auto.offset.reset, which would resolve it later, after the
                # scheduler may already have dispatched to us.
                _, tp.offset = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=10
                )
        return positions

    # --8<-- [end:position]
    # -- 3. intake -----------------------------------------------------------------------
    def _intake(self) -> None:
        while not self.stopping.is_set():
            if self.paused.is_set():
                self.stopping.wait(0.05)
                continue
            msg = self.consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                log.warning("dispatch consumer: %s", msg.error())
                continue
            try:
                self._take(msg)
            except Exception:  # noqa: BLE001 - one bad message must not end the intake
                log.exception("intake failed on a dispatch; continuing")

    # --8<-- [start:take]
    def _take(self, msg: Message) -> None:
        self.dispatch_read += 1
        target = header(msg, AGENT_HEADER)
        if target is not None and target != self.agent_id:
            # Someone else's: skipped on the header alone, without parsing the body.
            self.consumer.store_offsets(message=msg)
            return
        try:
            dispatch = decode(DispatchMessage, msg.value())
        except MalformedMessage as exc:
            self._dead_letter(msg, str(exc))
            return
        if dispatch.agent_id != self.agent_id:
            self.consumer.store_offsets(message=msg)
            return
        self.dispatch_mine += 1
        if not self._wait_for_slot():
            return  # stopping: not stored, so the next incarnation reads it (and refuses it)
        acceptance = self._retrying(
            lambda: self.ledger.accept(self.agent_id, dispatch.task_id, dispatch.attempt)
        )
        if acceptance is None:
            self._slots.release()
            return
        # At-least-once: stored only now that Redis records the outcome. Crash before this
        # line and the dispatch is read again; accept() then refuses it ("taken" or "stale").
        self.consumer.store_offsets(message=msg)
        if not acceptance.accepted:
            self._slots.release()
            self.refused += 1
            log.info(
                "refused dispatch of %s attempt %d: %s (task is %s at attempt %d)",
                dispatch.task_id,
                dispatch.attempt,
                acceptance.reason,
                acceptance.status or "gone",
                acceptance.attempt,
            )
            return
        self._add_load(1)
        self._status(dispatch, "RUNNING")
        future = self._pool.submit(self._run, dispatch)
        self._running.add(future)
        future.add_done_callback(self._running.discard)

    def _wait_for_slot(self) -> bool:
        while not self.stopping.is_set():
            if self._slots.acquire(timeout=0.1):
                if not self.paused.is_set():
                    return True
                self._slots.release()
                self.stopping.wait(0.05)
        return False

    # --8<-- [end:take]
    def _dead_letter(self, msg: Message, error: str) -> None:
        while not self.stopping.is_set():
            try:
                self.dead_letters.send(msg, error)
                self.consumer.store_offsets(message=msg)
                return
            except DeadLetterUnavailable as exc:
                log.warning("%s; retrying", exc)
                self.stopping.wait(0.5)

    def _retrying(self, call):
        """Run a Redis call until it succeeds (Redis restarting) or the agent stops."""
        while not self.stopping.is_set():
            try:
                return call()
            except RedisError as exc:
                log.warning("Redis unavailable (%s); retrying", exc)
                self.stopping.wait(0.5)
        return None

    # -- 4. work -------------------------------------------------------------------------
    def _run(self, dispatch: DispatchMessage) -> None:
        task = dispatch.task()
        with bind(taskId=task.task_id, agentId=self.agent_id, attempt=dispatch.attempt):
            lines = 0
            stop_reason: list[str] = []

            def on_line(stream: str, line: str) -> None:
                # Called on this worker thread, once per line, in output order.
                nonlocal lines
                if lines > self.max_log_lines:
                    return
                lines += 1
                if lines > self.max_log_lines:
                    stream, line = "stdout", f"[log truncated after {self.max_log_lines} lines]"
                self.publisher.publish(
                    LOGS,
                    key=task.task_id,
                    message=LogLine(
                        task_id=task.task_id,
                        attempt=dispatch.attempt,
                        seq=lines,
                        stream=stream,
                        line=line[:MAX_LINE_CHARS],
                        agent_id=self.agent_id,
                    ),
                )

            def should_stop() -> bool:
                reason = self._should_stop(dispatch)
                if reason:
                    stop_reason.append(reason)
                return bool(reason)

            try:
                log.info("running %s task %r", task.task_type.value, task.task_name)
                outcome = self.executors.create(task.task_type).run(
                    task, on_line=on_line, should_cancel=should_stop
                )
                status = (
                    "SUCCESS" if outcome.success else "CANCELLED" if outcome.cancelled else "FAILED"
                )
                error = outcome.error
                if outcome.cancelled and stop_reason:
                    error = f"{stop_reason[-1]}; process group killed"
                self._status(
                    dispatch,
                    status,
                    exit_code=outcome.exit_code,
                    result=outcome.result,
                    error=error,
                    timed_out=outcome.timed_out,
                    duration=round(outcome.duration, 3),
                    log_lines=lines,
                )
                log.info(
                    "task %s in %.3fs%s", status, outcome.duration, f": {error}" if error else ""
                )
                self.completed += 1
            except Exception as exc:  # noqa: BLE001 - report it rather than leave it RUNNING
                log.exception("task run failed")
                self._status(dispatch, "FAILED", error=f"agent error: {exc}", log_lines=lines)
            finally:
                self._add_load(-1)
                self._slots.release()

    # --8<-- [start:should-stop]
    def _should_stop(self, dispatch: DispatchMessage) -> str:
        """Why the running attempt must be killed now, or "" to let it run.

        Read from the task in Redis every 250 ms while it runs. Redis is where a cancel is
        decided (one atomic transition), so reading it there cannot miss or misorder one; a
        control topic would need routing to this agent, and a cancel that overtook its
        dispatch would find nothing to kill. The same read catches a failover that gave the
        task to someone else (a newer attempt) while this agent was cut off: the old run is
        then killed instead of racing the new one.
        """
        try:
            status, attempt = self.ledger.status_and_attempt(dispatch.task_id)
        except RedisError:
            return ""  # cannot tell: keep running; the report is fenced by attempt anyway
        if status == TaskStatus.CANCELLED:
            return "cancelled"
        if attempt != dispatch.attempt:
            return f"superseded by attempt {attempt}"
        return ""

    # --8<-- [end:should-stop]
    def _status(self, dispatch: DispatchMessage, status: str, **fields: object) -> None:
        self.publisher.publish(
            STATUS,
            key=dispatch.task_id,
            message=StatusEvent(
                task_id=dispatch.task_id,
                attempt=dispatch.attempt,
                epoch=dispatch.epoch,
                agent_id=self.agent_id,
                status=status,
                **fields,
            ),
        )

    # -- 5. heartbeat --------------------------------------------------------------------
    def _heartbeat(self) -> None:
        self._beat()
        while not self.stopping.wait(self.heartbeat_interval):
            self._beat()

    def _beat(self, stopping: bool = False) -> None:
        self._beats += 1
        self.publisher.publish(
            HEARTBEAT,
            key=self.agent_id,
            message=Heartbeat(
                agent_id=self.agent_id,
                load=self._load,
                capacity=self.capacity,
                seq=self._beats,
                dispatch_read=self.dispatch_read,
                dispatch_mine=self.dispatch_mine,
                stopping=stopping,
            ),
        )

    # -- internals -----------------------------------------------------------------------
    def _add_load(self, delta: int) -> None:
        with self._load_lock:
            self._load += delta
            # Under the lock, so two workers finishing together cannot report out of order.
            if self.on_load_change is not None:
                self.on_load_change(self._load)

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=f"{self.agent_id}-{name}", daemon=True)
        t.start()
        self._threads.append(t)
