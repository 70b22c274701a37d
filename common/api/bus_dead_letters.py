"""The dead-letter topic read newest first, for the API and the console (stage 3 on).

The adapter behind `common.ports.bus_dead_letters`. It reads like `tasklab bus dead-letters`
(assigned partitions, no consumer group membership, nothing committed), so looking at the page
neither moves the dead-letter review's "looked at" mark (common/messaging/dead_letter_review.py)
nor takes a message from anyone: a topic is read, not consumed. Each call reads at most `limit`
messages from the end of each partition, within a deadline, so a topic holding a week of dead
letters costs the page what the page shows.

It lives with the API, not in common/messaging, only because messaging is below the api layer
and owns the headers this reads; it imports their names from there rather than copying them.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from common.messaging import dead_letter as headers
from common.messaging.clients import Bus, kafka_log
from common.messaging.topics import DEAD_LETTER
from common.ports.bus_dead_letters import BusDeadLetter, BusDeadLetters, BusUnavailable

# The console's reads: never joins, never commits (the group id is librdkafka's requirement).
READER_GROUP = "tasklab-dead-letter-console"
TIMEOUT = 3.0  # seconds one listing may take, metadata and reads together


class KafkaBusDeadLetters(BusDeadLetters):
    def __init__(self, bus: Bus, timeout: float = TIMEOUT) -> None:
        self.bus = bus
        self.timeout = timeout
        self._consumer: Consumer | None = None
        # One consumer, one caller at a time: a librdkafka consumer is not for concurrent use.
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return True

    @property
    def topic(self) -> str:
        return self.bus.topic(DEAD_LETTER)

    def _reader(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    "bootstrap.servers": self.bus.bootstrap,
                    "group.id": self.bus.group(READER_GROUP),
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "logger": kafka_log,
                    "log_level": 3,
                }
            )
        return self._consumer

    def list(self, limit: int) -> tuple[list[BusDeadLetter], int]:
        with self._lock:
            try:
                return self._list(limit)
            except KafkaException as exc:
                raise BusUnavailable(str(exc.args[0] if exc.args else exc)) from None

    def _list(self, limit: int) -> tuple[list[BusDeadLetter], int]:
        deadline = time.monotonic() + self.timeout
        consumer = self._reader()
        metadata = consumer.list_topics(self.topic, timeout=self.timeout)
        info = metadata.topics.get(self.topic)
        if info is None or info.error is not None:
            return [], 0  # not created yet: nothing was ever dead-lettered on the bus
        total, starts, ends = 0, [], {}
        for p in sorted(info.partitions):
            left = max(0.1, deadline - time.monotonic())
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), left)
            total += high - low
            if high > low:
                starts.append(TopicPartition(self.topic, p, max(low, high - limit)))
                ends[p] = high
        found: list[BusDeadLetter] = []
        if starts:
            consumer.assign(starts)
            try:
                # Bounded twice: by each partition's end as it was a moment ago (a busy topic
                # does not keep the page reading), and by the deadline (a broker gone quiet).
                while ends and time.monotonic() < deadline:
                    msg = consumer.poll(min(0.2, max(0.01, deadline - time.monotonic())))
                    if msg is None:
                        continue
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            ends.pop(msg.partition(), None)
                        continue
                    if msg.offset() < ends.get(msg.partition(), -1):
                        found.append(_read(msg))
                    if msg.offset() + 1 >= ends.get(msg.partition(), -1):
                        ends.pop(msg.partition(), None)
            finally:
                consumer.unassign()
            if ends:
                raise BusUnavailable(f"{self.topic}: no answer within {self.timeout:g} s")
        found.sort(key=lambda d: (d.at or 0.0, d.offset), reverse=True)
        return found[:limit], total

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", errors="replace") if raw is not None else ""


def _number(raw: bytes | None) -> int | None:
    text = _text(raw).strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _read(msg) -> BusDeadLetter:
    """A dead letter as its headers describe it; a header missing (a message put there by
    hand) is shown empty rather than hiding the message."""
    named = {name: raw for name, raw in (msg.headers() or [])}
    failed_at = _text(named.get(headers.FAILED_AT))
    try:
        at: float | None = float(failed_at)
    except ValueError:
        _, millis = msg.timestamp()
        at = millis / 1000 if millis > 0 else None
    return BusDeadLetter(
        partition=msg.partition(),
        offset=msg.offset(),
        key=_text(msg.key()) if msg.key() is not None else None,
        message=_text(msg.value()),
        reason=_text(named.get(headers.ERROR)),
        group=_text(named.get(headers.CONSUMER_GROUP)),
        original_topic=_text(named.get(headers.ORIGINAL_TOPIC)),
        original_partition=_number(named.get(headers.ORIGINAL_PARTITION)),
        original_offset=_number(named.get(headers.ORIGINAL_OFFSET)),
        at=at,
    )
