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
from dataclasses import dataclass

from redis import Redis

from common import keys
from common.adapters.redis_dead_letter import dead_letter_message
from common.adapters.redis_queue import reap_list
from common.adapters.redis_scripts import script_source
from common.adapters.redis_store import RedisTaskStore, as_result
from common.domain.task import Task, TaskValidationError, parse_task_message
from common.domain.transitions import TaskStatus
from common.ports.task_store import TransitionResult


@dataclass(frozen=True)
class Scheduled:
    """A task the leader moved to SCHEDULED; `message` is its copy on queue:scheduling."""

    task: Task
    message: str
    attempt: int


@dataclass(frozen=True)
class NotScheduled:
    reason: str  # "dead-lettered", "stale_epoch", "illegal", ...
    status: str = ""
    task_id: str | None = None


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisDispatcher:
    def __init__(
        self, client: Redis, store: RedisTaskStore, max_payload_bytes: int = 64 * 1024
    ) -> None:
        self.client = client
        self.store = store
        self.max_payload_bytes = max_payload_bytes
        self._fence = client.register_script(script_source("fence"))
        self._schedule = client.register_script(script_source("schedule"))
        self._recover = client.register_script(script_source("recover"))

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
        result = as_result(
            self._schedule(
                keys=[
                    keys.task(task.task_id),
                    keys.history(task.task_id),
                    keys.TRANSITION_STATS,
                    keys.SCHEDULER_FENCE,
                    keys.SCHEDULING_QUEUE,
                    keys.TASK_INDEX,
                ],
                args=[raw, message, json.dumps(task.to_hash()), epoch, actor, now, task.task_id],
            )
        )
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
        # The dispatch message names the attempt and epoch it belongs to: the agent's claim
        # checks both against the task, so a copy that outlived a failover cannot run.
        dispatch = json.loads(scheduled.message)
        dispatch.update(attempt=scheduled.attempt, epoch=epoch)
        # Remembered before the dispatch, so a leader elected after a crash right here still
        # knows which inboxes may hold work (a stray id costs one empty sweep, nothing more).
        self.client.sadd(keys.AGENTS_SEEN, agent_id)
        return self.store.transition(
            task.task_id,
            TaskStatus.DISPATCHED,
            attempt=scheduled.attempt,
            epoch=epoch,
            actor=actor,
            fields={"agentId": agent_id},
            fenced=True,
            effects=[
                {"op": "lrem", "k": 5, "v": scheduled.message},
                {"op": "lpush", "k": 6, "v": json.dumps(dispatch, separators=(",", ":"))},
            ],
            effect_keys=[keys.SCHEDULING_QUEUE, keys.agent_tasks(agent_id)],
        )

    # --8<-- [end:place]

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
                {"op": "lrem", "k": 5, "v": scheduled.message},
                {"op": "lpush", "k": 6, "v": scheduled.message},
            ],
            effect_keys=[keys.SCHEDULING_QUEUE, keys.PENDING_QUEUE],
        )

    # -- recovery and failover ---------------------------------------------------------------
    # --8<-- [start:recover]
    def recover_scheduling(self, epoch: int, actor: str) -> tuple[int, int]:
        """Re-queue what a dead or deposed leader left on queue:scheduling; (requeued, dropped).

        Returns (-1, 0) if `epoch` is already older than the fence (we are deposed ourselves).
        """
        requeued, dropped = self._recover(
            keys=[
                keys.SCHEDULING_QUEUE,
                keys.PENDING_QUEUE,
                keys.TRANSITION_STATS,
                keys.SCHEDULER_FENCE,
            ],
            args=[epoch, repr(time.time()), actor],
        )
        return int(requeued), int(dropped)

    def reap_agent(self, agent_id: str, actor: str) -> tuple[int, int]:
        """Fail over a departed agent: its running and its not-yet-started tasks go back to
        PENDING with attempt + 1 and onto `queue:pending`; (requeued, dropped)."""
        requeued = dropped = 0
        # The running tasks first, so they are queued ahead of ones that never started.
        for work_list in (keys.processing(agent_id), keys.agent_tasks(agent_id)):
            r, d = reap_list(self.store, work_list, agent_id, keys.PENDING_QUEUE, actor)
            requeued, dropped = requeued + r, dropped + d
        return requeued, dropped

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

    def promote_due(self, limit: int = 500) -> int:
        """Retries whose backoff elapsed go back to queue:pending, for the leader to place."""
        return int(
            self.store.scripts.promote(
                keys=[keys.DELAYED_QUEUE, keys.PENDING_QUEUE], args=[repr(time.time()), limit]
            )
        )

    def _dead_letter(self, raw: str, reason: str, actor: str) -> None:
        dead_letter_message(
            self.client, raw, reason, actor, keys.PENDING_QUEUE, keys.SCHEDULING_QUEUE
        )
