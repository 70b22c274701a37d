"""The one agent of every stage. Its life, in numbered phases:

1. Recover: work left on this agent id's processing list (and, from stage 2, its inbox) by a
   previous incarnation goes back to the queue with attempt + 1. It is never resumed: that
   attempt is dead. (`WorkIntake.recover`)
2. Warm: executor set-up (the warm-fork zygotes) happens now, not in the first tasks.
3. Work: `capacity` worker threads each take an attempt (`WorkIntake.take`), run it in its own
   process group, and report how it ended (`EventSink.finished`). While it runs, a watcher
   thread asks `AttemptControl.why_stop` every 200 ms: a cancel, or a newer attempt (a
   failover gave the task away while this agent was cut off), kills the whole process group
   within the executor's next check (250 ms). A take or chained report that got no answer
   may have been carried out all the same: the agent then gives back whatever its lists hold
   beyond its workers' attempts (`WorkIntake.reconcile`, common/agent/holdings.py).
4. Heartbeat and housekeeping (one thread): `EventSink.heartbeat`, then the periodic jobs the
   bootstrap gave (stage 1: the reaper and the retry promoter).
5. Stop (SIGTERM): take nothing new; running tasks get `stop_grace` seconds to finish; past
   that they are killed and handed back (attempt + 1), never left stranded.

Where the work comes from and where reports go are ports (common/ports/agent.py) that each
stage's bootstrap fills in, so every stage has the same behaviour under faults:
- a backing service that does not answer (TransientError) never kills a thread: a take is
  tried again, a report is retried until it goes through, and nothing else waits on it;
- an executor that raises ends its attempt FAILED with the error, never RUNNING forever.

Pattern: Ports and Adapters (see the ports module) and Template Method for the attempt
(take -> start -> run -> report), whose steps the adapters fill in.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from common.agent.holdings import Holdings
from common.agent.metrics import observe_agent
from common.domain.outcome import AttemptReport
from common.executors.base import ExecutionResult
from common.executors.factory import ExecutorFactory
from common.observability import bind, get_logger, metrics, tracing
from common.ports.agent import (
    Assignment,
    AttemptControl,
    ChainedReport,
    EventSink,
    TransientError,
    WorkIntake,
)

log = get_logger("tasklab.agent")

STOPPING = "agent stopping"
# A stopping agent waits at most this long for its recent reports to be applied, and only for
# those sent within the horizon (older ones were applied long ago or never will be).
SETTLE_TIMEOUT = 10.0
SETTLE_HORIZON = 60.0
# A reconcile waits at most this long for the takes and reports in flight to end (one frozen
# in Redis ends at the client's socket timeout); past it, the next turn tries again.
RECONCILE_WAIT = 15.0


@dataclass(frozen=True)
class Periodic:
    """A housekeeping job the heartbeat thread runs every `interval` seconds."""

    name: str
    interval: float
    run: Callable[[], object]


class Agent:
    def __init__(
        self,
        agent_id: str,
        intake: WorkIntake,
        sink: EventSink,
        control: AttemptControl,
        executors: ExecutorFactory,
        *,
        capacity: int = 2,
        heartbeat_interval: float = 1.0,
        poll_timeout: float = 1.0,
        stop_grace: float = 30.0,
        housekeeping: Sequence[Periodic] = (),
        chain: ChainedReport | None = None,
        retry_wait: float = 0.5,
        watch_interval: float = 0.2,
    ) -> None:
        self.agent_id = agent_id
        self.intake = intake
        self.sink = sink
        self.control = control
        self.executors = executors
        self.capacity = capacity
        self.heartbeat_interval = heartbeat_interval
        self.poll_timeout = poll_timeout
        self.stop_grace = stop_grace
        self.housekeeping = list(housekeeping)
        self.chain = chain
        self.retry_wait = retry_wait
        self.watch_interval = watch_interval
        self.on_load_change: Callable[[int], None] | None = None
        self.stopping = threading.Event()  # set = take nothing new, finish what runs
        self.paused = threading.Event()  # set = take no new work (ZooKeeper SUSPENDED)
        self._abandon = threading.Event()  # set = kill what still runs (stop grace is over)
        self._load = 0
        self._load_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        # (when, attempt) of the final reports sent through the sink, for the stop's wait.
        self._reported: deque[tuple[float, Assignment]] = deque(maxlen=256)
        # Attempts running now, and why the watcher says one must stop ("" = keep running).
        self._running: dict[tuple[str, int], Assignment] = {}
        self._stop_reasons: dict[tuple[str, int], str] = {}
        # The entries its workers hold, against what its lists hold after a lost answer.
        self.holdings = Holdings()
        self._heartbeat_thread: threading.Thread | None = None
        self._beat_stop = threading.Event()
        self.completed = 0
        self.handed_back = 0
        self.last_heartbeat: float | None = None  # monotonic; when a heartbeat last went through

    @property
    def load(self) -> int:
        return self._load

    # -- 1, 2: recover and warm ----------------------------------------------------------
    def start(self) -> None:
        self.intake.open(self.stopping, self.paused)
        requeued = self._until_answered(self.intake.recover, "recover")
        if requeued:
            log.warning("re-queued %d task(s) left by a previous run of this agent", requeued)
        self.executors.warm(self.capacity)
        observe_agent(self)
        self._heartbeat_thread = self._spawn(self._heartbeat_loop, "heartbeat")
        self._spawn(self._watch_loop, "watch")
        for n in range(self.capacity):
            self._workers.append(self._spawn(self._work_loop, f"worker-{n}"))
        log.info(
            "agent %s started: capacity %d, intake %s, reports %s, executors %s",
            self.agent_id,
            self.capacity,
            type(self.intake).__name__,
            type(self.sink).__name__,
            ",".join(t.value for t in self.executors.supported()),
        )

    # -- 5: stop -------------------------------------------------------------------------
    # --8<-- [start:stop]
    def stop(self, grace: float | None = None) -> None:
        """Take nothing new; let running tasks finish within the grace period; kill and hand
        back what is still running after it; say goodbye."""
        self.stopping.set()
        grace = self.stop_grace if grace is None else grace
        if not self._join(self._workers, grace):
            log.warning(
                "stop grace of %.0fs is over with %d task(s) running: killing them and "
                "handing them back",
                grace,
                self._load,
            )
            self._abandon.set()
            self._join(self._workers, self.executors.limits.kill_grace_seconds + 5.0)
        if self._abandon.is_set():
            # The killed attempts' entries are still on the processing list: they go back
            # to the queue with attempt + 1, exactly as a restarted agent would give them back.
            self.handed_back = self._until_answered(self.intake.recover, "hand back", 10.0) or 0
        self._beat_stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(5.0)
        self._quietly(lambda: self.sink.heartbeat(0, self.capacity, stopping=True))
        self._quietly(self.sink.close)
        self._await_settled(SETTLE_TIMEOUT)
        self._quietly(self.intake.close)
        self.executors.close()
        log.info(
            "agent %s stopped after %d task(s)%s",
            self.agent_id,
            self.completed,
            f"; handed back {self.handed_back}" if self.handed_back else "",
        )

    # --8<-- [end:stop]

    def run_forever(self) -> None:
        self.start()
        try:
            while not self.stopping.wait(0.5):
                pass
        finally:
            self.stop()

    # -- 3: work -------------------------------------------------------------------------
    def _work_loop(self) -> None:
        # A chained report may bring the next attempt back with it: that attempt is already
        # ours (RUNNING), so it runs even if a stop was asked for in the meantime.
        pending: Assignment | None = None
        while pending is not None or not self.stopping.is_set():
            if pending is None and self.paused.is_set():
                self.stopping.wait(0.05)
                continue
            assignment = pending
            pending = None
            if assignment is None:
                if self.holdings.due():
                    self._reconcile()
                try:
                    with self.holdings.call():
                        assignment = self.intake.take(self.poll_timeout)
                        if assignment is not None:
                            self.holdings.hold(assignment.entry)
                except Exception as exc:  # noqa: BLE001 - a worker never dies of its intake
                    # The take may have been carried out all the same: reconcile.
                    self.holdings.unanswered()
                    log.warning("taking work failed (%s); retrying", exc)
                    self.stopping.wait(self.retry_wait)
                    continue
            if assignment is not None:
                try:
                    pending = self._attempt(assignment)
                finally:
                    self.holdings.release(assignment.entry)

    def _reconcile(self) -> None:
        """Give back what this agent's lists hold beyond its workers' attempts: what a call
        that got no answer put there (common/agent/holdings.py)."""
        with self.holdings.alone(RECONCILE_WAIT) as held:
            if held is None:
                return  # a call still in flight (a frozen Redis): the next turn tries again
            try:
                given = self.intake.reconcile(held)
            except TransientError as exc:
                self.holdings.unanswered()
                log.warning("reconciling this agent's lists failed (%s); retrying", exc)
                return
            self.holdings.reconciled()
        if given:
            log.warning(
                "gave back %d task(s) taken for this agent by calls that got no answer", given
            )

    # --8<-- [start:attempt]
    def _attempt(self, assignment: Assignment) -> Assignment | None:
        """Run one attempt and report it; returns the next attempt if the report took one."""
        task = assignment.task
        with (
            bind(
                taskId=task.task_id,
                agentId=self.agent_id,
                attempt=assignment.attempt,
                epoch=assignment.epoch,  # the leader's that placed it (stage 2 on; 0 is left out)
            ),
            self._traced(assignment) as span,
        ):
            self._add_load(1)
            try:
                self._until_answered(lambda: self.sink.started(assignment), "report start")
                _count_start(assignment)
                reasons: list[str] = []
                lines_seen = [0]
                outcome = self._execute(assignment, reasons, lines_seen)
                if reasons and reasons[-1] == STOPPING:
                    # Killed at a forced stop: the stop hands the attempt back (attempt + 1).
                    log.info("task killed at stop; handed back")
                    return None
                report = _report_of(outcome, reasons)
                tracing.set_attributes(
                    span,
                    **{
                        "tasklab.exit_code": report.exit_code,
                        "tasklab.outcome": _verdict_word(report),
                    },
                )
                metrics.TASK_RUN_SECONDS.labels(
                    task.task_type.value,
                    metrics.attempt_outcome(
                        report.success, report.timed_out, report.cancelled, report.superseded
                    ),
                ).observe(report.duration)
                log.info(
                    "task %s in %.3fs%s",
                    _verdict_word(report),
                    report.duration,
                    f": {report.error}" if report.error and not report.success else "",
                )
                self.completed += 1
                return self._report(assignment, report, outcome.lines)
            finally:
                self._add_load(-1)

    def _traced(self, assignment: Assignment) -> AbstractContextManager[Any]:
        """Span "run" of the attempt's trace: under the dispatch's traceparent header (stage 3
        on), else under the task's stored one (stages 1 and 2), else a new trace linked to the
        stored one (stage 1's later attempts, which no scheduler gave a trace of their own).
        Reports sent inside it carry it to the manager."""
        if not tracing.enabled():
            return tracing.span("run")
        parent, links = assignment.traceparent or None, []
        if parent is None:
            parent, links = tracing.attempt_parent(assignment.task, assignment.attempt)
        return tracing.span(
            "run",
            parent=parent,
            root=parent is None,
            links=links,
            kind="consumer",
            attributes={
                "tasklab.task_id": assignment.task_id,
                "tasklab.attempt": assignment.attempt,
                "tasklab.agent_id": self.agent_id,
                "tasklab.task_type": assignment.task.task_type.value,
            },
        )

    def _execute(
        self, assignment: Assignment, reasons: list[str], lines_seen: list[int]
    ) -> ExecutionResult:
        task = assignment.task
        if task.attempt != assignment.attempt:
            # The task is given the attempt it runs as (TASKLAB_ATTEMPT), whatever the intake
            # built it from.
            task = task.model_copy(update={"attempt": assignment.attempt})

        key = (assignment.task_id, assignment.attempt)

        def should_stop() -> bool:
            # Never blocks: the watcher thread asks the store; a store that hangs delays only
            # the watcher, never the timeout, which the executor enforces on its own clock.
            reason = STOPPING if self._abandon.is_set() else self._stop_reasons.get(key, "")
            if reason:
                reasons.append(reason)
            return bool(reason)

        on_line = None
        if self.sink.streams_lines:

            def on_line(stream: str, text: str) -> None:
                lines_seen[0] += 1
                self.sink.line(assignment, lines_seen[0], stream, text)

        self._running[key] = assignment
        try:
            log.info("running %s task %r", task.task_type.value, task.task_name)
            return self.executors.create(task.task_type).run(
                task, on_line=on_line, should_cancel=should_stop
            )
        except Exception as exc:  # noqa: BLE001 - report it rather than leave it RUNNING
            log.exception("executor failed")
            return ExecutionResult(False, None, "", f"agent error: {exc}", [])
        finally:
            self._running.pop(key, None)
            self._stop_reasons.pop(key, None)

    def _report(
        self, assignment: Assignment, report: AttemptReport, lines: list[str]
    ) -> Assignment | None:
        if self.chain is not None and not (self.stopping.is_set() or self.paused.is_set()):
            try:
                with self.holdings.call():
                    taken = self.chain.finish_and_take(assignment, report, lines)
                    if taken is not None:
                        self.holdings.hold(taken.entry)
                    return taken
            except TransientError as exc:
                # The next entry may have been taken all the same: reconcile.
                self.holdings.unanswered()
                log.warning("report failed (%s); retrying", exc)
        self._until_answered(lambda: self.sink.finished(assignment, report, lines), "report")
        self._reported.append((time.monotonic(), assignment))
        return None

    def _await_settled(self, timeout: float) -> None:
        """Before the agent leaves (and its registration with it), wait until the reports it
        sent lately are applied: a leader seeing the agent gone re-queues whatever it still
        finds RUNNING there, and a report still on the bus would lose that race and its task
        would run again. Bounded: a store or manager that does not answer costs `timeout`."""
        since = time.monotonic() - SETTLE_HORIZON
        waiting = [a for at, a in self._reported if at >= since]
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            waiting = [a for a in waiting if not self.control.settled(a)]
            if waiting:
                time.sleep(0.05)
        if waiting:
            log.warning("left with %d report(s) not yet applied after %.0fs", len(waiting), timeout)

    # --8<-- [end:attempt]
    # -- 4: heartbeat and housekeeping ---------------------------------------------------
    # --8<-- [start:heartbeat]
    def _heartbeat_loop(self) -> None:
        due = {job.name: 0.0 for job in self.housekeeping}
        while True:
            self._quietly(self._heartbeat, "heartbeat")
            now = time.monotonic()
            for job in self.housekeeping:
                if now >= due[job.name]:
                    due[job.name] = now + job.interval
                    self._quietly(job.run, job.name)
            if self._beat_stop.wait(self.heartbeat_interval):
                return

    # --8<-- [end:heartbeat]

    def _heartbeat(self) -> None:
        self.sink.heartbeat(self._load, self.capacity)
        self.last_heartbeat = time.monotonic()  # read by /ready and /metrics

    # -- the watcher: is a running attempt still wanted? -----------------------------------
    # --8<-- [start:watch]
    def _watch_loop(self) -> None:
        while not self._beat_stop.wait(self.watch_interval):
            for key, assignment in list(self._running.items()):
                try:
                    reason = self.control.why_stop(assignment)
                except Exception:  # noqa: BLE001 - cannot tell: keep running
                    reason = ""
                if reason and key in self._running:
                    self._stop_reasons[key] = reason

    # --8<-- [end:watch]

    # -- internals -----------------------------------------------------------------------
    def _until_answered(self, call: Callable[[], object], what: str, limit: float | None = None):
        """Run `call` until a backing service answers it.

        A report must not be lost to a Redis or broker blip, and must not be dropped while
        the agent still runs: it is retried until it goes through. Only a forced stop (or
        `limit` seconds) ends the retries; the attempt's entry then stays on the processing
        list, and the next incarnation (or a failover) gives it back with attempt + 1.
        """
        deadline = None if limit is None else time.monotonic() + limit
        warned = False
        while True:
            try:
                return call()
            except TransientError as exc:
                if not warned:
                    log.warning("%s: %s; retrying until it answers", what, exc)
                    warned = True
            if self._abandon.is_set() or (deadline is not None and time.monotonic() > deadline):
                log.error("%s given up at stop; the next start recovers it", what)
                return None
            time.sleep(self.retry_wait)

    def _quietly(self, call: Callable[[], object], what: str = "") -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a blip must not end the heartbeat thread
            log.warning("%s failed (%s); next time", what or getattr(call, "__name__", "call"), exc)

    def _join(self, threads: list[threading.Thread], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _add_load(self, delta: int) -> None:
        with self._load_lock:
            self._load += delta
            # Reported under the lock, so two workers finishing together cannot publish their
            # counts out of order and leave a stale load behind. The callback must not block.
            if self.on_load_change is not None:
                self.on_load_change(self._load)

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=f"{self.agent_id}-{name}", daemon=True)
        t.start()
        return t


def _count_start(assignment: Assignment) -> None:
    task_type = assignment.task.task_type.value
    metrics.TASKS_STARTED.labels(task_type).inc()
    # A first attempt whose creation time came with it (stages 1-2, where this agent's claim
    # writes RUNNING): how long it waited. From stage 3 the manager measures it, as it applies
    # RUNNING; a retry's wait includes its deliberate backoff, so it is not counted.
    if assignment.attempt == 1 and assignment.task.created_at > 0:
        waited = max(0.0, time.time() - assignment.task.created_at)
        metrics.SCHEDULE_TO_START.labels(task_type).observe(waited)


def _report_of(outcome: ExecutionResult, reasons: list[str]) -> AttemptReport:
    """The executor's result as the domain's report; why it was killed, if it was."""
    reason = reasons[-1] if reasons else ""
    superseded = outcome.cancelled and reason.startswith("superseded")
    error = outcome.error
    if outcome.cancelled and reason:
        error = f"{reason}; process group killed"
    return AttemptReport(
        success=outcome.success,
        exit_code=outcome.exit_code,
        result=outcome.result,
        error=error,
        timed_out=outcome.timed_out,
        cancelled=outcome.cancelled and not superseded,
        superseded=superseded,
        duration=outcome.duration,
    )


def _verdict_word(report: AttemptReport) -> str:
    if report.superseded:
        return "SUPERSEDED"
    if report.success:
        return "SUCCESS"
    return "CANCELLED" if report.cancelled else "FAILED"
