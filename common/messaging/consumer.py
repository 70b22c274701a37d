"""An at-least-once consumer loop: handle a message, then (and only then) store its offset.

What happens to each message, by what its handler does:

- returns: the effect is in Redis. Its offset is stored (then committed by the client's commit
  thread) once the effect is durable there: once per commit interval, the consumer asks the
  `RedisDurability` barrier (one WAITAOF per batch where Redis has it; see
  common/messaging/durability.py for what is promised where it does not) and stores the
  offsets of everything the barrier covers.
- raises `Unprocessable` (or the message does not parse): it can never be applied. It goes to
  the dead-letter topic with headers naming where it came from and why, then its offset is
  stored, and the partition moves on to the next message.
- raises `NotYet`: it can be applied later (it depends on messages of another topic that have
  not been read yet). Its partition is paused and rewound to it; every other partition keeps
  flowing; it is handled again after `retry_after`.
- raises a transient error (Redis unreachable): the same as NotYet, with a backoff. A
  message is never dead-lettered because a dependency was briefly down.

A crash anywhere redelivers from the last committed offset, so every handler must be
idempotent: applying a message twice must change nothing the first time did not. The same
holds after a rebalance: a partition's next owner starts from its last committed offset.

Batches: a topic may also have a batch handler, given every message of that topic the client
already holds (up to `max_batch`, read without waiting: a batch never holds a message back to
fill up). It answers one outcome per message, in order, with the same meanings as above, so
each message is still settled on its own: a batch of statuses can be applied in one Redis
round trip and one of them still be dead-lettered or held back. The batch handler must not
apply anything behind a held-back message of the same partition (it answers `SKIPPED` for
those): a held partition is rewound to its held message and re-read from there, in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from redis.exceptions import RedisError

from common.messaging.clients import Bus, consumer_config
from common.messaging.dead_letter import DeadLetters, DeadLetterUnavailable
from common.messaging.durability import (
    EVERYSEC_HORIZON,
    PendingOffsets,
    RedisDurability,
    RedisRestarted,
)
from common.messaging.schemas import MalformedMessage
from common.observability import get_logger

log = get_logger("tasklab.consumer")


class Unprocessable(Exception):
    """This message can never be applied (unknown task, impossible transition)."""


class ConsumerFailed(Exception):
    """librdkafka reported a fatal error: this Consumer instance can never consume again."""


class NotYet(Exception):
    """This message can be applied later; handle it again after `retry_after` seconds."""

    def __init__(self, reason: str, retry_after: float = 0.05) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Skipped(Exception):
    """Not applied: behind a held-back message of its partition, it will be read again."""


# What a batch handler answers for a message it did not apply because an earlier message of the
# same partition was held back (NotYet): the partition is rewound to that one and read again.
SKIPPED = _Skipped("behind a held-back message of its partition")

Handler = Callable[[Message], None]
# One outcome per message, in order: None (applied), or the exception its single handler would
# have raised (NotYet, Unprocessable, MalformedMessage, a transient error), or SKIPPED.
BatchHandler = Callable[[list[Message]], list[BaseException | None]]
# Told which partitions this consumer was given or lost (confluent-kafka's rebalance callbacks).
PartitionsListener = Callable[[list[TopicPartition]], None]


class AtLeastOnceConsumer:
    def __init__(
        self,
        bus: Bus,
        group: str,
        client_id: str,
        handlers: dict[str, Handler],
        dead_letters: DeadLetters,
        durability: RedisDurability | None = None,
        transient: tuple[type[BaseException], ...] = (RedisError,),
        retry_backoff: float = 0.5,
        commit_interval: float = 1.0,
        on_assign: PartitionsListener | None = None,
        on_revoke: PartitionsListener | None = None,
        batch_handlers: dict[str, BatchHandler] | None = None,
        max_batch: int = 500,
        **config: object,
    ) -> None:
        self.bus = bus
        self.group = bus.group(group)
        self._config = consumer_config(bus, group, client_id, **config)
        self.consumer = Consumer(self._config)
        self.replaced = 0  # consumers built anew after a fatal error
        # Handlers are registered by base topic name; messages arrive with the full name.
        self.handlers = {bus.topic(topic): handler for topic, handler in handlers.items()}
        # A batch handler stands beside a topic's single handler, which stays the fallback.
        self.batch_handlers = {
            bus.topic(topic): handler for topic, handler in (batch_handlers or {}).items()
        }
        self.max_batch = max(1, max_batch)
        self.batches = 0  # batches given to a batch handler
        self.dead_letters = dead_letters
        self.transient = transient
        self.retry_backoff = retry_backoff
        # None only where no effect lands in Redis (a handler that writes elsewhere).
        self.durability = durability
        self.commit_interval = commit_interval
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.handled = 0
        self._pending = PendingOffsets()
        self._rewind_due = False  # Redis restarted: re-read everything not committed
        self._held: dict[tuple[str, int], float] = {}  # paused partition -> when to resume
        self._stopping = threading.Event()

    def run(
        self,
        stopping: threading.Event,
        tick: Callable[[], None] | None = None,
        tick_interval: float = 0.2,
    ) -> None:
        """Consume until `stopping` is set; call `tick()` about every `tick_interval` seconds."""
        self._stopping = stopping
        self._subscribe()
        try:
            while not stopping.is_set():
                try:
                    self._consume(stopping, tick, tick_interval)
                except ConsumerFailed as exc:
                    self._replace(exc)
        finally:
            self._store_before_close()
            # Commits the offsets stored so far. (A static member, with group.instance.id,
            # does not leave the group: its partitions wait out session.timeout.ms.)
            self.consumer.close()

    def _subscribe(self) -> None:
        self.consumer.subscribe(
            list(self.handlers),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _replace(self, exc: ConsumerFailed) -> None:
        """A new Consumer for a dead one. A static member (group.instance.id) whose session
        timed out while the broker was down is fenced when it rejoins, and librdkafka leaves
        that consumer hung for good (confluentinc/librdkafka#3437): without this the process
        lives on and consumes nothing. What it held is forgotten, not committed (a fenced
        member commits nothing); the new member re-reads from the last committed offsets."""
        log.error("consumer: %s: starting a new consumer in its place", exc)
        try:
            partitions = self.consumer.assignment()
        except KafkaException:
            partitions = []
        self._forget(partitions)
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as err:
            log.warning("consumer: closing the failed consumer: %s", err)
        self._stopping.wait(self.retry_backoff)
        self.consumer = Consumer(self._config)
        self.replaced += 1
        self._subscribe()

    def _consume(
        self,
        stopping: threading.Event,
        tick: Callable[[], None] | None,
        tick_interval: float,
    ) -> None:
        next_tick = next_commit = 0.0
        while not stopping.is_set():
            now = time.monotonic()
            self._resume_due(now)
            if tick is not None and now >= next_tick:
                next_tick = now + tick_interval
                tick()
            if now >= next_commit:
                next_commit = now + self.commit_interval
                self.store_durable(now)
            msg = self.consumer.poll(0.1)
            if msg is None:
                continue
            batch = [msg]
            if self.max_batch > 1 and msg.error() is None:
                # Whatever else the client has already fetched, without waiting for more: a
                # batch is what arrived together, so batching adds no latency. (consume() with
                # a timeout waits for a full batch in some client versions; 0 never waits.)
                batch += self.consumer.consume(self.max_batch - 1, 0)
            self.process_batch(batch)

    def process_batch(self, msgs: list[Message]) -> None:
        """Handle what one read returned: single-handler topics first, message by message,
        then each batch topic's messages in one call (log lines before the final statuses
        that wait for them)."""
        grouped: dict[str, list[Message]] = {}
        for msg in msgs:
            if msg.error() is not None:
                self._on_error(msg.error())
                continue
            if msg.topic() in self.batch_handlers:
                grouped.setdefault(msg.topic(), []).append(msg)
            else:
                self.process(msg)
        for topic, group in grouped.items():
            self._apply_batch(topic, group)

    def process(self, msg: Message) -> None:
        if (msg.topic(), msg.partition()) in self._held:
            # Fetched before the pause; the seek makes the broker send it again later.
            return
        delay = self._apply(msg)
        if delay is not None:
            self._hold(msg, delay)

    def _apply_batch(self, topic: str, msgs: list[Message]) -> None:
        msgs = [m for m in msgs if (m.topic(), m.partition()) not in self._held]
        if not msgs:
            return
        if len(msgs) == 1:
            self.process(msgs[0])
            return
        try:
            outcomes = self.batch_handlers[topic](msgs)
            if len(outcomes) != len(msgs):
                raise RuntimeError(f"{len(outcomes)} outcome(s) for {len(msgs)} message(s)")
        except Exception:  # noqa: BLE001 - a batch handler bug must not stop the partitions
            # One message at a time instead, through the single handler, which settles each
            # on its own (a bug there dead-letters that message only). Handlers are idempotent,
            # so whatever the batch applied before it failed is applied again harmlessly.
            log.exception("batch handler failed on %d message(s) of %s", len(msgs), topic)
            for msg in msgs:
                self.process(msg)
            return
        self.batches += 1
        for msg, outcome in zip(msgs, outcomes, strict=True):
            if (msg.topic(), msg.partition()) in self._held:
                continue  # behind a held message: read again from there
            if outcome is SKIPPED:
                # Skipped, yet its partition is not held (the hold fell back to retrying in
                # place): it was not applied, so apply it now, in order.
                self.process(msg)
                continue
            delay = self._settle(msg, outcome)
            if delay is not None:
                self._hold(msg, delay)

    # --8<-- [start:apply]
    def _apply(self, msg: Message) -> float | None:
        """Handle one message; None when done with it, else seconds until it is tried again."""
        handler = self.handlers[msg.topic()]
        try:
            handler(msg)
        except Exception as exc:  # noqa: BLE001 - settled below, a bug included
            return self._settle(msg, exc)
        return self._settle(msg, None)

    def _settle(self, msg: Message, outcome: BaseException | None) -> float | None:
        """What a message's handling came to; None when done with it, else seconds until it
        is tried again."""
        error: str | None = None
        if isinstance(outcome, NotYet):
            log.debug("not yet %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), outcome)
            return outcome.retry_after
        if isinstance(outcome, self.transient):
            log.warning("transient failure on %s, will retry: %s", msg.topic(), outcome)
            return self.retry_backoff
        if isinstance(outcome, (Unprocessable, MalformedMessage)):
            error = str(outcome)
        elif outcome is not None:
            # A handler bug must not stop the partition: dead-lettered with its type.
            log.error(
                "handler failed on %s[%d]@%d",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                exc_info=outcome,
            )
            error = f"{type(outcome).__name__}: {outcome}"
        if error is not None:
            try:
                self.dead_letters.send(msg, error)
            except DeadLetterUnavailable as exc:
                log.warning("%s; will retry", exc)
                return self.retry_backoff
        self.handled += 1
        # At-least-once: the effect is in Redis (or the message is safely in the dead-letter
        # topic). Its offset is stored by `store_durable`, once Redis has it on disk.
        self._pending.handled(msg.topic(), msg.partition(), msg.offset())
        return None

    # --8<-- [end:apply]
    # --8<-- [start:store-durable]
    def store_durable(self, now: float) -> None:
        """Store the offsets of what was handled, as far as the effects are durable in Redis.

        One barrier per call (one WAITAOF, or one INFO read), for every message handled since
        the last call: the price of durability is paid per batch, not per message.
        """
        self._pending.cut(now)
        if self._rewind_due and not self._rewind():
            return
        if not self._pending:
            return
        try:
            cutoff = now - (self.durability.horizon if self.durability else 0.0)
            offsets = self._pending.ready(cutoff)
            if not offsets:
                return
            if self.durability is not None and not self.durability.durable(now):
                return  # not on disk yet (or Redis reports trouble): ask again next interval
        except RedisRestarted as exc:
            log.warning("%s: reading again everything not committed", exc)
            self._rewind_due = True
            self._rewind()
            return
        except self.transient as exc:
            log.warning("cannot confirm durability in Redis, offsets held back: %s", exc)
            return
        try:
            self.consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            )
        except KafkaException as exc:
            # A partition revoked meanwhile: its next owner reads it again from the last
            # commit, which is what at-least-once promises.
            log.info("offsets not stored (%s); they will be read again", exc)
        self._pending.stored(cutoff)

    # --8<-- [end:store-durable]
    def _rewind(self) -> bool:
        """Seek every assigned partition back to its committed offset: what was applied since
        may have died with the old Redis, and handlers are idempotent. True once done."""
        try:
            positions = self.consumer.committed(self.consumer.assignment(), timeout=10)
            for tp in positions:
                if tp.offset < 0:  # never committed: auto.offset.reset says the beginning
                    tp.offset = OFFSET_BEGINNING
                self.consumer.seek(tp)
        except KafkaException as exc:
            # Nothing is stored until the rewind succeeds, so nothing lost can be committed.
            log.warning("cannot rewind yet (%s); offsets held back", exc)
            return False
        self._pending = PendingOffsets()
        self._rewind_due = False
        return True

    def _store_before_close(self) -> None:
        # A clean stop commits everything durable, waiting out the horizon (bounded), so a
        # restart re-reads as little as possible.
        horizon = EVERYSEC_HORIZON if self.durability else 0.0
        deadline = time.monotonic() + horizon + 1.0
        while True:
            self.store_durable(time.monotonic())
            if not self._pending or time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    # -- holding a partition back ------------------------------------------------------------
    def _hold(self, msg: Message, delay: float) -> None:
        tp = TopicPartition(msg.topic(), msg.partition(), msg.offset())
        try:
            self.consumer.pause([tp])
            # Rewind to this message: when the partition resumes, it is fetched again, with
            # everything after it, in order.
            self.consumer.seek(tp)
        except KafkaException as exc:
            # Could not rewind (the partition is being revoked, say). Nothing after this
            # message may be stored before it is handled, so handle it here, in place.
            log.warning("cannot rewind %s[%d] (%s); retrying in place", tp.topic, tp.partition, exc)
            self.consumer.resume([tp])
            while delay is not None and not self._stopping.is_set():
                self._stopping.wait(delay)
                delay = self._apply(msg)
            return
        self._held[(tp.topic, tp.partition)] = time.monotonic() + delay

    def _resume_due(self, now: float) -> None:
        due = [tp for tp, at in self._held.items() if at <= now]
        for topic, partition in due:
            del self._held[(topic, partition)]
            self.consumer.resume([TopicPartition(topic, partition)])

    # -- rebalances -------------------------------------------------------------------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.on_assign is not None:
            self.on_assign(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Store what is durable now: the client commits it as the partitions go, and their
        # next owner re-reads less.
        self.store_durable(time.monotonic())
        self._forget(partitions)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked (this member was thrown out of the group): others may already own
        # them, so nothing can be committed for them any more.
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        # The next owner starts from the last committed offset, which is before any held
        # message (held messages are never stored) and before anything not durable yet:
        # nothing is skipped.
        for tp in partitions:
            self._held.pop((tp.topic, tp.partition), None)
        self._pending.drop({(tp.topic, tp.partition) for tp in partitions})
        if self.on_revoke is not None:
            self.on_revoke(partitions)

    def _on_error(self, err: KafkaError) -> None:
        # A fatal error reaches poll() as code _FATAL, and fatal() is not always set on it.
        if err.fatal() or err.code() == KafkaError._FATAL:
            raise ConsumerFailed(str(err))
        # Broker down, leader moving, and the like: librdkafka reconnects by itself.
        log.warning("consumer: %s", err)
