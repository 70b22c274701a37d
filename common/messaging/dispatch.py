"""The scheduler's dispatch over Kafka: the stage 2 dispatcher, plus a message to the agent.

Pattern: Transactional Outbox (introduced in stage 3). Redis and Kafka cannot be written in one
transaction, so one of them has to be the record and the other a delivery channel:

1. The record: SCHEDULED -> DISPATCHED and an entry on `agent:{agentId}:tasks`, in one fenced
   Lua script (exactly stage 2's `RedisDispatcher.dispatch`, or its `place_batch` for a batch
   of tasks in one script). That inbox is the outbox.
2. The delivery: a `DispatchMessage` on task-dispatch-topic, keyed by taskId, with an
   `agentId` header naming the one agent that is to run it, produced to the partition that
   agent reads (its ZooKeeper node names it): one agent reads it, not every agent.
3. The relay: a leader that crashed between 1 and 2, or a broker that was away longer than the
   producer retries, leaves an entry with no message. The leader's recovery sweep publishes
   any inbox entry older than `republish_after` again. A duplicate costs nothing: the agent
   takes an entry off its inbox once (`DispatchLedger.accept`), and only then runs anything.

The opposite order (publish first, then mark DISPATCHED) would let a fast agent read the
message before the task is DISPATCHED and refuse it, stranding the task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from redis import Redis

from common import keys
from common.adapters.redis_dispatch import RedisDispatcher, Scheduled
from common.adapters.redis_events import DispatchLedger
from common.adapters.redis_failover import DEFAULT_MAX_LOST_ATTEMPTS
from common.adapters.redis_store import RedisTaskStore, task_from_reply
from common.domain.dispatch import DispatchEntry
from common.domain.task import DEFAULT_MAX_PAYLOAD_BYTES, TaskValidationError
from common.messaging.clients import EventPublisher
from common.messaging.schemas import CHILD_FIELDS, DispatchMessage
from common.messaging.topics import DISPATCH
from common.observability import get_logger, tracing
from common.ports.dispatcher import Chooser, Placed
from common.ports.task_store import TransitionResult

log = get_logger("tasklab.dispatch")

# The header agents route on, read without parsing the message body.
AGENT_HEADER = "agentId"


# --8<-- [start:dispatcher]
class KafkaDispatcher(RedisDispatcher):
    def __init__(
        self,
        client: Redis,
        store: RedisTaskStore,
        publisher: EventPublisher,
        republish_after: float = 5.0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS,
        dead_letter_max: int | None = None,
        partition_of: Callable[[str], int | None] = lambda agent_id: None,
    ) -> None:
        super().__init__(client, store, max_payload_bytes, max_lost_attempts, dead_letter_max)
        self.publisher = publisher
        # The partition an agent reads, as its node says (None: not known, by the key then; an
        # agent that misses a dispatch that way gets it from the relay once its node is seen).
        self.partition_of = partition_of
        self.ledger = DispatchLedger(client)
        self.republish_after = republish_after
        self.republished = 0
        # (taskId, attempt) -> when its dispatch was last published (monotonic), for the relay.
        self._published: dict[tuple[str, int], float] = {}

    def dispatch(
        self, scheduled: Scheduled, agent_id: str, epoch: int, actor: str
    ) -> TransitionResult:
        result = super().dispatch(scheduled, agent_id, epoch, actor)
        if result.accepted:
            task, attempt = scheduled.task, scheduled.attempt
            self._publish(
                DispatchMessage.for_task(
                    task, attempt, epoch, agent_id, max_payload_bytes=self.max_payload_bytes
                )
            )
        return result

    def place_batch(
        self, raws: Sequence[str], epoch: int, actor: str, choose: Chooser
    ) -> list[Placed]:
        """Stage 2's one fenced script for the whole batch (the record), then one dispatch
        message per task it DISPATCHED (the delivery), each the message `dispatch` publishes.

        A stale epoch refuses the batch whole inside the script, so nothing is accepted and
        nothing is published. A task the script left SCHEDULED (pinned, or no agent chosen)
        comes back to the scheduler, which places it with `dispatch`, publishing it there.
        """
        placed = super().place_batch(raws, epoch, actor, choose)
        # (taskId, agentId, attempt) of each dispatch the script accepted, in the batch's order.
        dispatched = [
            (p.task_id, p.agent_id, p.outcome.attempt)
            for p in placed
            if isinstance(p.outcome, TransitionResult)
            and p.outcome.accepted
            and p.task_id
            and p.agent_id
        ]
        if not dispatched:
            return placed
        # The message is built from the task as stored, as `dispatch` builds it from what
        # `schedule` read: a composite's child has its place and input (CHILD_FIELDS) in its
        # hash only, not in its queue message. One pipelined HGETALL for the batch, after the
        # script: the same read and the same task_from_reply as the store's get, so the two
        # messages are equal by construction, at one round trip per batch. (Returning the
        # fields from place_batch.lua would save that round trip but give stage 2's script a
        # second, Lua copy of the hash -> message mapping, and stage 2 no use for it.)
        pipe = self.client.pipeline(transaction=False)
        for task_id, _, _ in dispatched:
            pipe.hgetall(keys.task(task_id))
        for (task_id, agent_id, attempt), data in zip(dispatched, pipe.execute(), strict=True):
            if not data:
                # Deleted by hand between the script and this read: no agent could claim it.
                # Its inbox entry stays the relay's, which rebuilds a message from the entry.
                log.warning("dispatched task %s has no hash: not published", task_id)
                continue
            task = task_from_reply(data)
            # Outbox order kept: the script above wrote the record; a publish the broker never
            # acknowledges leaves the inbox entry, which the relay publishes again.
            self._publish(
                DispatchMessage.for_task(
                    task, attempt, epoch, agent_id, max_payload_bytes=self.max_payload_bytes
                )
            )
        return placed

    def await_room(self, timeout: float) -> bool:
        """An agent's accept pushes a token on scheduler:room (accept_dispatch.lua): one
        blocking read returns when the next one does, or at `timeout`."""
        self.client.blpop([keys.INBOX_ROOM], timeout=timeout)
        return True

    def recover_scheduling(self, epoch: int, actor: str) -> tuple[int, int]:
        """The leader's sweep (stage 2), plus the outbox relay: only a leader that is still
        current (not below the fence) publishes again."""
        requeued, dropped = super().recover_scheduling(epoch, actor)
        if requeued >= 0:
            self.republish_stale()
        return requeued, dropped

    def republish_stale(self) -> int:
        """Publish again every inbox entry that has waited `republish_after` since its last
        publication; returns how many."""
        now = time.monotonic()
        present: set[tuple[str, int]] = set()
        count = 0
        for agent_id in sorted(self.agents_with_work()):
            for entry in self.ledger.inbox(agent_id):
                parsed = _parse_entry(entry, agent_id, self.max_payload_bytes)
                if parsed is None:
                    continue
                key = (parsed.task_id, parsed.attempt)
                present.add(key)
                last = self._published.setdefault(key, now)
                if now - last < self.republish_after:
                    continue
                message, traceparent = self._message(parsed, agent_id)
                self._publish(message, traceparent)
                count += 1
                log.warning(
                    "dispatch of %s attempt %d to %s not taken up after %.1fs: published again",
                    message.task_id,
                    message.attempt,
                    agent_id,
                    now - last,
                )
        # Forget what left the inboxes (taken by its agent, or given back by a failover).
        for key in set(self._published) - present:
            del self._published[key]
        self.republished += count
        return count

    def _message(self, parsed: DispatchEntry, agent_id: str) -> tuple[DispatchMessage, str | None]:
        """Rebuild the dispatch message of an inbox entry, with the task's stored traceparent.
        The entry is the task's queue message (its spec); a composite's child has more (its
        index, its input), read from its hash, as the first dispatch was built from it."""
        task = parsed.task
        stored = self.store.get(parsed.task_id)
        if stored is not None and stored.parent_id is not None:
            task = task.model_copy(update={name: getattr(stored, name) for name in CHILD_FIELDS})
        message = DispatchMessage.for_task(
            task, parsed.attempt, parsed.epoch, agent_id, max_payload_bytes=self.max_payload_bytes
        )
        return message, stored.traceparent if stored is not None else None

    def _publish(self, message: DispatchMessage, traceparent: str | None = None) -> None:
        self._published[(message.task_id, message.attempt)] = time.monotonic()
        headers = {AGENT_HEADER: message.agent_id}
        # The attempt's trace travels with the dispatch, beside the body, as HTTP carries it:
        # the scheduler's "schedule" span (current here) or, republished, the stored one.
        traceparent = traceparent or tracing.current_traceparent()
        if traceparent:
            headers[tracing.TRACEPARENT] = traceparent
        # Asynchronous: the Redis record is already written, and the relay covers a message
        # the broker never acknowledges, so the leader does not wait for one here.
        self.publisher.publish(
            DISPATCH,
            key=message.task_id,
            message=message,
            headers=headers,
            partition=self.partition_of(message.agent_id),
        )


# --8<-- [end:dispatcher]
def _parse_entry(entry: str, agent_id: str, max_payload_bytes: int) -> DispatchEntry | None:
    try:
        return DispatchEntry.parse(entry, max_payload_bytes)
    except TaskValidationError:
        log.warning("inbox of %s holds an entry that is not a dispatch: %.80r", agent_id, entry)
        return None
