"""The scheduler: run as several instances, of which only the elected leader moves tasks.

A leader's term, in numbered phases:

1. Elected: raise `fence:scheduler` to this term's epoch. From now on a deposed leader's fenced
   writes are rejected, so nothing below can be undone by a predecessor that wakes up late.
   The first term starts the live-agents view: a standby follows no agent's node.
2. Recover: sweep `queue:scheduling` (messages a dead leader took but never dispatched) back
   to `queue:pending`, and fail over every agent that has work in Redis but no node in
   ZooKeeper (it may have died while there was no leader to notice).
3. Place, a batch at a time: wait until some live agent has room in its inbox; move as many
   messages as the inboxes have room for (at most `batch_size`) from `queue:pending` to
   `queue:scheduling`; ask the placement strategy for an agent for each, counting what the
   batch already gave each agent; then, in one fenced script, PENDING -> SCHEDULED ->
   DISPATCHED for each, pushed onto `agent:{agentId}:tasks`. Every write carries the epoch
   and is fenced: a deposed leader's batch is refused whole. (With tracing on, or a
   `batch_size` of 1, one task at a time, each placement its own span.)
4. Watch: when an agent's node disappears, its DISPATCHED and RUNNING tasks go back to PENDING
   with attempt + 1 (failover); a periodic sweep repeats phase 2 for anything a watch missed,
   and releases retries whose backoff elapsed.
5. Coordinate composites (when given a coordinator): a thread of the term's own releases
   their children onto `queue:pending`, where phase 3 places them, and finishes their parents
   (common/scheduling/composite.py); its writes carry the same epoch. Fire cron schedules
   (when given a firer): another thread of the term creates each due run onto
   `queue:pending` (common/scheduling/schedules.py), fenced with the same epoch too.
6. The term ends when the ZooKeeper session is lost or a fenced write says a newer leader
   exists; the scheduler then contends again as a standby. While SUSPENDED it places nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError

from common.coordination.election import LeaderElection, Term
from common.coordination.live_agents import LiveAgentsView
from common.domain.task import Task
from common.observability import bind, get_logger, metrics, tracing
from common.ports.dispatcher import Dispatcher, NotScheduled, Scheduled
from common.scheduling.composite import CompositeCoordinator
from common.scheduling.fencing import Deposed
from common.scheduling.metrics import observe_scheduler
from common.scheduling.schedules import ScheduleFirer
from common.scheduling.strategies import Candidate, PlacementStrategy

__all__ = ["Deposed", "Scheduler", "SchedulerStats"]

log = get_logger("tasklab.scheduler")

# While every live agent's inbox is full, the leader looks again after this long, doubling up
# to the last: an inbox of two entries of ~3 ms each empties in ~6 ms, and an agent waiting for
# the refill is throughput lost, while a look is one pipelined LLEN per agent.
FULL_INBOX_FIRST_WAIT = 0.001
FULL_INBOX_LAST_WAIT = 0.02


@dataclass
class SchedulerStats:
    terms: int = 0
    dispatched: int = 0
    failed_over: int = 0
    recovered: int = 0
    rejected_stale: int = 0


class Scheduler:
    def __init__(
        self,
        scheduler_id: str,
        dispatcher: Dispatcher,
        view: LiveAgentsView,
        election: LeaderElection,
        strategy: PlacementStrategy,
        agent_backlog: int = 2,
        poll_timeout: float = 0.5,
        sweep_interval: float = 1.0,
        housekeeping: Sequence[Callable[[], object]] = (),
        coordinator: CompositeCoordinator | None = None,
        firer: ScheduleFirer | None = None,
        batch_size: int = 16,
    ) -> None:
        self.scheduler_id = scheduler_id
        # The most messages placed in one fenced script (phase 3); 1 places one at a time.
        self.batch_size = batch_size
        # Composite tasks' coordinator and cron schedules' firer, run during a term only
        # (phase 5).
        self.coordinator = coordinator
        self.firer = firer
        # What only the leader does, on its sweep (the retention of finished tasks).
        self.housekeeping = list(housekeeping)
        self.dispatcher = dispatcher
        self.view = view
        self.election = election
        self.strategy = strategy
        self.agent_backlog = agent_backlog
        self.poll_timeout = poll_timeout
        self.sweep_interval = sweep_interval
        self.stopping = threading.Event()
        self.stats = SchedulerStats()
        self._departed: set[str] = set()
        self._departed_lock = threading.Lock()
        self._view_started = False
        self.actor = f"scheduler:{scheduler_id}"

    # -- lifecycle -------------------------------------------------------------------------
    def run_forever(self) -> None:
        self.view.on_departure(self._on_departure)
        # The view is started by the first term (phase 1), not here: a standby that never
        # leads follows no agent's node, so it costs nothing while agents report their load.
        observe_scheduler(self)
        log.info(
            "scheduler %s started: strategy %s, contending for leadership",
            self.scheduler_id,
            self.strategy.name,
        )
        self.election.run(self._lead, self.stopping)
        self.view.stop()
        log.info("scheduler %s stopped", self.scheduler_id)

    def stop(self) -> None:
        self.stopping.set()
        self.election.cancel()
        self.view.changed.set()

    # -- one term --------------------------------------------------------------------------
    # --8<-- [start:lead]
    def _lead(self, term: Term) -> None:
        raised, fence = self.dispatcher.raise_fence(term.epoch)
        if not raised:
            # Only possible if Redis outlived ZooKeeper's data (a wiped ZooKeeper restarts
            # czxids from zero): no write of ours could ever pass the fence.
            log.error(
                "elected with epoch %d but fence:scheduler is %d: ZooKeeper's data is older "
                "than Redis's; stepping down to contend again in 5 s with a higher czxid "
                "(delete fence:scheduler to lead at once, if the wipe was intended)",
                term.epoch,
                fence,
            )
            self.stopping.wait(5)
            return
        self.stats.terms += 1
        log.info("became leader with epoch %d (node %s)", term.epoch, term.node)
        if not self._view_started:
            # Its watches read /live-agents and every agent's node before start() returns, so
            # the recovery sweep below sees every live agent; one that left while no view was
            # kept is one the sweep fails over (it has work in Redis and no node).
            self.view.start()
            self._view_started = True
        with self._departed_lock:
            self._departed.clear()
        next_sweep = 0.0
        idle = 0.05
        full = FULL_INBOX_FIRST_WAIT
        # Set when the term is over, by this loop or by the coordinator's thread (Deposed).
        over = threading.Event()
        workers = [
            w
            for w in (
                self._start_worker("composites", self.coordinator, term, over),
                self._start_worker("schedules", self.firer, term, over),
            )
            if w is not None
        ]
        try:
            while not self.stopping.is_set() and not term.lost.is_set() and not over.is_set():
                if term.suspended.is_set():
                    self.stopping.wait(0.05)
                    continue
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(term)
                    next_sweep = now + self.sweep_interval
                self._fail_over_departed(term)
                agents, candidates = self._candidates()
                if not candidates:
                    # Tasks stay PENDING in the queue, where any agent can still get them.
                    # No live agent at all: back off, woken early by the view changing.
                    self.view.changed.clear()
                    if not agents:
                        self.view.changed.wait(idle)
                        idle = min(idle * 2, 1.0)
                        continue
                    # Live agents with full inboxes: a busy agent takes the next entry every
                    # few milliseconds, and one whose inbox empties before the refill idles.
                    # Where agents say when they take one (stage 3), wait for that; else look
                    # again after 1 ms, then 2, 4... up to 20 ms while they stay full.
                    if not self.dispatcher.await_room(FULL_INBOX_LAST_WAIT):
                        self.view.changed.wait(full)
                        full = min(full * 2, FULL_INBOX_LAST_WAIT)
                    continue
                idle = 0.05
                full = FULL_INBOX_FIRST_WAIT
                if self.batch_size <= 1 or tracing.enabled():
                    # One task at a time: each placement is its own "schedule" span.
                    raw = self.dispatcher.take(self.poll_timeout)
                    if raw is not None:
                        self._place(raw, term, candidates)
                    continue
                # As many as the inboxes have room for: each is dispatched at once.
                room = sum(self.agent_backlog - c.queued for c in candidates)
                raws = self.dispatcher.take_batch(self.poll_timeout, min(room, self.batch_size))
                if raws:
                    self._place_batch(raws, term, candidates)
        except Deposed:
            log.warning("a newer leader holds the fence; stepping down (epoch %d)", term.epoch)
        except RedisError as exc:
            # Give the term up rather than lead blind; contending again re-runs recovery.
            log.error("Redis failed while leading (%s); stepping down", exc)
            self.stopping.wait(1.0)
        finally:
            # No write of this term's coordinator may follow the term: it is stopped and
            # joined before the scheduler contends again (its writes are fenced regardless).
            over.set()
            for worker in workers:
                # A tick is a handful of round trips; one stuck on a dead Redis socket must not
                # keep the scheduler from contending again (its writes are fenced regardless).
                worker.join(timeout=5.0)
                if worker.is_alive():
                    log.warning("the %s thread of epoch %d is still busy", worker.name, term.epoch)
        log.info("leadership ended (epoch %d)", term.epoch)

    # --8<-- [end:lead]

    def _start_worker(
        self,
        what: str,
        worker: CompositeCoordinator | ScheduleFirer | None,
        term: Term,
        over: threading.Event,
    ) -> threading.Thread | None:
        """A worker of the term (the composite coordinator, the schedule firer) on a thread of
        its own: the lead loop blocks on `queue:pending` for up to `poll_timeout`, and
        composites and schedules must not wait for it."""
        if worker is None:
            return None

        def work() -> None:
            while not over.is_set():
                try:
                    worker.run(term.epoch, over, paused=term.suspended)
                except Deposed:
                    self.stats.rejected_stale += 1
                    log.warning(
                        "a %s write was stale: a newer leader holds the fence; "
                        "stepping down (epoch %d)",
                        what,
                        term.epoch,
                    )
                    over.set()
                    self.view.changed.set()  # wake the lead loop if it waits for agents
                except Exception:
                    # A bug must not end the term (placement goes on) nor spin: log, go on.
                    log.exception("the %s thread failed; running it again in 1 s", what)
                    over.wait(1.0)

        thread = threading.Thread(target=work, name=f"{what}-{term.epoch}", daemon=True)
        thread.start()
        return thread

    # --8<-- [start:place]
    def _place(self, raw: str, term: Term, candidates: list[Candidate]) -> None:
        scheduled = self.dispatcher.schedule(raw, term.epoch, self.actor)
        if isinstance(scheduled, NotScheduled):
            if scheduled.reason == "stale_epoch":
                self.stats.rejected_stale += 1
                raise Deposed
            log.info("skipped a message: %s (status %s)", scheduled.reason, scheduled.status)
            return
        task = scheduled.task
        with (
            bind(taskId=task.task_id, attempt=scheduled.attempt, epoch=term.epoch),
            self._traced(scheduled, term) as (scheduled, span),
        ):
            if self._place_scheduled(scheduled, term, candidates):
                return
            able = [c for c in candidates if task.task_type.value in c.agent.task_types]
            chosen = self.strategy.choose(task, able)
            tracing.set_attributes(span, **{"tasklab.agent_id": chosen.agent_id})
            result = self.dispatcher.dispatch(scheduled, chosen.agent_id, term.epoch, self.actor)
            self._check(result.accepted, result.reason)
            if result.accepted:
                self.stats.dispatched += 1
                log.info(
                    "dispatched to %s (%s; busy %d/%d)",
                    chosen.agent_id,
                    self.strategy.name,
                    chosen.busy,
                    chosen.agent.capacity,
                )
            else:
                log.info("dispatch refused: %s (task is %s)", result.reason, result.status)

    # --8<-- [end:place]

    def _place_scheduled(
        self, scheduled: Scheduled, term: Term, candidates: list[Candidate]
    ) -> bool:
        """The placements that are not a strategy's choice: a pinned task, and a task no
        candidate runs (back to PENDING). False: neither, for the strategy to choose."""
        task = scheduled.task
        if task.pinned_agent:
            self._place_pinned(scheduled, term, candidates)
            return True
        if any(task.task_type.value in c.agent.task_types for c in candidates):
            return False
        result = self.dispatcher.unschedule(
            scheduled,
            term.epoch,
            self.actor,
            f"no live agent runs {task.task_type.value}",
        )
        self._check(result.accepted, result.reason)
        log.warning("no live agent runs %s; task back to PENDING", task.task_type.value)
        self.view.changed.wait(0.5)
        return True

    # --8<-- [start:place-batch]
    def _place_batch(self, raws: list[str], term: Term, candidates: list[Candidate]) -> None:
        """Place the messages just taken, in one fenced round trip: the strategy chooses for
        each in turn and sees the load the batch already added (an agent whose inbox the batch
        filled is no longer a candidate). A task the batch cannot place (pinned, or of a type
        no candidate runs) comes back SCHEDULED and goes the one-task way."""
        room = {c.agent_id: c for c in candidates}
        chosen: dict[str, Candidate] = {}

        def choose(task: Task) -> str | None:
            if task.pinned_agent:
                return None
            able = [c for c in room.values() if task.task_type.value in c.agent.task_types]
            if not able:
                return None
            pick = self.strategy.choose(task, able)
            chosen[task.task_id] = pick
            if pick.queued + 1 >= self.agent_backlog:
                del room[pick.agent_id]
            else:
                room[pick.agent_id] = replace(pick, queued=pick.queued + 1)
            return pick.agent_id

        placed = self.dispatcher.place_batch(raws, term.epoch, self.actor, choose)
        for p in placed:
            outcome = p.outcome
            if isinstance(outcome, NotScheduled):
                if outcome.reason == "stale_epoch":
                    self.stats.rejected_stale += 1
                    raise Deposed
                log.info("skipped a message: %s (status %s)", outcome.reason, outcome.status)
            elif isinstance(outcome, Scheduled):
                with bind(taskId=outcome.task.task_id, attempt=outcome.attempt, epoch=term.epoch):
                    if outcome.task.pinned_agent:
                        self._place_pinned(outcome, term, list(room.values()))
                    elif not self._place_scheduled(outcome, term, candidates):
                        # Agents run its type, but the batch filled their inboxes first.
                        self._unschedule_full(outcome, term)
            else:
                self._check(outcome.accepted, outcome.reason)
                pick = chosen[p.task_id or ""]
                with bind(taskId=p.task_id, attempt=outcome.attempt, epoch=term.epoch):
                    if outcome.accepted:
                        self.stats.dispatched += 1
                        log.info(
                            "dispatched to %s (%s; busy %d/%d)",
                            pick.agent_id,
                            self.strategy.name,
                            pick.busy,
                            pick.agent.capacity,
                        )
                    else:
                        log.info(
                            "dispatch refused: %s (task is %s)", outcome.reason, outcome.status
                        )

    def _unschedule_full(self, scheduled: Scheduled, term: Term) -> None:
        task_type = scheduled.task.task_type.value
        result = self.dispatcher.unschedule(
            scheduled, term.epoch, self.actor, f"every agent that runs {task_type} is full"
        )
        self._check(result.accepted, result.reason)

    # --8<-- [end:place-batch]

    @contextmanager
    def _traced(self, scheduled: Scheduled, term: Term) -> Iterator[tuple[Scheduled, Any]]:
        """The placement as span "schedule" of the attempt's trace: under the task's stored
        traceparent (the submit's), or, for an attempt newer than the stored trace (a retry, a
        failover) or a task nobody traced, the first span of a new trace linked to the old
        one, whose ids the dispatch then stores on the task (common/observability/tracing.py).
        """
        if not tracing.enabled():
            yield scheduled, None
            return
        task = scheduled.task
        parent, links = tracing.attempt_parent(task, scheduled.attempt)
        with tracing.span(
            "schedule",
            parent=parent,
            root=parent is None,
            links=links,
            attributes={
                "tasklab.task_id": task.task_id,
                "tasklab.attempt": scheduled.attempt,
                "tasklab.epoch": term.epoch,
            },
        ) as span:
            if parent is None:
                scheduled = replace(scheduled, trace=tracing.task_fields(scheduled.attempt))
            yield scheduled, span

    # --8<-- [start:pinned]
    def _place_pinned(self, scheduled: Scheduled, term: Term, candidates: list[Candidate]) -> None:
        """A task that may run on one agent only (a broadcast's child): there, or nowhere.

        Its agent has room: dispatch. Its agent is live but its inbox is full: back to PENDING,
        to be placed again. Its agent is gone, or shutting down: the task fails, since no other
        agent may take its place (a broadcast runs once on each agent alive when it starts).
        """
        task = scheduled.task
        agent_id = task.pinned_agent
        assert agent_id is not None
        chosen = next((c for c in candidates if c.agent_id == agent_id), None)
        live = next((a for a in self.view.agents() if a.agent_id == agent_id), None)
        if chosen is not None and task.task_type.value in chosen.agent.task_types:
            result = self.dispatcher.dispatch(scheduled, agent_id, term.epoch, self.actor)
            self._check(result.accepted, result.reason)
            if result.accepted:
                self.stats.dispatched += 1
                log.info("dispatched to %s, the one agent it is pinned to", agent_id)
            return
        why = ""
        if live is not None and live.draining:
            why = f"its agent {agent_id} is shutting down"
        elif live is not None and task.task_type.value not in live.task_types:
            why = f"its agent {agent_id} does not run {task.task_type.value}"
        elif live is None and not self.view.is_registered(agent_id):
            # Asked of ZooKeeper, not of the view: failing is for good, so a node the view has
            # not read yet (an agent that just joined) must not count as gone.
            why = f"its agent {agent_id} is gone"
        if why:
            result = self.dispatcher.fail(scheduled, term.epoch, self.actor, why)
            self._check(result.accepted, result.reason)
            log.warning("pinned task failed: %s", why)
            return
        result = self.dispatcher.unschedule(
            scheduled, term.epoch, self.actor, f"its agent {agent_id} has no room yet"
        )
        self._check(result.accepted, result.reason)
        # Its inbox drains in milliseconds; not so soon that the loop spins on this one task.
        self.view.changed.wait(0.02)

    # --8<-- [end:pinned]

    def _check(self, accepted: bool, reason: str) -> None:
        if not accepted and reason == "stale_epoch":
            self.stats.rejected_stale += 1
            raise Deposed

    # --8<-- [start:candidates]
    def _candidates(self) -> tuple[int, list[Candidate]]:
        """(how many live agents take work, those of them with room in their inbox)."""
        agents = [a for a in self.view.agents() if not a.draining]
        if not agents:
            return 0, []
        queued = self.dispatcher.backlog([a.agent_id for a in agents])
        # Bounded inboxes: a task waits in queue:pending, where any agent can still get it,
        # rather than piling up behind one slow agent; and a dead agent strands little.
        return len(agents), [
            Candidate(a, queued[a.agent_id])
            for a in agents
            if queued[a.agent_id] < self.agent_backlog
        ]

    # --8<-- [end:candidates]

    # -- failover and recovery ---------------------------------------------------------------
    # --8<-- [start:failover]
    def _on_departure(self, agent_ids: set[str]) -> None:
        # kazoo's thread: just note it; the leader's loop does the Redis work.
        with self._departed_lock:
            self._departed |= agent_ids
        self.view.changed.set()

    def _fail_over_departed(self, term: Term) -> None:
        with self._departed_lock:
            departed, self._departed = self._departed, set()
        for agent_id in sorted(departed):
            self._fail_over(agent_id, term)

    def _fail_over(self, agent_id: str, term: Term) -> None:
        # The incarnation is read *before* ZooKeeper is asked: if the agent starts again after
        # this read, its start bumps the incarnation and every reap below is refused; if it
        # started before, it was not yet registered when ZooKeeper said "gone", so its lists
        # hold only its dead run's work (reap.lua has the whole argument). The epoch makes
        # the reap a fenced leader write: a leader deposed while paused here changes nothing.
        seen = self.dispatcher.incarnation(agent_id)
        if self.view.is_registered(agent_id):
            # Back already (a restart under the same id, or a session blip): a restarted agent
            # re-queues its own leftovers before it registers, and its current work is live.
            return
        requeued, dropped = self.dispatcher.reap_agent(
            agent_id, self.actor, epoch=term.epoch, incarnation=seen
        )
        if requeued < 0:
            self.stats.rejected_stale += 1
            raise Deposed
        self.dispatcher.forget_agent_if_idle(agent_id)
        if requeued or dropped:
            self.stats.failed_over += requeued
            metrics.record_failover("zookeeper", requeued)
            log.warning(
                "agent %s left: re-queued %d task(s) with attempt + 1, dropped %d stale or "
                "failed (epoch %d)",
                agent_id,
                requeued,
                dropped,
                term.epoch,
            )

    def _sweep(self, term: Term) -> None:
        requeued, dropped = self.dispatcher.recover_scheduling(term.epoch, self.actor)
        if requeued < 0:
            self.stats.rejected_stale += 1
            raise Deposed
        if requeued or dropped:
            self.stats.recovered += requeued
            log.warning(
                "recovered %d task(s) a previous leader left in flight (%d stale copies dropped)",
                requeued,
                dropped,
            )
        live = self.view.ids()
        for agent_id in sorted(self.dispatcher.agents_with_work() - live):
            self._fail_over(agent_id, term)
        if self.dispatcher.promote_due(term.epoch) < 0:
            self.stats.rejected_stale += 1
            raise Deposed
        for job in self.housekeeping:
            job()

    # --8<-- [end:failover]
