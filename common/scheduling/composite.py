"""The composite coordinator: the scheduler leader's hand on every composite not finished yet.

Pattern: Composite (introduced with composite tasks). The rules are `decide` (pure, in
common/domain/composite.py); this module reads what they need and carries out what they say.
Per tick, for each parent on `composites:active`:

1. Read the parent and the children it must, in one `store.tasks()` call. A child seen final
   is cached for good (a final state is forever). A child seen WAITING is cached too, for up
   to `waiting_refresh`: only this coordinator's own writes take a child out of WAITING (and
   it forgets those it wrote to), but a client may cancel a waiting child by its id, which is
   seen at the next full read. So a tick of a parent of 1 000 children under a cap of 10
   reads the ten that run, not the thousand; every write is conditional in the store anyway
   (release only what is still WAITING), so a stale cache can delay, never misdo.
2. `decide` on them (for a BROADCAST not yet expanded, given the live agents that run its
   task type and are not draining, from the scheduler's LiveAgentsView).
3. Apply the Plan through the store, in order: start, expand, skip, cancel, release, finish.
   Every write is fenced with the leader's epoch: one answered `stale_epoch` means a newer
   leader exists, and the term ends (`Deposed`), exactly as for a placement.

A crash between two writes loses nothing: the next leader's coordinator starts with an empty
cache, reads the state the writes left, and `decide` plans only what is still to do (a child
already released is PENDING, not WAITING, so it is not released twice; a second expand is
refused). One parent that cannot be decided (a malformed document, a child gone) is logged
with its id and left for the next tick; the others go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from redis.exceptions import RedisError

from common.coordination.live_agents import LiveAgentsView
from common.domain.composite import (
    ChildRole,
    CompositeKind,
    CompositeSpec,
    Plan,
    decide,
)
from common.domain.task import Task
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.observability import bind, get_logger
from common.ports.composite import CompositeStore, CoordinatorWrite
from common.scheduling.fencing import Deposed

log = get_logger("tasklab.composite")


class CompositeCoordinator:
    def __init__(
        self,
        store: CompositeStore,
        view: LiveAgentsView,
        actor: str,
        *,
        interval: float = 0.05,
        idle_max: float = 1.0,
        max_parents_per_tick: int = 256,
        view_settle: float = 2.0,
        waiting_refresh: float = 1.0,
    ) -> None:
        self.store = store
        self.view = view
        self.actor = actor
        self.interval = interval
        self.idle_max = idle_max
        # Bounded work per tick: a backlog of parents is taken in turns (`_cursor`), so one
        # tick stays short and no parent waits behind the others for long.
        self.max_parents_per_tick = max_parents_per_tick
        # How long a broadcast waits for the view to have read every live agent's data.
        self.view_settle = view_settle
        self._settling: dict[str, float] = {}  # parent id -> when it may wait no longer
        self._cursor = 0
        # parent id -> {child id: the child as it ended}: final is forever.
        self._final: dict[str, dict[str, Task]] = {}
        # What only this coordinator changes, cached within one term (another leader may have
        # changed it between two of our terms): a parent's list of children (changed by
        # expand), and its children seen WAITING, read again every `waiting_refresh`.
        self.waiting_refresh = waiting_refresh
        self._term = -1
        self._lists: dict[str, list[str]] = {}
        self._waiting: dict[str, dict[str, Task]] = {}
        self._waiting_read: dict[str, float] = {}
        self._specs: dict[str, CompositeSpec] = {}
        # (parent id, problem) already logged: a parent that fails the same way on every tick
        # is logged once, not twenty times a second.
        self._reported: set[tuple[str, str]] = set()
        self.ticks = 0
        self.finished = 0

    # -- the loop ------------------------------------------------------------------------------
    def run(self, epoch: int, stop: threading.Event, paused: threading.Event | None = None) -> None:
        """Tick until `stop` is set: every `interval` while composites are active, backing off
        to `idle_max` while none is. Raises Deposed when a write says a newer leader exists.
        A Redis error skips a tick (the leader's own loop gives the term up if Redis stays
        away)."""
        idle = self.interval
        while not stop.is_set():
            if paused is not None and paused.is_set():
                # ZooKeeper is unsure whether we still lead: write nothing until it knows.
                stop.wait(self.interval)
                continue
            try:
                active = self.tick(epoch)
            except RedisError as exc:
                log.error("composite coordinator: Redis failed (%s); next tick in 1 s", exc)
                stop.wait(1.0)
                continue
            idle = self.interval if active else min(idle * 2, self.idle_max)
            stop.wait(idle)

    def tick(self, epoch: int) -> int:
        """One pass over the active parents (at most `max_parents_per_tick` of them); returns
        how many parents are active. Raises Deposed."""
        self.ticks += 1
        if epoch != self._term:
            self._term = epoch
            self._lists.clear()
            self._waiting.clear()
            self._waiting_read.clear()
        active = self.store.active_parents()
        gone = set(self._final) - set(active)
        for parent_id in gone:
            self._forget(parent_id)
        if not active:
            return 0
        n = min(len(active), self.max_parents_per_tick)
        start = self._cursor % len(active)
        turn = (active[start:] + active[:start])[:n]
        self._cursor = start + n
        for parent_id in turn:
            try:
                self.coordinate(parent_id, epoch)
            except (Deposed, RedisError):
                raise
            except Exception as exc:  # one bad parent must not stop the others
                self._report(parent_id, exc)
        return len(active)

    # -- one parent ------------------------------------------------------------------------------
    def coordinate(self, parent_id: str, epoch: int) -> Plan | None:
        """Read, decide and apply for one parent; returns the Plan applied (None if the parent
        is gone)."""
        child_ids = self._lists.get(parent_id)
        if child_ids is None:
            child_ids = self._lists[parent_id] = self.store.children(parent_id)
        seen = self._final.setdefault(parent_id, {})
        now = time.monotonic()
        waiting = self._waiting.setdefault(parent_id, {})
        if now - self._waiting_read.get(parent_id, -1e9) >= self.waiting_refresh:
            waiting.clear()
            self._waiting_read[parent_id] = now
        ask = [c for c in child_ids if c not in seen and c not in waiting]
        fresh = self.store.tasks([parent_id, *ask])
        parent = fresh.get(parent_id)
        if parent is None:
            # Deleted under us (retention, a hand-run DEL): nothing can be decided; finish
            # takes a missing parent off the active set.
            self._write(self.store.finish(parent_id, TaskStatus.FAILED.value, epoch, self.actor))
            self._forget(parent_id)
            return None
        children = []
        for cid in child_ids:
            child = seen.get(cid) or waiting.get(cid) or fresh.get(cid)
            if child is None:
                raise LookupError(f"child {cid} is listed but missing")
            children.append(child)
        spec = self._spec(parent)
        live = self._live_agents(parent_id, spec, children)
        if live is None:
            return None  # a broadcast waits for the view to settle: decided next tick
        with bind(taskId=parent_id, epoch=epoch):
            plan = decide(spec, parent, children, live)
            if not plan.empty:
                self._apply(parent_id, plan, epoch)
        for child in children:
            if child.status in TERMINAL_STATES:
                seen[child.task_id] = child
            elif child.status == TaskStatus.WAITING:
                waiting[child.task_id] = child
        # What this plan wrote to is read again next tick.
        for cid in [r.child_id for r in plan.release] + [c for c, _ in plan.skip] + plan.cancel:
            waiting.pop(cid, None)
        return plan

    def _apply(self, parent_id: str, plan: Plan, epoch: int) -> None:
        store, actor = self.store, self.actor
        if plan.start:
            w = self._write(store.start(parent_id, epoch, actor))
            if not w.accepted:
                return  # it changed under us (a client cancelled it): decide again next tick
            log.info("composite started")
        if plan.expand:
            w = self._write(store.expand(parent_id, plan.new_children, epoch, actor))
            self._lists.pop(parent_id, None)  # longer now (or, refused, longer already)
            if not w.accepted:
                return  # expanded already (or ended): our list of children is out of date
            log.info("%s step expanded into %d children", plan.expand, w.count)
        for reason, ids in plan.skips_by_reason().items():
            w = self._write(store.skip(parent_id, ids, reason, epoch, actor))
            if w.count:
                log.info("skipped %d child(ren): %s", w.count, reason)
        if plan.cancel:
            w = self._write(
                store.cancel_children(parent_id, plan.cancel, plan.cancel_reason, epoch, actor)
            )
            if w.count:
                log.warning("cancelled %d child(ren): %s", w.count, plan.cancel_reason)
        if plan.release:
            w = self._write(store.release(parent_id, plan.release, epoch, actor))
            if w.count:
                log.info("released %d child(ren)", w.count)
        if plan.finish is not None:
            status, result, error = plan.finish
            if status not in (TaskStatus.SUCCESS, TaskStatus.FAILED):
                # A parent a client cancelled is final already: the store only takes it off
                # the active set, and a finish names SUCCESS or FAILED.
                status = TaskStatus.FAILED
            w = self._write(
                store.finish(parent_id, status.value, epoch, actor, result=result, error=error)
            )
            if w.accepted:
                self.finished += 1
                log.info("composite %s: %s", status.value, error or result or "")
            self._forget(parent_id)

    # -- helpers -----------------------------------------------------------------------------
    def _write(self, w: CoordinatorWrite) -> CoordinatorWrite:
        if w.stale:
            raise Deposed
        return w

    def _spec(self, parent: Task) -> CompositeSpec:
        spec = self._specs.get(parent.task_id)
        if spec is None:
            spec = self._specs[parent.task_id] = CompositeSpec.from_payload(parent.payload)
        return spec

    def _live_agents(
        self, parent_id: str, spec: CompositeSpec, children: Sequence[Task]
    ) -> list[str] | None:
        """The agents a BROADCAST runs on, read only while it has no children of its own; None
        while the view is not settled yet.

        The view learns who is live (the children of /live-agents) before it has read what
        each one runs (one data watch per agent, answered later): an agent in the first but
        not yet in the second is neither counted in nor left out. A broadcast waits up to
        `view_settle` for its data, rather than leave out an agent that is alive now.
        """
        if spec.kind != CompositeKind.BROADCAST or spec.template is None:
            return []
        if any(c.role == ChildRole.BROADCAST.value for c in children):
            return []
        agents = self.view.agents()
        unread = self.view.ids() - {a.agent_id for a in agents}
        if unread:
            now = time.monotonic()
            deadline = self._settling.setdefault(parent_id, now + self.view_settle)
            if now < deadline:
                return None
            log.warning(
                "broadcast %s: no data from live agent(s) %s after %.1fs; going without them",
                parent_id,
                ", ".join(sorted(unread)),
                self.view_settle,
            )
        self._settling.pop(parent_id, None)
        task_type = spec.template.task_type.value
        return [a.agent_id for a in agents if not a.draining and task_type in a.task_types]

    def _forget(self, parent_id: str) -> None:
        self._final.pop(parent_id, None)
        self._lists.pop(parent_id, None)
        self._waiting.pop(parent_id, None)
        self._waiting_read.pop(parent_id, None)
        self._specs.pop(parent_id, None)
        self._settling.pop(parent_id, None)
        self._reported = {r for r in self._reported if r[0] != parent_id}

    def _report(self, parent_id: str, exc: Exception) -> None:
        problem = f"{type(exc).__name__}: {exc}"
        if (parent_id, problem) in self._reported:
            return
        self._reported.add((parent_id, problem))
        log.error("composite %s cannot be coordinated (%s); retried each tick", parent_id, problem)
