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


Handler = Callable[[Message], None]
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
        **config: object,
    ) -> None:
        self.bus = bus
        self.group = bus.group(group)
        self._config = consumer_config(bus, group, client_id, **config)
        self.consumer = Consumer(self._config)
        self.replaced = 0  # consumers built anew after a fatal error
        # Handlers are registered by base topic name; messages arrive with the full name.
        self.handlers = {bus.topic(topic): handler for topic, handler in handlers.items()}
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
            if msg.error() is not None:
                self._on_error(msg.error())
                continue
            if (msg.topic(), msg.partition()) in self._held:
                # Fetched before the pause; the seek makes the broker send it again later.
                continue
            self.process(msg)

    def process(self, msg: Message) -> None:
        delay = self._apply(msg)
        if delay is not None:
            self._hold(msg, delay)

    # --8<-- [start:apply]
    def _apply(self, msg: Message) -> float | None:
        """Handle one message; None when done with it, else seconds until it is tried again."""
        handler = self.handlers[msg.topic()]
        error: str | None = None
        try:
            handler(msg)
        except NotYet as exc:
            log.debug("not yet %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            return exc.retry_after
        except self.transient as exc:
            log.warning("transient failure on %s, will retry: %s", msg.topic(), exc)
            return self.retry_backoff
        except (Unprocessable, MalformedMessage) as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a handler bug must not stop the partition
            log.exception("handler failed on %s[%d]@%d", msg.topic(), msg.partition(), msg.offset())
            error = f"{type(exc).__name__}: {exc}"
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
