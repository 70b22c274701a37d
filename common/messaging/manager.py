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
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from confluent_kafka import Message
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError, RedisError

from common import keys
from common.adapters.redis_client import as_text as _s
from common.adapters.redis_dispatch import RedisDispatcher
from common.adapters.redis_events import EventStats, RedisLogSink, record_heartbeat
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_store import (
    RedisTaskStore,
    as_result,
    transition_arg,
    transition_keys,
)
from common.domain.dispatch import entry_ref
from common.domain.outcome import AttemptReport, Decision, FinalReport, judge_final
from common.domain.task import Task
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.messaging.consumer import SKIPPED, NotYet, Unprocessable
from common.messaging.dead_letter import header
from common.messaging.heartbeat_monitor import HeartbeatMonitor
from common.messaging.schemas import Heartbeat, LogLine, MalformedMessage, StatusEvent, decode
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
        self.logs = RedisLogSink(client)
        self.stats = EventStats(client)
        self.monitor = monitor
        self.heartbeat_ttl = heartbeat_ttl
        self.log_wait = log_wait
        self.actor = f"manager:{manager_id}"
        # (taskId, attempt) -> when its final status first waited for log lines (monotonic).
        self._waiting_for_logs: dict[tuple[str, int], float] = {}
        # What a round did, counted in stats:events with the round's last round trip.
        self._counts: Counter[str] = Counter()
        # The one transition script, sent by hash in pipelines (see `_execute`).
        self._transition = store.scripts.transition

    # -- task-status-update-topic ------------------------------------------------------------
    def on_status(self, msg: Message) -> None:
        """One status event, in a span of its own (the consumer's single handler)."""
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
            item = _Status(msg, event)
            try:
                self._apply_round([item], set(), bound=True)
            except _RoundFailed as failed:
                raise failed.error from None  # transient: the consumer tries it again
            if item.outcome is not None:
                raise item.outcome

    # --8<-- [start:batch]
    def on_status_batch(self, msgs: list[Message]) -> list[BaseException | None]:
        """Every status event the consumer read at once, applied in a few Redis round trips.

        Each event is judged exactly as on its own; only the round trips are shared: one
        pipeline reads every task, another writes every transition (the same fenced script per
        event, each with its own result), a third counts. A task that appears twice (its
        RUNNING and its SUCCESS) starts a new round, so every decision sees the previous
        event's effect; a round's counts then go ahead of the next round's reads, in the same
        round trip. One outcome per event, for the consumer to settle each on its own.
        """
        if tracing.enabled():
            # Each event keeps its own "apply" span, child of the agent's: one at a time.
            return self._one_by_one(msgs)
        outcomes: list[BaseException | None] = [None] * len(msgs)
        items: list[_Status] = []
        for i, msg in enumerate(msgs):
            try:
                items.append(_Status(msg, decode(StatusEvent, msg.value()), index=i))
            except MalformedMessage as exc:
                outcomes[i] = exc
        held: set[tuple[str, int]] = set()
        rounds = _rounds(items)
        carried: Pipeline | None = None
        for n, round_ in enumerate(rounds):
            try:
                # A round's counts and fixes go with the next round's reads, ahead of them
                # (one round trip fewer, same order); the last round sends its own.
                carried = self._apply_round(
                    round_, held, carried=carried, last=n == len(rounds) - 1
                )
            except _RoundFailed as failed:
                # Redis went away mid-batch: this round and the rest are tried again later
                # (what this round did apply, it finds applied then: idempotent), and so is
                # the round before it if its fixes were lost with this round's reads.
                for later in rounds[max(0, n - 1) if failed.carried else n :]:
                    for item in later:
                        item.outcome = failed.error
                break
        for item in items:
            outcomes[item.index] = item.outcome
        return outcomes

    # --8<-- [end:batch]
    def _one_by_one(self, msgs: list[Message]) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        held: set[tuple[str, int]] = set()
        for msg in msgs:
            where = (msg.topic(), msg.partition())
            if where in held:
                outcomes.append(SKIPPED)
                continue
            try:
                self.on_status(msg)
                outcomes.append(None)
            except Exception as exc:  # noqa: BLE001 - an outcome, settled by the consumer
                outcomes.append(exc)
                if isinstance(exc, (NotYet, RedisError)):
                    held.add(where)  # nothing behind it on its partition may be applied
        return outcomes

    def _apply_round(
        self,
        items: list[_Status],
        held: set[tuple[str, int]],
        *,
        bound: bool = False,
        carried: Pipeline | None = None,
        last: bool = True,
    ) -> Pipeline | None:
        """Read, judge, write, count: the events of one round, no task twice among them.

        `carried`: the previous round's fixes and counts, sent ahead of this round's reads.
        Unless `last`, this round's are returned unsent, for the next round to carry; a round
        that fails raises `_RoundFailed` (a RedisError inside). `bound`: the caller bound the
        one event's log context already.
        """
        self._counts.clear()  # what a failed round counted is counted again when retried
        # status_applied / status_rounds is how many events share a round's round trips.
        self._counts["status_rounds"] += 1
        # Counted before the read: a pipeline that fails is emptied.
        carrying = carried is not None and len(carried) > 0
        try:
            processing = self._read(items, carried)
        except RedisError as exc:
            raise _RoundFailed(exc, carried=carrying) from exc
        try:
            writes = self.client.pipeline(transaction=False)
            ops: list[tuple[_Status, str]] = []
            for item in items:
                if item.where in held:
                    item.outcome = SKIPPED
                    continue
                try:
                    self._judge(item, processing, writes, ops)
                except NotYet as exc:
                    item.outcome = exc
                    held.add(item.where)
                except Unprocessable as exc:
                    item.outcome = exc
            for (item, op), reply in zip(ops, self._execute(writes, ops), strict=True):
                item.replies[op] = reply
            fixes = self.client.pipeline(transaction=False)
            for item in items:
                with nullcontext() if bound else _bound(item.event):
                    self._conclude(item, fixes)
            for what, n in self._counts.items():
                fixes.hincrby(keys.EVENT_STATS, what, n)
            self._counts.clear()
            if not last:
                return fixes
            if len(fixes):
                fixes.execute()
        except RedisError as exc:
            raise _RoundFailed(exc) from exc
        return None

    def _read(self, items: list[_Status], carried: Pipeline | None) -> dict[str, list[str]]:
        """One pipeline: each task's hash; for final events, the attempt's log cursor and the
        agent's processing list (where the attempt's ledger entry is). Behind `carried`'s
        commands, if given (their replies are not needed)."""
        pipe = carried if carried is not None else self.client.pipeline(transaction=False)
        ahead = len(pipe)
        for item in items:
            pipe.hgetall(keys.task(item.event.task_id))
        finals = [item for item in items if item.event.is_final]
        for item in finals:
            pipe.hget(keys.log_cursor(item.event.task_id), str(item.event.attempt))
        agents = sorted({item.event.agent_id for item in finals})
        for agent_id in agents:
            pipe.lrange(keys.processing(agent_id), 0, -1)
        replies = pipe.execute()[ahead:]
        for item, data in zip(items, replies, strict=False):
            item.data = {_s(k): _s(v) for k, v in data.items()}
        for item, cursor in zip(finals, replies[len(items) :], strict=False):
            item.cursor = int(cursor or 0)
        lists = replies[len(items) + len(finals) :]
        return {a: [_s(e) for e in entries] for a, entries in zip(agents, lists, strict=True)}

    def _judge(
        self,
        item: _Status,
        processing: dict[str, list[str]],
        writes: Pipeline,
        ops: list[tuple[_Status, str]],
    ) -> None:
        """Decide what an event does to its task (raises Unprocessable or NotYet) and queue
        its writes."""
        event = item.event
        if not item.data:
            raise Unprocessable(f"no task {event.task_id}")
        task = item.task = Task.from_hash(item.data)
        if not event.is_final:
            if task.attempt == event.attempt and task.agent_id not in (None, event.agent_id):
                raise Unprocessable(f"attempt {event.attempt} is placed on {task.agent_id}")
            self._queue_start(writes, event)
            ops.append((item, "running"))
            return
        self._judge_final(item, processing.get(event.agent_id, []), writes, ops)

    # --8<-- [start:final]
    def _judge_final(
        self,
        item: _Status,
        entries: list[str],
        writes: Pipeline,
        ops: list[tuple[_Status, str]],
    ) -> None:
        event, task = item.event, item.task
        assert task is not None
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
            self._counts["status_stale"] += 1
            return
        entry = _entry_of(entries, event.task_id, event.attempt)
        if verdict == FinalReport.DUPLICATE:
            # A redelivery, or the report of a run killed by a cancel (the cancel was the
            # transition). Either way the agent's entry leaves its processing list now.
            if entry:
                writes.lrem(keys.processing(event.agent_id), 1, entry)
                ops.append((item, "drop"))
            self._waiting_for_logs.pop(key, None)
            self._counts["status_duplicate"] += 1
            return
        if verdict == FinalReport.UNPROCESSABLE:
            raise Unprocessable(why)
        if verdict == FinalReport.IMPLY_RUNNING:
            # Applied first, through the same fenced transition; a late RUNNING is then a
            # duplicate.
            self._queue_start(writes, event)
            ops.append((item, "implied"))
        self._wait_for_lines(event, key, item.cursor)
        # The agent reported how the attempt ended; what that means (retry or not) is the
        # domain's decision, the same one a stage 1 agent makes, written the same way.
        decision = self.writer.decide(
            task, _report_of(event), retries_used=int(item.data.get("retriesUsed") or 0)
        )
        item.assignment = Assignment(task, event.attempt, event.epoch, entry or "")
        item.decision = decision
        if decision.writes:
            all_keys, arg = self.writer.request(item.assignment, decision, event.agent_id)
            writes.evalsha(self._transition.sha, len(all_keys), *all_keys, arg)
            ops.append((item, "final"))
        elif entry:
            # Nothing to write (the domain said so): the entry leaves the processing list.
            writes.lrem(keys.processing(event.agent_id), 1, entry)
            ops.append((item, "drop"))

    def _wait_for_lines(self, event: StatusEvent, key: tuple[str, int], have: int) -> None:
        """Hold a final status back until the attempt's log lines are in (`have` of them).

        Lines and statuses travel on different topics, which Kafka does not order against
        each other. `tasklab logs --follow` stops at the final state, so the state must not
        be visible before the last line. Bounded: a line that was dead-lettered never comes.
        """
        if have >= event.log_lines:
            return
        now = time.monotonic()
        since = self._waiting_for_logs.setdefault(key, now)
        if now - since < self.log_wait:
            raise NotYet(f"{event.log_lines - have} log line(s) of this attempt not read yet")
        with _bound(event):
            log.warning(
                "applying %s without %d log line(s) that never arrived",
                event.status,
                event.log_lines - have,
            )
        self._counts["log_lines_missing"] += event.log_lines - have

    # --8<-- [end:final]
    def _conclude(self, item: _Status, fixes: Pipeline) -> None:
        """Count and log what an event's writes came to."""
        event, task = item.event, item.task
        implied = item.replies.get("implied")
        if implied is not None and as_result(implied).accepted:
            self._counts["status_running_implied"] += 1
        if item.outcome is not None or task is None:
            return
        if "running" in item.replies:
            self._concluded_running(item, as_result(item.replies["running"]))
            return
        if item.decision is None or item.assignment is None:
            return  # stale or duplicate: counted when judged
        verdict = item.decision.verdict.value
        if "final" in item.replies:
            result = as_result(item.replies["final"])
        else:
            result = TransitionResult(True, "ok", verdict, event.attempt)
        metrics.record_outcome(task.task_type.value, verdict, result.accepted)
        if not result.accepted and item.assignment.entry:
            # Refused (a late report, a cancel won): the entry is stale either way.
            fixes.lrem(keys.processing(event.agent_id), 1, item.assignment.entry)
        self._waiting_for_logs.pop((event.task_id, event.attempt), None)
        self._counts[_counted_as(result)] += 1
        if result.accepted:
            log.info("applied %s reported by %s", event.status, event.agent_id)

    def _concluded_running(self, item: _Status, result: TransitionResult) -> None:
        event, task = item.event, item.task
        assert task is not None
        counted = _counted_as(result)
        if counted == "status_duplicate" and result.status not in (
            TaskStatus.RUNNING,
            *TERMINAL_STATES,
        ):
            # Neither running nor finished at this attempt: RUNNING repeats nothing there.
            item.outcome = Unprocessable(f"cannot apply RUNNING to a {result.status} task")
            return
        self._counts[counted] += 1
        if result.accepted:
            log.info("applied RUNNING reported by %s", event.agent_id)
            if event.attempt == 1 and task.created_at > 0:
                # From stage 3 the manager writes RUNNING, and it has the task's creation time.
                metrics.SCHEDULE_TO_START.labels(task.task_type.value).observe(
                    max(0.0, event.at - task.created_at)
                )

    def _queue_start(self, writes: Pipeline, event: StatusEvent) -> None:
        """RUNNING through the fenced transition script, as `RedisTaskStore.transition`."""
        arg = transition_arg(
            TaskStatus.RUNNING,
            attempt=event.attempt,
            epoch=event.epoch,
            actor=event.agent_id,
            fields={"startedAt": repr(event.at)},
            clear=("result", "error", "exitCode"),
        )
        all_keys = transition_keys(event.task_id)
        writes.evalsha(self._transition.sha, len(all_keys), *all_keys, arg)

    def _execute(self, writes: Pipeline, ops: list[tuple[_Status, str]]) -> list:
        """Run the queued writes; each reply stays with its event. EVALSHA, not the Script
        helper: in a pipeline that asks SCRIPT EXISTS first, a round trip per batch. A Redis
        that lost its script cache (a restart) answers NOSCRIPT: loaded, and those writes
        (which did nothing) sent again, in order."""
        if not ops:
            return []
        stack = list(writes.command_stack)  # execute() empties it
        replies = writes.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            self._transition.sha = self.client.script_load(self._transition.script)
            again = self.client.pipeline(transaction=False)
            for i in missing:
                args, options = stack[i]
                again.execute_command(*args, **options)
            for i, reply in zip(missing, again.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply  # Redis refused a write (OOM, read-only replica): try again later
        return replies

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


class _RoundFailed(Exception):
    """Redis failed a round. `carried`: it failed in the reads that carried the previous
    round's counts and fixes, so those are lost too and that round must be tried again."""

    def __init__(self, error: RedisError, carried: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.carried = carried


@dataclass
class _Status:
    """One status event on its way through a round: what was read, decided and written."""

    msg: Message
    event: StatusEvent
    index: int = 0  # its place in the batch
    data: dict[str, str] = field(default_factory=dict)  # the task's hash
    cursor: int = 0  # log lines of the attempt appended so far
    task: Task | None = None
    decision: Decision | None = None
    assignment: Assignment | None = None
    replies: dict[str, object] = field(default_factory=dict)  # write -> Redis's reply
    outcome: BaseException | None = None  # for the consumer: None = applied

    @property
    def where(self) -> tuple[str, int]:
        return self.msg.topic(), self.msg.partition()


def _rounds(items: list[_Status]) -> list[list[_Status]]:
    """Consecutive runs of events in which no task appears twice."""
    rounds: list[list[_Status]] = []
    seen: set[str] = set()
    for item in items:
        if not rounds or item.event.task_id in seen:
            rounds.append([])
            seen = set()
        rounds[-1].append(item)
        seen.add(item.event.task_id)
    return rounds


def _counted_as(result: TransitionResult) -> str:
    """The event counter a status's fenced transition reply adds to: applied; stale, a report
    from an attempt that was failed over (fencing doing its job); else duplicate, the task is
    already there at this attempt (a redelivery, or a cancel came first)."""
    if result.accepted:
        return "status_applied"
    if result.reason in ("stale_attempt", "stale_epoch"):
        return "status_stale"
    return "status_duplicate"


def _entry_of(entries: list[str], task_id: str, attempt: int) -> str | None:
    """The ledger entry of (task_id, attempt) among a processing list's entries."""
    # Only an entry that spells the id, or could spell it with an escape, is parsed: another
    # agent slot's entry is passed over without a JSON parse.
    return next(
        (e for e in entries if (task_id in e or "\\u" in e) and entry_ref(e) == (task_id, attempt)),
        None,
    )


def _bound(event: StatusEvent) -> AbstractContextManager[None]:
    return bind(
        taskId=event.task_id, attempt=event.attempt, agentId=event.agent_id, epoch=event.epoch
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
