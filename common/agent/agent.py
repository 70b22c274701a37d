"""The agent's life, in numbered phases:

1. Recover: work left on this agent's own processing list by a previous incarnation with the
   same id goes back to the queue with attempt + 1 (it is never resumed: that attempt is dead).
2. Heartbeat: a key with a TTL says "alive"; a housekeeping thread refreshes it, re-queues the
   work of agents whose key expired (the reaper), and releases retries whose backoff elapsed.
   From stage 2 on, liveness comes from ZooKeeper and the leader does the re-queueing: such an
   agent runs with `reaper=False` and keeps the key only so `tasklab agents` can show it.
3. Work: `capacity` worker threads each take a task (the claim strategy), run it in its own
   process group, and report SUCCESS / FAILED / retry through the fenced store.
4. Stop: on SIGTERM, stop taking work, let running tasks finish (bounded), stop heartbeating.

Pattern: Strategy (introduced in stage 1) for *how* a task is claimed: `NaiveClaim` (BRPOP,
loses a task if the agent dies) and `ReliableClaim` (BLMOVE + reaper) are interchangeable.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from common.adapters.redis_queue import Claim, RedisWorkQueue, Rejected
from common.executors.factory import ExecutorFactory
from common.observability import bind, get_logger

log = get_logger("tasklab.agent")


# --8<-- [start:claim-strategy]
class ClaimStrategy(ABC):
    """How an agent takes its next task off the queue."""

    tracked: bool  # does the message stay on a processing list while the task runs?
    chains = False  # may a task's report also claim the next task (one round trip for both)?

    @abstractmethod
    def take(self, queue: RedisWorkQueue, agent_id: str, timeout: float) -> str | None: ...

    def next(self, queue: RedisWorkQueue, agent_id: str, timeout: float) -> Claim | Rejected | None:
        """Take a message and claim it; None if none came within `timeout`."""
        raw = self.take(queue, agent_id, timeout)
        return None if raw is None else queue.claim(agent_id, raw, tracked=self.tracked)


class ReliableClaim(ClaimStrategy):
    """BLMOVE to `processing:{agentId}`: the message is never only in this process's memory."""

    tracked = True
    chains = True

    def take(self, queue: RedisWorkQueue, agent_id: str, timeout: float) -> str | None:
        return queue.take_reliably(agent_id, timeout)

    def next(self, queue: RedisWorkQueue, agent_id: str, timeout: float) -> Claim | Rejected | None:
        # While work is queued, one Lua call moves the next message and claims it; only an
        # empty queue costs the blocking BLMOVE and a claim of its own.
        got = queue.take_and_claim(agent_id)
        if isinstance(got, str):
            return queue.claim(agent_id, got, tracked=True)
        return got if got is not None else super().next(queue, agent_id, timeout)


# --8<-- [end:claim-strategy]


class Agent:
    def __init__(
        self,
        agent_id: str,
        queue: RedisWorkQueue,
        executors: ExecutorFactory,
        claim: ClaimStrategy | None = None,
        capacity: int = 2,
        heartbeat_interval: float = 1.0,
        heartbeat_ttl: float = 5.0,
        reaper_interval: float = 1.0,
        poll_timeout: float = 1.0,
        reaper: bool = True,
        on_load_change: Callable[[int], None] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.queue = queue
        self.executors = executors
        self.claim = claim or ReliableClaim()
        self.capacity = capacity
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.reaper_interval = reaper_interval
        self.poll_timeout = poll_timeout
        self.reaper = reaper
        self.on_load_change = on_load_change
        self.stopping = threading.Event()
        self.paused = threading.Event()  # set = take no new work (stage 2: ZooKeeper SUSPENDED)
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.completed = 0

    @property
    def load(self) -> int:
        return self._busy

    # -- phases --------------------------------------------------------------------------
    def start(self) -> None:
        if self.claim.tracked:
            requeued, _ = self.queue.reap(self.agent_id, actor=self.agent_id, force=True)
            if requeued:
                log.warning("re-queued %d task(s) left by a previous run of this agent", requeued)
        self.queue.heartbeat(self.agent_id, self.heartbeat_ttl)
        # Executor set-up (the PYTHON_SCRIPT zygotes) happens here, not in the first tasks.
        self.executors.warm(self.capacity)
        self._spawn(self._housekeeping, "housekeeping")
        for n in range(self.capacity):
            self._spawn(self._work_loop, f"worker-{n}")
        log.info(
            "agent %s started: capacity %d, claim %s, executors %s",
            self.agent_id,
            self.capacity,
            type(self.claim).__name__,
            ",".join(t.value for t in self.executors.supported()),
        )

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        # Say goodbye at once rather than let the heartbeat expire: `tasklab agents` shows the
        # truth, and the reaper need not wait a TTL for work a tracked agent could not finish.
        self.queue.forget(self.agent_id)
        self.executors.close()
        log.info("agent %s stopped after %d task(s)", self.agent_id, self.completed)

    def run_forever(self) -> None:
        self.start()
        try:
            while not self.stopping.wait(0.5):
                pass
        finally:
            self.stop()

    # -- internals -----------------------------------------------------------------------
    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=f"{self.agent_id}-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    # --8<-- [start:housekeeping]
    def _housekeeping(self) -> None:
        next_reap = 0.0
        while not self.stopping.wait(min(self.heartbeat_interval, self.reaper_interval)):
            try:
                self.queue.heartbeat(self.agent_id, self.heartbeat_ttl)
                now = time.monotonic()
                if self.reaper and now >= next_reap:
                    next_reap = now + self.reaper_interval
                    self.queue.reap_dead_agents(actor=f"reaper:{self.agent_id}")
                    self.queue.promote_due()
            except Exception:  # noqa: BLE001 - a Redis blip must not kill the heartbeat thread
                log.exception("housekeeping failed; retrying")

    # --8<-- [end:housekeeping]

    def _work_loop(self) -> None:
        # A report may bring the next task back with it: that task is already RUNNING and
        # ours, so it runs even if a stop was asked for in the meantime.
        pending: Claim | Rejected | None = None
        while pending is not None or not self.stopping.is_set():
            if pending is None and self.paused.is_set():
                self.stopping.wait(0.1)
                continue
            try:
                claimed = pending
                pending = None
                if claimed is None:
                    claimed = self.claim.next(self.queue, self.agent_id, self.poll_timeout)
                if claimed is None:
                    continue
                pending = self._handle(claimed)
            except Exception:  # noqa: BLE001 - one bad task or a Redis blip must not kill a worker
                log.exception("worker error; continuing")
                self.stopping.wait(0.5)

    def _handle(self, claimed: Claim | Rejected) -> Claim | Rejected | None:
        if isinstance(claimed, Rejected):
            log.info("skipped a message: %s", claimed.reason)
            return None
        return self.run_claimed(claimed, take_next=self.claim.chains)

    # --8<-- [start:run-claimed]
    def run_claimed(self, claimed: Claim, take_next: bool = False) -> Claim | Rejected | None:
        """Run a claimed task and report it. With `take_next` (and no stop or pause asked
        for), the report also claims the next task, in the same round trip, and returns it."""
        task = claimed.task
        taken: Claim | Rejected | str | None = None
        with bind(taskId=task.task_id, agentId=self.agent_id, attempt=claimed.attempt):
            self._add_load(1)
            try:
                log.info("running %s task %r", task.task_type.value, task.task_name)
                executor = self.executors.create(task.task_type)
                outcome = executor.run(
                    task, should_cancel=lambda: self.queue.is_cancelled(task.task_id)
                )
                if take_next and not (self.stopping.is_set() or self.paused.is_set()):
                    result, taken = self.queue.finish_and_take(self.agent_id, claimed, outcome)
                else:
                    result = self.queue.finish(
                        self.agent_id, claimed, outcome, tracked=self.claim.tracked
                    )
                if result.accepted:
                    log.info(
                        "task %s in %.3fs%s",
                        result.status,
                        outcome.duration,
                        f": {outcome.error}" if outcome.error else "",
                    )
                self.completed += 1
            finally:
                self._add_load(-1)
        if isinstance(taken, str):
            # Moved but not claimable in the script (hand-pushed, dispatched): the full claim.
            return self.queue.claim(self.agent_id, taken, tracked=self.claim.tracked)
        return taken

    # --8<-- [end:run-claimed]

    def _add_load(self, delta: int) -> None:
        with self._busy_lock:
            self._busy += delta
            # Reported under the lock, so two workers finishing together cannot publish their
            # counts out of order and leave a stale load behind. The callback must not block.
            if self.on_load_change is not None:
                self.on_load_change(self._busy)
