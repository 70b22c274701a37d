"""The scheduler's side of Redis: take from `queue:pending`, place, dispatch, recover, fail over.

A message is in exactly one list at every instant: `queue:pending` -> (BLMOVE) ->
`queue:scheduling` -> (one fenced script) -> `agent:{agentId}:tasks` -> (the agent's BLMOVE) ->
`processing:{agentId}`. A leader killed between any two steps leaves the message on a list
that its successor sweeps, so nothing is lost; every step that changes a task's state is one
Lua script fenced by the leader's epoch, so a deposed leader cannot change anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from redis import Redis

from common import keys
from common.adapters.redis_client import as_text as _s
from common.adapters.redis_dead_letter import dead_letter_message
from common.adapters.redis_failover import DEFAULT_MAX_LOST_ATTEMPTS, RedisFailover
from common.adapters.redis_scripts import script_source
from common.adapters.redis_store import RedisTaskStore, as_result
from common.domain.dispatch import DispatchEntry
from common.domain.idempotency import IdempotencyConflict, spec_fingerprint
from common.domain.task import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Task,
    TaskValidationError,
    parse_task_message,
)
from common.domain.transitions import TaskStatus
from common.ports.dispatcher import Chooser, Dispatcher, NotScheduled, Placed, Scheduled
from common.ports.task_store import TransitionResult


class RedisDispatcher(Dispatcher):
    def __init__(
        self,
        client: Redis,
        store: RedisTaskStore,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS,
        dead_letter_max: int | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.max_payload_bytes = max_payload_bytes
        self.failover = RedisFailover(client, max_lost_attempts)
        self.dead_letter_max = dead_letter_max
        self._fence = client.register_script(script_source("fence"))
        self._schedule = client.register_script(script_source("schedule"))
        self._take_batch = client.register_script(script_source("take_batch"))
        self._place_batch = client.register_script(script_source("place_batch"))

    # -- fencing ---------------------------------------------------------------------------
    # --8<-- [start:fence]
    def raise_fence(self, epoch: int) -> tuple[bool, int]:
        """Raise `fence:scheduler` to `epoch` (atomically, never down); (raised, fence now)."""
        raised, fence = self._fence(keys=[keys.SCHEDULER_FENCE], args=[epoch])
        return bool(int(raised)), int(_s(fence))

    # --8<-- [end:fence]

    def fence(self) -> int:
        return int(_s(self.client.get(keys.SCHEDULER_FENCE) or b"0"))

    # -- the placement path ------------------------------------------------------------------
    # --8<-- [start:place]
    def take(self, timeout: float) -> str | None:
        raw = self.client.blmove(
            keys.PENDING_QUEUE, keys.SCHEDULING_QUEUE, timeout, "RIGHT", "LEFT"
        )
        return None if raw is None else _s(raw)

    def schedule(self, raw: str, epoch: int, actor: str) -> Scheduled | NotScheduled:
        """PENDING -> SCHEDULED for the message just taken (creating a hand-pushed task)."""
        try:
            task_id, spec = parse_task_message(raw, self.max_payload_bytes)
        except TaskValidationError as exc:
            self._dead_letter(raw, str(exc), actor)
            return NotScheduled("dead-lettered: " + str(exc))
        task = Task.new(spec, task_id=task_id)
        message = task.to_message()
        now = repr(time.time())
        reply = self._schedule(
            keys=[
                keys.task(task.task_id),
                keys.history(task.task_id),
                keys.TRANSITION_STATS,
                keys.SCHEDULER_FENCE,
                keys.SCHEDULING_QUEUE,
                keys.TASK_INDEX,
                *keys.request_keys(spec.request_id),
            ],
            args=[
                raw,
                message,
                json.dumps(task.to_hash()),
                epoch,
                actor,
                now,
                task.task_id,
                "1" if spec.request_id else "0",
                spec_fingerprint(spec),
            ],
        )
        result = as_result(reply)
        if result.reason == "idempotency_conflict":
            assert spec.request_id
            conflict = IdempotencyConflict(spec.request_id, _s(reply[4]))
            self._dead_letter(raw, str(conflict), actor)
            return NotScheduled("dead-lettered: " + str(conflict))
        if not result.accepted:
            return NotScheduled(result.reason, result.status, task.task_id)
        stored = self.store.get(task.task_id)
        assert stored is not None
        return Scheduled(stored, message, result.attempt)

    def dispatch(
        self, scheduled: Scheduled, agent_id: str, epoch: int, actor: str
    ) -> TransitionResult:
        """SCHEDULED -> DISPATCHED and onto the agent's inbox, in one fenced script."""
        task = scheduled.task
        # The dispatch entry names the attempt and epoch it belongs to: the agent's claim
        # checks both against the task, so a copy that outlived a failover cannot run.
        entry = DispatchEntry(task, scheduled.attempt, epoch)
        # Remembered before the dispatch, so a leader elected after a crash right here still
        # knows which inboxes may hold work (a stray id costs one empty sweep, nothing more).
        self.client.sadd(keys.AGENTS_SEEN, agent_id)
        return self.store.transition(
            task.task_id,
            TaskStatus.DISPATCHED,
            attempt=scheduled.attempt,
            epoch=epoch,
            actor=actor,
            fields={"agentId": agent_id, **scheduled.trace},
            fenced=True,
            effects=[
                {"op": "lrem", "key": "scheduling", "v": scheduled.message},
                {"op": "lpush", "key": "inbox", "v": entry.to_json()},
            ],
            effect_keys={"scheduling": keys.SCHEDULING_QUEUE, "inbox": keys.agent_tasks(agent_id)},
        )

    # --8<-- [end:place]

    # --8<-- [start:batch]
    def take_batch(self, timeout: float, limit: int) -> list[str]:
        """Up to `limit` pending messages onto queue:scheduling in one round trip; only when
        the queue is empty, a blocking BLMOVE of one (the idle leader's wait)."""
        if limit > 1:
            taken = self._take_batch(keys=[keys.PENDING_QUEUE, keys.SCHEDULING_QUEUE], args=[limit])
            if taken:
                return [_s(m) for m in taken]
        raw = self.take(timeout)
        return [] if raw is None else [raw]

    def place_batch(
        self, raws: Sequence[str], epoch: int, actor: str, choose: Chooser
    ) -> list[Placed]:
        """Schedule and dispatch a batch in one fenced script (place_batch.lua): the agents
        are chosen here first, from each message's spec, in the batch's order. A message that
        does not validate is dead-lettered before the script, as `schedule` would."""
        placed: list[Placed | None] = [None] * len(raws)
        batch: list[tuple[int, str, Task, str | None, str | None]] = []
        all_keys = [
            keys.TRANSITION_STATS,
            keys.SCHEDULER_FENCE,
            keys.SCHEDULING_QUEUE,
            keys.TASK_INDEX,
            keys.AGENTS_SEEN,
        ]
        args: list[object] = [epoch, actor, repr(time.time())]
        for i, raw in enumerate(raws):
            try:
                task_id, spec = parse_task_message(raw, self.max_payload_bytes)
            except TaskValidationError as exc:
                self._dead_letter(raw, str(exc), actor)
                placed[i] = Placed(NotScheduled("dead-lettered: " + str(exc)))
                continue
            task = Task.new(spec, task_id=task_id)
            agent_id = choose(task)
            message = task.to_message()
            batch.append((i, raw, task, agent_id, spec.request_id))
            all_keys += [
                keys.task(task.task_id),
                keys.history(task.task_id),
                *keys.request_keys(spec.request_id),
                # A dummy that is never written when no agent was chosen.
                keys.agent_tasks(agent_id) if agent_id else keys.SCHEDULING_QUEUE,
            ]
            args += [
                raw,
                message,
                json.dumps(task.to_hash()),
                task.task_id,
                "1" if spec.request_id else "0",
                spec_fingerprint(spec),
                agent_id or "",
            ]
        replies = self._place_batch(keys=all_keys, args=args) if batch else []
        if batch and _s(replies[0][1]) == "stale_epoch" and len(replies) == 1 < len(batch):
            replies = replies * len(batch)  # refused whole: the same answer for every message
        for (i, raw, task, agent_id, request_id), reply in zip(batch, replies, strict=True):
            placed[i] = self._placed(raw, task, agent_id, request_id, reply, actor)
        return [p for p in placed if p is not None]

    def _placed(
        self,
        raw: str,
        task: Task,
        agent_id: str | None,
        request_id: str | None,
        reply: list,
        actor: str,
    ) -> Placed:
        result = as_result(reply)
        if result.reason == "idempotency_conflict":
            assert request_id
            conflict = IdempotencyConflict(request_id, _s(reply[4]))
            self._dead_letter(raw, str(conflict), actor)
            return Placed(NotScheduled("dead-lettered: " + str(conflict)), task_id=task.task_id)
        if not result.accepted:
            return Placed(NotScheduled(result.reason, result.status, task.task_id), agent_id,
                          task.task_id)  # fmt: skip
        if agent_id is None or result.status == TaskStatus.SCHEDULED.value:
            # Scheduled only, for the caller to place itself (rare: a type no candidate runs,
            # a task pinned in its hash), with the task as stored, as `schedule` returns it.
            stored = self.store.get(task.task_id)
            assert stored is not None
            return Placed(Scheduled(stored, task.to_message(), result.attempt),
                          task_id=task.task_id)  # fmt: skip
        return Placed(result, agent_id, task.task_id)

    # --8<-- [end:batch]

    def unschedule(
        self, scheduled: Scheduled, epoch: int, actor: str, reason: str
    ) -> TransitionResult:
        """SCHEDULED -> PENDING, back to the far end of the queue (no agent can take it now)."""
        return self.store.transition(
            scheduled.task.task_id,
            TaskStatus.PENDING,
            attempt=scheduled.attempt,
            epoch=epoch,
            actor=actor,
            reason=reason,
            fenced=True,
            effects=[
                {"op": "lrem", "key": "scheduling", "v": scheduled.message},
                {"op": "lpush", "key": "pending", "v": scheduled.message},
            ],
            effect_keys={"scheduling": keys.SCHEDULING_QUEUE, "pending": keys.PENDING_QUEUE},
        )

    def fail(self, scheduled: Scheduled, epoch: int, actor: str, error: str) -> TransitionResult:
        """SCHEDULED -> FAILED, off queue:scheduling, in one fenced script: a pinned task whose
        agent is gone. (Stage 3 publishes nothing here: no agent is involved.)"""
        return self.store.transition(
            scheduled.task.task_id,
            TaskStatus.FAILED,
            attempt=scheduled.attempt,
            epoch=epoch,
            actor=actor,
            fields={"error": error, "finishedAt": repr(time.time())},
            reason=error,
            fenced=True,
            effects=[{"op": "lrem", "key": "scheduling", "v": scheduled.message}],
            effect_keys={"scheduling": keys.SCHEDULING_QUEUE},
        )

    # -- recovery and failover ---------------------------------------------------------------
    # --8<-- [start:recover]
    def recover_scheduling(self, epoch: int, actor: str) -> tuple[int, int]:
        """Re-queue what a dead or deposed leader left on queue:scheduling; (requeued, dropped).

        Returns (-1, 0) if `epoch` is already older than the fence (we are deposed ourselves).
        """
        done = self.failover.recover(keys.SCHEDULING_QUEUE, keys.PENDING_QUEUE, epoch, actor)
        if done.refused:
            return -1, 0
        return done.requeued, done.dropped

    def incarnation(self, agent_id: str) -> int:
        """How many times `agent_id` has started; read it *before* asking ZooKeeper about it."""
        return self.failover.incarnation(agent_id)

    def reap_agent(
        self,
        agent_id: str,
        actor: str,
        *,
        epoch: int | None = None,
        incarnation: int | None = None,
    ) -> tuple[int, int]:
        """Fail over a departed agent: its running and its not-yet-started tasks go back to
        PENDING with attempt + 1 and onto `queue:pending`; (requeued, dropped + failed).

        The leader passes its `epoch` and the `incarnation` it read before ZooKeeper said the
        agent was gone: a deposed leader changes nothing and gets (-1, 0); a restarted agent is
        left alone. Without an epoch (the stage 3 manager, which is no leader) the reap is
        fenced by the agent's heartbeat key instead, checked in each entry's script.
        """
        # The running tasks first, so they are queued ahead of ones that never started.
        lists = [keys.processing(agent_id), keys.agent_tasks(agent_id)]
        if epoch is None:
            done = self.failover.reap(agent_id, lists, keys.PENDING_QUEUE, actor, "heartbeat")
        else:
            done = self.failover.reap(
                agent_id,
                lists,
                keys.PENDING_QUEUE,
                actor,
                "leader",
                epoch=epoch,
                incarnation=self.incarnation(agent_id) if incarnation is None else incarnation,
            )
        if done.refused == "stale_epoch":
            return -1, 0
        return done.requeued, done.dropped + done.failed

    # --8<-- [end:recover]

    def agents_with_work(self) -> set[str]:
        return {_s(m) for m in self.client.smembers(keys.AGENTS_SEEN)}

    def forget_agent_if_idle(self, agent_id: str) -> None:
        if not self.client.exists(keys.processing(agent_id), keys.agent_tasks(agent_id)):
            self.client.srem(keys.AGENTS_SEEN, agent_id)

    def backlog(self, agent_ids: list[str]) -> dict[str, int]:
        """How many dispatched messages wait in each agent's inbox (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for agent_id in agent_ids:
            pipe.llen(keys.agent_tasks(agent_id))
        return dict(zip(agent_ids, (int(n) for n in pipe.execute()), strict=True))

    def promote_due(self, epoch: int, limit: int = 500) -> int:
        """Retries whose backoff elapsed go back to queue:pending, for the leader to place.

        Fenced like every write of the leader's: -1 (nothing moved) if `epoch` is stale.
        """
        return int(
            self.store.scripts.promote(
                keys=[keys.DELAYED_QUEUE, keys.PENDING_QUEUE, keys.SCHEDULER_FENCE],
                args=[repr(time.time()), limit, epoch],
            )
        )

    def _dead_letter(self, raw: str, reason: str, actor: str) -> None:
        dead_letter_message(
            self.client,
            raw,
            reason,
            actor,
            keys.PENDING_QUEUE,
            keys.SCHEDULING_QUEUE,
            self.dead_letter_max,
        )
