"""An at-least-once consumer loop: handle a message, then (and only then) store its offset.

What happens to each message, by what its handler does:

- returns: the effect is in Redis; the offset is stored and committed within a second.
- raises `Unprocessable` (or the message does not parse): it can never be applied. It goes to
  the dead-letter topic with headers naming where it came from and why, then its offset is
  stored, and the partition moves on to the next message.
- raises `NotYet`: it can be applied later (it depends on messages of another topic that have
  not been read yet). Its partition is paused and rewound to it; every other partition keeps
  flowing; it is handled again after `retry_after`.
- raises a transient error (Redis unreachable): the same as NotYet, with a backoff. A
  message is never dead-lettered because a dependency was briefly down.

A crash anywhere redelivers from the last committed offset, so every handler must be
idempotent: applying a message twice must change nothing the first time did not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from redis.exceptions import RedisError

from common.messaging.clients import Bus, consumer_config
from common.messaging.dead_letter import DeadLetters, DeadLetterUnavailable
from common.messaging.schemas import MalformedMessage
from common.observability import get_logger

log = get_logger("tasklab.consumer")


class Unprocessable(Exception):
    """This message can never be applied (unknown task, impossible transition)."""


class NotYet(Exception):
    """This message can be applied later; handle it again after `retry_after` seconds."""

    def __init__(self, reason: str, retry_after: float = 0.05) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


Handler = Callable[[Message], None]


class AtLeastOnceConsumer:
    def __init__(
        self,
        bus: Bus,
        group: str,
        client_id: str,
        handlers: dict[str, Handler],
        dead_letters: DeadLetters,
        transient: tuple[type[BaseException], ...] = (RedisError,),
        retry_backoff: float = 0.5,
        **config: object,
    ) -> None:
        self.bus = bus
        self.group = bus.group(group)
        self.consumer = Consumer(consumer_config(bus, group, client_id, **config))
        # Handlers are registered by base topic name; messages arrive with the full name.
        self.handlers = {bus.topic(topic): handler for topic, handler in handlers.items()}
        self.dead_letters = dead_letters
        self.transient = transient
        self.retry_backoff = retry_backoff
        self.handled = 0
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
        self.consumer.subscribe(list(self.handlers), on_revoke=self._on_revoke)
        next_tick = 0.0
        try:
            while not stopping.is_set():
                now = time.monotonic()
                self._resume_due(now)
                if tick is not None and now >= next_tick:
                    next_tick = now + tick_interval
                    tick()
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
        finally:
            # Leaves the group at once (no session timeout for the others to wait out) and
            # commits the offsets stored so far.
            self.consumer.close()

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
        # At-least-once: stored only now that the effect is in Redis (or the message is safely
        # in the dead-letter topic). The commit thread commits it within a second.
        self.consumer.store_offsets(message=msg)
        return None

    # --8<-- [end:apply]
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

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The next owner starts from the last committed offset, which is before any held
        # message (held messages are never stored): nothing is skipped.
        for tp in partitions:
            self._held.pop((tp.topic, tp.partition), None)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise KafkaException(err)
        # Broker down, leader moving, and the like: librdkafka reconnects by itself.
        log.warning("consumer: %s", err)
