"""The Redis work queue an agent takes tasks from, and reports them back to.

Reliable claim (stage 1's fix): BLMOVE moves a message from the source list to this agent's
`processing:{agentId}` list in one atomic step, so at every instant the message is in exactly
one list. If the agent dies mid-task the message is still on its processing list, and the
reaper (any live agent) gives it back once the dead agent's heartbeat key expires.

Stage 2 reuses this queue with a different source: the agent's own `agent:{agentId}:tasks`
inbox, filled by the leader-elected scheduler. Work given back then goes to `queue:pending`
(`requeue_to`), where the scheduler places it again, never back into a dead agent's inbox.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from redis import Redis

from common import keys
from common.adapters.redis_dead_letter import dead_letter_message
from common.adapters.redis_scripts import script_source
from common.adapters.redis_store import (
    RedisTaskStore,
    as_result,
    transition_arg,
    transition_keys,
)
from common.domain.task import Task, TaskValidationError, parse_task_message
from common.domain.transitions import TaskStatus
from common.executors.base import ExecutionResult
from common.observability import get_logger
from common.ports.task_store import TransitionResult
from common.retry import ExponentialBackoff

log = get_logger("tasklab.queue")


@dataclass
class Claim:
    task: Task
    message: str  # the (normalised) message as it sits on the processing list
    attempt: int
    epoch: int = 0
    # Read with the claim so finish() need not ask again; None = unknown, finish() reads it.
    retries_used: int | None = None


@dataclass
class Rejected:
    """A message that was taken but is not to be run (dead-lettered, cancelled, duplicate)."""

    reason: str
    task_id: str | None = None


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisWorkQueue:
    def __init__(
        self,
        client: Redis,
        store: RedisTaskStore,
        source: str = keys.PENDING_QUEUE,
        max_payload_bytes: int = 64 * 1024,
        backoff: ExponentialBackoff | None = None,
        requeue_to: str | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.source = source
        self.requeue_to = requeue_to or source
        self.max_payload_bytes = max_payload_bytes
        self.backoff = backoff or ExponentialBackoff()
        self._take = client.register_script(script_source("take", "take_next"))
        self._finish_take = client.register_script(script_source("finish_take", "take_next"))

    # -- taking ------------------------------------------------------------------------
    # --8<-- [start:take]
    def take_reliably(self, agent_id: str, timeout: float) -> str | None:
        raw = self.client.blmove(self.source, keys.processing(agent_id), timeout, "RIGHT", "LEFT")
        return None if raw is None else _s(raw)

    # --8<-- [end:take]

    def take_and_claim(self, agent_id: str) -> Claim | Rejected | str | None:
        """Move the next message to the processing list and claim it in one round trip.

        Returns None if the source is empty (block in `take_reliably` then), the raw message
        if it needs the full `claim` (not one a client submitted), else what `claim` would.
        """
        reply = self._take(
            keys=[self.source, keys.processing(agent_id), keys.TRANSITION_STATS],
            args=[agent_id, repr(time.time())],
        )
        return self._taken(reply)

    def _taken(self, reply: list) -> Claim | Rejected | str | None:
        """Decode take_next.lua's answer."""
        kind = int(reply[0])
        if kind == 0:
            return None
        raw = _s(reply[1])
        if kind == 1:
            return raw
        result = as_result(reply[2:6])
        if kind == 2:
            return Rejected(f"not claimable: {result.reason} (status {result.status})")
        return _claimed(reply[6], raw, result.attempt, 0)

    def claim(self, agent_id: str, raw: str, tracked: bool = True) -> Claim | Rejected:
        """Turn a taken message into a RUNNING task owned by `agent_id`, or reject it."""
        try:
            task_id, spec = parse_task_message(raw, self.max_payload_bytes)
        except TaskValidationError as exc:
            self.dead_letter(agent_id, raw, str(exc), tracked)
            return Rejected(f"dead-lettered: {exc}")
        task = Task.new(spec, task_id=task_id)
        dispatched = _dispatch_stamp(raw)
        # A dispatched message is kept byte for byte: it is what sits on the processing list,
        # and the attempt and epoch in it are what this claim is checked against.
        message = raw if dispatched else task.to_message()
        raw_result = self.store.scripts.claim(
            keys=[
                keys.task(task.task_id),
                keys.history(task.task_id),
                keys.TRANSITION_STATS,
                keys.processing(agent_id),
                keys.TASK_INDEX,
            ],
            args=[
                raw,
                message,
                json.dumps(task.to_hash()),
                agent_id,
                repr(time.time()),
                task.task_id,
                "1" if tracked else "0",
                str(dispatched[0]) if dispatched else "",
                str(dispatched[1]) if dispatched else "",
            ],
        )
        result = as_result(raw_result)
        if not result.accepted:
            return Rejected(
                f"not claimable: {result.reason} (status {result.status})", task.task_id
            )
        epoch = dispatched[1] if dispatched else 0
        return _claimed(raw_result[4], message, result.attempt, epoch)

    def dead_letter(self, agent_id: str, raw: str, reason: str, tracked: bool = True) -> None:
        taken_from = keys.processing(agent_id) if tracked else None
        dead_letter_message(self.client, raw, reason, agent_id, self.source, taken_from)

    # -- reporting ---------------------------------------------------------------------
    # --8<-- [start:finish]
    def finish(
        self, agent_id: str, claim: Claim, outcome: ExecutionResult, tracked: bool = True
    ) -> TransitionResult:
        """Record the outcome; retry with backoff if the task has retries left."""
        return self._report(agent_id, claim, outcome, tracked, take_next=False)[0]

    def finish_and_take(
        self, agent_id: str, claim: Claim, outcome: ExecutionResult
    ) -> tuple[TransitionResult, Claim | Rejected | str | None]:
        """finish(), plus take_and_claim() in the same round trip: a busy agent's loop."""
        return self._report(agent_id, claim, outcome, True, take_next=True)

    def _report(
        self,
        agent_id: str,
        claim: Claim,
        outcome: ExecutionResult,
        tracked: bool,
        take_next: bool,
    ) -> tuple[TransitionResult, Claim | Rejected | str | None]:
        task = claim.task
        processing = keys.processing(agent_id)
        log_effect = {"op": "rpush_all", "k": 6, "v": outcome.lines, "cap": 10_000}
        effects: list[dict] = []
        if tracked:
            effects.append({"op": "lrem", "k": 5, "v": claim.message})
        if outcome.lines:
            effects.append(log_effect)
        fields: dict[str, object] = {"finishedAt": repr(time.time())}
        if outcome.exit_code is not None:
            fields["exitCode"] = outcome.exit_code
        clear: list[str] = []
        retries_used = claim.retries_used
        if retries_used is None:
            retries_used = int(self.client.hget(keys.task(task.task_id), "retriesUsed") or 0)
        if outcome.success:
            to, reason = TaskStatus.SUCCESS, ""
            fields["result"] = outcome.result
            clear.append("error")
        elif outcome.cancelled:
            # The cancel itself was the transition; nothing to write but the cleanup.
            to, reason = TaskStatus.CANCELLED, ""
        elif retries_used < task.retry_count:
            to = TaskStatus.PENDING
            delay = self.backoff.delay(retries_used + 1)
            reason = f"retry {retries_used + 1}/{task.retry_count} in {delay:.2f}s: {outcome.error}"
            fields.update(
                error=outcome.error or "", retriesUsed=retries_used + 1, result=outcome.result
            )
            clear.append("agentId")
            effects.append({"op": "zadd", "k": 7, "score": time.time() + delay, "v": claim.message})
        else:
            to, reason = TaskStatus.FAILED, outcome.error or ""
            fields.update(error=outcome.error or "failed", result=outcome.result)
        if outcome.cancelled:
            self._drop(processing, claim.message, tracked)
            return TransitionResult(True, "ok", TaskStatus.CANCELLED.value, claim.attempt), None
        arg = transition_arg(
            to,
            attempt=claim.attempt,
            epoch=claim.epoch,
            actor=agent_id,
            fields=fields,
            clear=clear,
            reason=reason,
            effects=effects,
        )
        effect_keys = [processing, keys.logs(task.task_id), keys.DELAYED_QUEUE]
        taken: Claim | Rejected | str | None = None
        if take_next:
            # The refused report's copy is dropped in the same script (ARGV[4]).
            both = self._finish_take(
                keys=[*transition_keys(task.task_id), *effect_keys, self.source],
                args=[arg, agent_id, repr(time.time()), claim.message],
            )
            result = as_result(both[0])
            taken = self._taken(both[1])
        else:
            result = as_result(
                self.store.scripts.transition(
                    keys=[*transition_keys(task.task_id), *effect_keys], args=[arg]
                )
            )
        if not result.accepted:
            # A late report (we were presumed dead and the task was re-run, or it was cancelled):
            # the store refused it, which is the point. Still drop our copy of the message.
            if not take_next:
                self._drop(processing, claim.message, tracked)
            log.warning(
                "report rejected as %s: task is %s at attempt %s, we ran attempt %s",
                result.reason,
                result.status,
                result.attempt,
                claim.attempt,
            )
        return result, taken

    # --8<-- [end:finish]

    def _drop(self, processing: str, message: str, tracked: bool) -> None:
        if tracked:
            self.client.lrem(processing, 1, message)

    def is_cancelled(self, task_id: str) -> bool:
        return _s(self.client.hget(keys.task(task_id), "status") or b"") == TaskStatus.CANCELLED

    # -- liveness and recovery -----------------------------------------------------------
    def heartbeat(self, agent_id: str, ttl: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.heartbeat(agent_id), repr(time.time()), px=int(ttl * 1000))
        pipe.sadd(keys.AGENTS_SEEN, agent_id)
        pipe.execute()

    def forget(self, agent_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(keys.heartbeat(agent_id))
        pipe.srem(keys.AGENTS_SEEN, agent_id)
        pipe.execute()

    def reap(self, agent_id: str, actor: str, force: bool = False) -> tuple[int, int]:
        lists = [keys.processing(agent_id)]
        if self.source == keys.agent_tasks(agent_id):
            # Stage 2: tasks dispatched to this agent but not started are its work too.
            lists.append(self.source)
        requeued = dropped = 0
        for work_list in lists:
            r, d = reap_list(
                self.store,
                work_list,
                agent_id,
                self.requeue_to,
                actor,
                force,
                keys.heartbeat(agent_id),
            )
            requeued, dropped = requeued + r, dropped + d
        return requeued, dropped

    def reap_dead_agents(self, actor: str) -> int:
        total = 0
        for member in self.client.smembers(keys.AGENTS_SEEN):
            agent_id = _s(member)
            if self.client.exists(keys.heartbeat(agent_id)):
                continue
            requeued, dropped = self.reap(agent_id, actor)
            total += requeued
            if requeued or dropped:
                log.warning(
                    "agent %s stopped heartbeating: re-queued %d task(s), dropped %d",
                    agent_id,
                    requeued,
                    dropped,
                )
            if not self.client.exists(keys.processing(agent_id)):
                self.client.srem(keys.AGENTS_SEEN, agent_id)
        return total

    def promote_due(self, limit: int = 500) -> int:
        return int(
            self.store.scripts.promote(
                keys=[keys.DELAYED_QUEUE, self.requeue_to], args=[repr(time.time()), limit]
            )
        )


def reap_list(
    store: RedisTaskStore,
    work_list: str,
    agent_id: str,
    requeue_to: str,
    actor: str,
    force: bool = True,
    heartbeat_key: str = "",
) -> tuple[int, int]:
    """Give back every task on `work_list` that `agent_id` held; returns (requeued, dropped)."""
    requeued, dropped = store.scripts.reap(
        keys=[
            work_list,
            heartbeat_key or keys.heartbeat(agent_id),
            requeue_to,
            keys.TRANSITION_STATS,
        ],
        args=[agent_id, repr(time.time()), "1" if force else "0", actor],
    )
    return int(requeued), int(dropped)


def _claimed(flat: list, message: str, attempt: int, epoch: int) -> Claim:
    """A Claim from the task hash a claim script returned (HGETALL's flat field/value list)."""
    fields = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}
    return Claim(
        task=Task.from_hash(fields),
        message=message,
        attempt=attempt,
        epoch=epoch,
        retries_used=int(fields.get("retriesUsed") or 0),
    )


def _dispatch_stamp(raw: str) -> tuple[int, int] | None:
    """(attempt, epoch) of a message a stage 2 scheduler dispatched, None for any other."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or "attempt" not in data:
        return None
    try:
        return int(data["attempt"]), int(data.get("epoch", 0))
    except (TypeError, ValueError):
        return None
