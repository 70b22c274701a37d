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
import re
import time
from collections import Counter
from dataclasses import dataclass

from redis import Redis

from common import keys
from common.adapters.redis_client import as_text as _s
from common.adapters.redis_dead_letter import dead_letter_message
from common.adapters.redis_failover import (
    DEFAULT_MAX_LOST_ATTEMPTS,
    RedisFailover,
    reap_dead_agents,
)
from common.adapters.redis_scripts import script_source
from common.adapters.redis_store import RedisTaskStore, as_result
from common.domain.dispatch import dispatch_stamp, entry_ref
from common.domain.idempotency import IdempotencyConflict, spec_fingerprint
from common.domain.task import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Task,
    TaskValidationError,
    parse_task_message,
)
from common.observability import get_logger
from common.ports.task_store import TransitionResult

log = get_logger("tasklab.queue")

# How many messages at the queue's tail a chained report peeks for the next one to claim in
# its own script. More than one: while agents race for the tail, the message this agent saw
# last is often taken by another, and the one behind it is then the tail.
PEEK = 4

# A taskId as the platform mints it: only such an id is used to name keys without a full parse.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


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


class RedisWorkQueue:
    def __init__(
        self,
        client: Redis,
        store: RedisTaskStore,
        source: str = keys.PENDING_QUEUE,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        requeue_to: str | None = None,
        max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS,
        dead_letter_max: int | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.source = source
        self.requeue_to = requeue_to or source
        self.max_payload_bytes = max_payload_bytes
        # An inbox (stage 2: the scheduler's dispatch entries), not the shared queue.
        self.reads_inbox = source != keys.PENDING_QUEUE
        self.failover = RedisFailover(client, max_lost_attempts)
        self.dead_letter_max = dead_letter_max
        self._finish_take = client.register_script(script_source("finish_take", "claim_task"))

    # -- taking ------------------------------------------------------------------------
    # --8<-- [start:take]
    def take_reliably(self, agent_id: str, timeout: float) -> str | None:
        raw = self.client.blmove(self.source, keys.processing(agent_id), timeout, "RIGHT", "LEFT")
        return None if raw is None else _s(raw)

    # --8<-- [end:take]

    def claim(
        self, agent_id: str, raw: str, tracked: bool = True, fast: bool = True
    ) -> Claim | Rejected:
        """Turn a taken message into a RUNNING task owned by `agent_id`, or reject it.

        On an inbox (stage 2) a message stamped with an attempt and epoch is a dispatch entry,
        checked against the task; on `queue:pending` (stage 1) every message is a submission,
        whatever fields it carries (the platform's own are ignored, never trusted).
        """
        if fast:  # fast=False: the fast claim already answered that the task does not exist
            got = self._claim_submitted(agent_id, raw, tracked)
            if got is not None:
                return got
        try:
            task_id, spec = parse_task_message(raw, self.max_payload_bytes)
        except TaskValidationError as exc:
            self.dead_letter(agent_id, raw, str(exc), tracked)
            return Rejected(f"dead-lettered: {exc}")
        task = Task.new(spec, task_id=task_id)
        dispatched = dispatch_stamp(raw) if self.reads_inbox else None
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
                *keys.request_keys(spec.request_id),
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
                "1" if spec.request_id else "0",
                spec_fingerprint(spec),
            ],
        )
        result = as_result(raw_result)
        if result.reason == "idempotency_conflict":
            assert spec.request_id
            conflict = IdempotencyConflict(spec.request_id, _s(raw_result[4]))
            self.dead_letter(agent_id, raw, str(conflict), tracked)
            return Rejected(f"dead-lettered: {conflict}")
        if not result.accepted:
            if dispatched and result.reason == "missing":
                # Stamped like a dispatch, but no such task: nothing placed it. It must not
                # vanish: the dead letters keep it, with the reason.
                self.dead_letter(agent_id, raw, "dispatch entry of a task that does not exist")
                return Rejected("dead-lettered: dispatch entry of a missing task", task.task_id)
            return Rejected(
                f"not claimable: {result.reason} (status {result.status})", task.task_id
            )
        epoch = dispatched[1] if dispatched else 0
        return _claimed(raw_result[4], message, result.attempt, epoch)

    def finish_and_take(
        self,
        agent_id: str,
        report_keys: list[str],
        report_arg: str,
        entry: str,
        peeked: list[str],
        peek: int = PEEK,
    ) -> tuple[TransitionResult, Claim | Rejected | None, list[str]]:
        """A report (KEYS and ARGV[1] of transition.lua) and the next message, in one round
        trip (finish_take.lua): the result, the next message claimed (or rejected; None if the
        queue was empty), and the `peek` messages now at the tail, for the next call's `peeked`.

        The script claims the next message itself when it is one of `peeked` (their keys go in
        KEYS); otherwise it only moves it to the processing list and `claim()` claims it here,
        a second round trip. A refused report's `entry` is dropped in the same script.
        """
        candidates = self._plain_ids(peeked)
        task_keys = [
            k
            for _, task_id, _, _ in candidates
            for k in (keys.task(task_id), keys.history(task_id))
        ]
        reply = self._finish_take(
            keys=[
                *report_keys,
                self.source,
                keys.TASK_INDEX,
                *keys.request_keys(None),
                *task_keys,
            ],
            args=[
                report_arg,
                entry,
                agent_id,
                repr(time.time()),
                peek,
                *(part for pair in candidates for part in pair),
            ],
        )
        result, moved, claimed, tail = reply
        tail = [_s(m) for m in tail]
        if not moved:
            return as_result(result), None, tail
        raw = _s(moved)
        if not claimed:
            # Not one of the peeked messages: claimed as a message BLMOVE took would be.
            return as_result(result), self.claim(agent_id, raw, tracked=True), tail
        if self.reads_inbox:
            # A peeked dispatch entry, claimed against its stamp (the peek passed it).
            stamp = dispatch_stamp(raw)
            task_id = entry_ref(raw)[0] or ""
            got = self._dispatched_answer(claimed, raw, task_id, stamp, agent_id)
            return as_result(result), got, tail
        got = self._fast_answer(claimed, raw, entry_ref(raw)[0] or "")
        # None: a hand-pushed message naming a task that does not exist yet, to create.
        return as_result(result), got or self.claim(agent_id, raw, True, fast=False), tail

    def _plain_ids(self, messages: list[str]) -> list[tuple[str, str, str, str]]:
        """(message, taskId, attempt, epoch) of the messages the fast claim may take from their
        keys alone: on queue:pending a message naming a task (no stamp), on an inbox a dispatch
        entry with its whole stamp."""
        found = []
        for raw in messages:
            task_id, _ = entry_ref(raw)
            if task_id is None or not _UUID.match(task_id):
                continue
            if not self.reads_inbox:
                found.append((raw, task_id, "", ""))
            elif (stamp := dispatch_stamp(raw)) is not None:
                found.append((raw, task_id, str(stamp[0]), str(stamp[1])))
        return found

    def _claim_submitted(self, agent_id: str, raw: str, tracked: bool) -> Claim | Rejected | None:
        """The common case, without parsing the task in Python: a message a client submitted
        names a task that exists, so there is nothing to validate or create; claim.lua claims
        it from its keys. None: not such a message, the full claim decides."""
        task_id, attempt = entry_ref(raw)
        if task_id is None or not _UUID.match(task_id):
            return None
        if attempt is not None and self.reads_inbox:
            return self._claim_dispatched(agent_id, raw, task_id, tracked)
        reply = self._claim_existing(agent_id, raw, task_id, tracked, ("", ""))
        return self._fast_answer(reply, raw, task_id)

    def _claim_existing(
        self, agent_id: str, raw: str, task_id: str, tracked: bool, stamp: tuple[str, str]
    ):
        """claim.lua for a message naming a task that exists (no spec to create it from);
        `stamp` is the dispatch entry's (attempt, epoch), or ("", "") for a queue message."""
        return self.store.scripts.claim(
            keys=[
                keys.task(task_id),
                keys.history(task_id),
                keys.TRANSITION_STATS,
                keys.processing(agent_id),
                keys.TASK_INDEX,
                *keys.request_keys(None),
            ],
            args=[raw, raw, "", agent_id, repr(time.time()), task_id, "1" if tracked else "0",
                  *stamp, "0", ""],
        )  # fmt: skip

    def _claim_dispatched(
        self, agent_id: str, raw: str, task_id: str, tracked: bool
    ) -> Claim | Rejected | None:
        """The stage 2 common case, without parsing the task in Python: a dispatch entry the
        leader put on this inbox. claim.lua checks its stamp (attempt, epoch) against the task
        and returns the task as stored, which is what runs; the entry's own spec is never
        read. None: not a whole stamp, the full claim decides."""
        stamp = dispatch_stamp(raw)
        if stamp is None:
            return None
        reply = self._claim_existing(
            agent_id, raw, task_id, tracked, (str(stamp[0]), str(stamp[1]))
        )
        return self._dispatched_answer(reply, raw, task_id, stamp, agent_id, tracked)

    def _dispatched_answer(
        self,
        reply: list,
        raw: str,
        task_id: str,
        stamp: tuple[int, int] | None,
        agent_id: str,
        tracked: bool = True,
    ) -> Claim | Rejected:
        """The answer of claim_task() for a dispatch entry (claim.lua, finish_take.lua)."""
        result = as_result(reply)
        if result.accepted and stamp is not None:
            return _claimed(reply[4], raw, result.attempt, stamp[1])
        if result.reason == "missing":
            # Stamped like a dispatch, but no such task: nothing placed it. It must not vanish:
            # the dead letters keep it, with the reason (as the full claim does).
            self.dead_letter(agent_id, raw, "dispatch entry of a task that does not exist", tracked)
            return Rejected("dead-lettered: dispatch entry of a missing task", task_id)
        return Rejected(f"not claimable: {result.reason} (status {result.status})", task_id)

    def _fast_answer(self, reply: list, raw: str, task_id: str) -> Claim | Rejected | None:
        """A fast claim's answer (claim.lua or finish_take.lua); None if the task does not
        exist yet and the full claim must create it."""
        result = as_result(reply)
        if result.reason == "not_created":
            return None
        if not result.accepted:
            return Rejected(f"not claimable: {result.reason} (status {result.status})", task_id)
        return _claimed(reply[4], raw, result.attempt, 0)

    def dead_letter(self, agent_id: str, raw: str, reason: str, tracked: bool = True) -> None:
        taken_from = keys.processing(agent_id) if tracked else None
        dead_letter_message(
            self.client, raw, reason, agent_id, self.source, taken_from, self.dead_letter_max
        )

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

    def reap(
        self, agent_id: str, actor: str, force: bool = False, reaper: str | None = None
    ) -> tuple[int, int]:
        """Give back `agent_id`'s work (common.adapters.redis_failover); (requeued, dropped).

        force = this agent's own start-up; else a reaper's, refused while its heartbeat lives
        (or, given the reaping agent `reaper`, while that one's own has lapsed).
        """
        lists = [keys.processing(agent_id)]
        if self.source == keys.agent_tasks(agent_id):
            # Stage 2: tasks dispatched to this agent but not started are its work too.
            lists.append(self.source)
        done = self.failover.reap(
            agent_id,
            lists,
            self.requeue_to,
            actor,
            "own" if force else "heartbeat",
            reaper=None if force else reaper,
        )
        return done.requeued, done.dropped + done.failed

    def give_back_unheld(self, agent_id: str, held: Counter[str]) -> tuple[int, int]:
        """Give back what `agent_id`'s processing list holds beyond `held` (its running
        attempts' entries): entries its own calls put there unheard. (requeued, dropped)."""
        done = self.failover.give_back_unheld(
            agent_id,
            keys.processing(agent_id),
            held,
            self.requeue_to,
            f"taken for agent {agent_id} by a call that got no answer; never run",
        )
        return done.requeued, done.dropped + done.failed

    def reap_dead_agents(self, actor: str, reaper: str | None = None) -> int:
        return reap_dead_agents(self.client, self.reap, actor, reaper)

    def promote_due(self, limit: int = 500) -> int:
        return int(
            self.store.scripts.promote(
                keys=[keys.DELAYED_QUEUE, self.requeue_to], args=[repr(time.time()), limit]
            )
        )


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
