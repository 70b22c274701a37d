"""Write an attempt's outcome decision to Redis: the one writer the agent (stages 1, 2) and the
manager (stage 3) share.

The decision itself is the domain's (`common.domain.outcome.decide`); this adapter only turns
it into one fenced transition with its effects, all in one Lua script:
- the attempt's entry leaves the agent's `processing:{agentId}` list,
- its captured output lines are appended to `task:{id}:logs` (capped),
- a retry's queue message goes onto `queue:delayed` until its backoff elapses.
A refused write (a late report of a superseded attempt, a task cancelled meanwhile) changes
nothing but dropping the entry: the store's refusal is the point of fencing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis

from common import keys
from common.adapters.redis_store import RedisTaskStore, as_result, named_effects, transition_arg
from common.domain.backoff import ExponentialBackoff
from common.domain.outcome import AttemptReport, Decision, decide
from common.domain.task import Task
from common.observability import metrics
from common.ports.agent import Assignment
from common.ports.task_store import TransitionResult

# At most this many output lines are kept per task: a task that prints forever must not make
# one Redis call, or the list, grow without bound.
MAX_STORED_LINES = 10_000


@dataclass(frozen=True)
class Written:
    decision: Decision
    result: TransitionResult


class RedisOutcomeWriter:
    def __init__(
        self, client: Redis, store: RedisTaskStore, backoff: ExponentialBackoff | None = None
    ) -> None:
        self.client = client
        self.store = store
        self.backoff = backoff or ExponentialBackoff()

    def decide(
        self, task: Task, report: AttemptReport, retries_used: int | None = None
    ) -> Decision:
        if retries_used is None:
            retries_used = int(self.client.hget(keys.task(task.task_id), "retriesUsed") or 0)
        return decide(
            report,
            retries_used=retries_used,
            retry_count=task.retry_count,
            backoff=self.backoff,
            finished_at=time.time(),
        )

    def request(
        self, attempt: Assignment, decision: Decision, agent_id: str, lines: list[str] | None = None
    ) -> tuple[list[str], str]:
        """(KEYS, ARGV[1]) of transition.lua for this decision about `attempt`, run by
        `agent_id` (also its actor): also the first half of finish_take.lua's arguments."""
        assert decision.to is not None
        task, entry = attempt.task, attempt.entry
        effects: list[dict] = []
        if entry:
            effects.append({"op": "lrem", "key": "processing", "v": entry})
        if lines:
            effects.append(
                {"op": "rpush_all", "key": "logs", "v": lines[:MAX_STORED_LINES], "cap": 10_000}
            )
        if decision.retry_delay is not None:
            # The plain queue message, not the entry: the retry is a new placement, and the
            # old attempt's stamp means nothing to it.
            due = time.time() + decision.retry_delay
            effects.append({"op": "zadd", "key": "delayed", "score": due, "v": task.to_message()})
        all_keys, effects = named_effects(
            task.task_id,
            {
                "processing": keys.processing(agent_id),
                "logs": keys.logs(task.task_id),
                "delayed": keys.DELAYED_QUEUE,
            },
            effects,
        )
        arg = transition_arg(
            decision.to,
            attempt=attempt.attempt,
            epoch=attempt.epoch,
            actor=agent_id,
            fields=decision.fields,
            clear=decision.clear,
            reason=decision.reason,
            effects=effects,
        )
        return all_keys, arg

    def write(
        self, attempt: Assignment, decision: Decision, agent_id: str, lines: list[str] | None = None
    ) -> TransitionResult:
        """Carry out a decision; a decision that writes nothing only drops the entry."""
        if not decision.writes:
            if attempt.entry:
                self.client.lrem(keys.processing(agent_id), 1, attempt.entry)
            metrics.record_outcome(attempt.task.task_type.value, decision.verdict.value, True)
            return TransitionResult(True, "ok", decision.verdict.value, attempt.attempt)
        all_keys, arg = self.request(attempt, decision, agent_id, lines)
        result = as_result(self.store.scripts.transition(keys=all_keys, args=[arg]))
        metrics.record_outcome(
            attempt.task.task_type.value, decision.verdict.value, result.accepted
        )
        if not result.accepted and attempt.entry:
            # Refused (a late report, a cancel won): the entry is stale either way.
            self.client.lrem(keys.processing(agent_id), 1, attempt.entry)
        return result
