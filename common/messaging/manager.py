"""The manager: applies what agents publish on the bus to Redis, and notices silent agents.

`tasklab run manager --stage 3` runs one `AtLeastOnceConsumer` in the group `tasklab-manager`
over three topics. Several managers share the partitions between them; one is enough.

- task-status-update-topic: RUNNING, SUCCESS, FAILED (with retries) and CANCELLED go through
  the same fenced Lua transitions as in stages 1 and 2: the outcome is the domain's decision
  (`common.domain.outcome.decide`), written by the same `RedisOutcomeWriter` a stage 1 agent
  uses, so a late or replayed report is rejected by attempt and epoch.
- task-logs-topic: each line is appended once, in order (`RedisLogSink`).
- agent-heartbeat-topic: `tasklab agents` reads what the heartbeats say; an agent that goes
  silent while others are heard is failed over (`HeartbeatMonitor`), a second signal beside
  ZooKeeper's session expiry.

Every handler is idempotent by (taskId, attempt): the consumer is at-least-once, so after a
crash the manager reads again what it applied but had not committed yet, and must change
nothing. What it did is counted in `stats:events`.
"""

from __future__ import annotations

import time

from confluent_kafka import Message
from redis import Redis

from common import keys
from common.adapters.redis_dispatch import RedisDispatcher
from common.adapters.redis_events import DispatchLedger, EventStats, RedisLogSink, record_heartbeat
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_store import RedisTaskStore
from common.domain.outcome import AttemptReport, FinalReport, judge_final
from common.domain.task import Task
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.messaging.consumer import NotYet, Unprocessable
from common.messaging.dead_letter import header
from common.messaging.heartbeat_monitor import HeartbeatMonitor
from common.messaging.schemas import Heartbeat, LogLine, StatusEvent, decode
from common.observability import bind, get_logger, metrics, tracing
from common.ports.agent import Assignment
from common.ports.task_store import TransitionResult

log = get_logger("tasklab.manager")


class TaskEventManager:
    def __init__(
        self,
        manager_id: str,
        client: Redis,
        store: RedisTaskStore,
        writer: RedisOutcomeWriter,
        dispatcher: RedisDispatcher,
        monitor: HeartbeatMonitor,
        heartbeat_ttl: float = 5.0,
        log_wait: float = 3.0,
    ) -> None:
        self.manager_id = manager_id
        self.client = client
        self.store = store
        self.writer = writer
        self.dispatcher = dispatcher
        self.ledger = DispatchLedger(client)
        self.logs = RedisLogSink(client)
        self.stats = EventStats(client)
        self.monitor = monitor
        self.heartbeat_ttl = heartbeat_ttl
        self.log_wait = log_wait
        self.actor = f"manager:{manager_id}"
        # (taskId, attempt) -> when its final status first waited for log lines (monotonic).
        self._waiting_for_logs: dict[tuple[str, int], float] = {}

    # -- task-status-update-topic ------------------------------------------------------------
    def on_status(self, msg: Message) -> None:
        event = decode(StatusEvent, msg.value())
        with (
            bind(
                taskId=event.task_id,
                attempt=event.attempt,
                agentId=event.agent_id,
                epoch=event.epoch,
            ),
            # The agent's "run" span, carried in the event's header: this write is its child.
            tracing.span(
                f"apply {event.status}",
                parent=header(msg, tracing.TRACEPARENT) if tracing.enabled() else None,
                kind="consumer",
                attributes={
                    "tasklab.task_id": event.task_id,
                    "tasklab.attempt": event.attempt,
                    "tasklab.status": event.status,
                },
                # A final status held back for its log lines is applied again later.
                deferrals=(NotYet,),
            ),
        ):
            task = self.store.get(event.task_id)
            if task is None:
                raise Unprocessable(f"no task {event.task_id}")
            if event.is_final:
                self._final(event, task)
            else:
                self._running(event, task)

    def _running(self, event: StatusEvent, task: Task) -> None:
        if task.attempt == event.attempt and task.agent_id not in (None, event.agent_id):
            raise Unprocessable(f"attempt {event.attempt} is placed on {task.agent_id}")
        result = self._start(event)
        if result.accepted:
            self.stats.count("status_applied")
            log.info("applied RUNNING reported by %s", event.agent_id)
            if event.attempt == 1 and task.created_at > 0:
                # From stage 3 the manager writes RUNNING, and it has the task's creation time.
                metrics.SCHEDULE_TO_START.labels(task.task_type.value).observe(
                    max(0.0, event.at - task.created_at)
                )
        elif result.reason in ("stale_attempt", "stale_epoch"):
            # A report from an attempt that was failed over: fencing doing its job.
            self.stats.count("status_stale")
        elif result.status in (TaskStatus.RUNNING, *TERMINAL_STATES):
            # Already running or finished at this attempt: a redelivery, or cancelled first.
            self.stats.count("status_duplicate")
        else:
            raise Unprocessable(f"cannot apply RUNNING to a {result.status} task")

    def _start(self, event: StatusEvent) -> TransitionResult:
        return self.store.transition(
            event.task_id,
            TaskStatus.RUNNING,
            attempt=event.attempt,
            epoch=event.epoch,
            actor=event.agent_id,
            fields={"startedAt": repr(event.at)},
            clear=("result", "error", "exitCode"),
        )

    # --8<-- [start:final]
    def _final(self, event: StatusEvent, task: Task) -> None:
        key = (event.task_id, event.attempt)
        verdict, why = judge_final(
            task_status=task.status,
            task_attempt=task.attempt,
            task_agent=task.agent_id,
            attempt=event.attempt,
            agent=event.agent_id,
            status=event.status,
        )
        if verdict == FinalReport.STALE:
            self._waiting_for_logs.pop(key, None)
            self.stats.count("status_stale")
            return
        if verdict == FinalReport.DUPLICATE:
            # A redelivery, or the report of a run killed by a cancel (the cancel was the
            # transition). Either way the agent's entry leaves its processing list now.
            self.ledger.drop(event.agent_id, event.task_id, event.attempt)
            self._waiting_for_logs.pop(key, None)
            self.stats.count("status_duplicate")
            return
        if verdict == FinalReport.UNPROCESSABLE:
            raise Unprocessable(why)
        if verdict == FinalReport.IMPLY_RUNNING:
            # Applied first, through the same fenced transition; a late RUNNING is then a
            # duplicate.
            if self._start(event).accepted:
                self.stats.count("status_running_implied")
        self._wait_for_lines(event, key)
        # The agent reported how the attempt ended; what that means (retry or not) is the
        # domain's decision, the same one a stage 1 agent makes, written the same way.
        decision = self.writer.decide(task, _report_of(event))
        entry = self.ledger.find(keys.processing(event.agent_id), event.task_id, event.attempt)
        attempt = Assignment(task, event.attempt, event.epoch, entry or "")
        result = self.writer.write(attempt, decision, event.agent_id)
        self._waiting_for_logs.pop(key, None)
        if result.accepted:
            self.stats.count("status_applied")
            log.info("applied %s reported by %s", event.status, event.agent_id)
        elif result.reason in ("stale_attempt", "stale_epoch"):
            self.stats.count("status_stale")
        else:
            self.stats.count("status_duplicate")

    def _wait_for_lines(self, event: StatusEvent, key: tuple[str, int]) -> None:
        """Hold a final status back until the attempt's log lines are in.

        Lines and statuses travel on different topics, which Kafka does not order against
        each other. `tasklab logs --follow` stops at the final state, so the state must not
        be visible before the last line. Bounded: a line that was dead-lettered never comes.
        """
        have = self.logs.cursor(event.task_id, event.attempt)
        if have >= event.log_lines:
            return
        now = time.monotonic()
        since = self._waiting_for_logs.setdefault(key, now)
        if now - since < self.log_wait:
            raise NotYet(f"{event.log_lines - have} log line(s) of this attempt not read yet")
        log.warning(
            "applying %s without %d log line(s) that never arrived",
            event.status,
            event.log_lines - have,
        )
        self.stats.count("log_lines_missing", event.log_lines - have)

    # --8<-- [end:final]
    # -- task-logs-topic -----------------------------------------------------------------------
    def on_log(self, msg: Message) -> None:
        line = decode(LogLine, msg.value())
        appended = self.logs.append(line.task_id, line.attempt, [(line.seq, line.text())])
        # Counted by the script itself (log_appended, log_duplicate, log_stale).
        if appended.missing:
            raise Unprocessable(f"no task {line.task_id}")

    # -- agent-heartbeat-topic -----------------------------------------------------------------
    def on_heartbeat(self, msg: Message) -> None:
        beat = decode(Heartbeat, msg.value())
        if beat.stopping:
            # A clean shutdown: ZooKeeper hands its work back when its node goes.
            self.monitor.forget(beat.agent_id)
            self.client.delete(keys.heartbeat(beat.agent_id))
            return
        if time.time() - beat.at > self.monitor.timeout:
            # Old news (replayed after a restart, or queued while the broker was away): it
            # says nothing about whether the agent is alive now.
            self.stats.count("heartbeat_old")
            return
        self.monitor.beat(beat.agent_id, msg.partition(), time.monotonic())
        record_heartbeat(self.client, beat.agent_id, self.heartbeat_ttl)

    # -- the second failover signal ------------------------------------------------------------
    def check_heartbeats(self) -> None:
        for agent_id in self.monitor.silent(time.monotonic()):
            # The manager is no leader: it has no epoch to fence with. Its reap is fenced by
            # the agent's heartbeat key instead, checked in the same script that moves each
            # entry: the key is refreshed by whichever manager hears the agent (several share
            # the heartbeat partitions), and a restarted agent sets it itself before it takes
            # any work. So an agent another manager still hears, or one that came back since
            # this manager last heard it, is left alone; this monitor returns it again in
            # `timeout` if it really is silent.
            requeued, dropped = self.dispatcher.reap_agent(
                agent_id, f"{self.actor} (missed heartbeats)"
            )
            if requeued or dropped:
                self.stats.count("agent_failovers")
                metrics.record_failover("heartbeat", requeued)
                log.warning(
                    "agent %s silent on the heartbeat topic for %.1fs: re-queued %d task(s) "
                    "with attempt + 1, dropped %d",
                    agent_id,
                    self.monitor.timeout,
                    requeued,
                    dropped,
                )


def _report_of(event: StatusEvent) -> AttemptReport:
    """A final status event as the domain's attempt report."""
    return AttemptReport(
        success=event.status == "SUCCESS",
        exit_code=event.exit_code,
        result=event.result or "",
        error=event.error,
        timed_out=event.timed_out,
        cancelled=event.status == "CANCELLED",
        duration=event.duration or 0.0,
    )
