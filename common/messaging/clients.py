"""Kafka client configuration, in one place, with the guarantee each setting buys.

`EventPublisher` is the one producer of a process: thread-safe, idempotent, and served by a
background thread so delivery reports arrive without every caller polling.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, Message, Producer

from common.config import Settings
from common.messaging.metrics import lag_statistics
from common.messaging.schemas import BusMessage
from common.messaging.topics import topic_name
from common.observability import get_logger

log = get_logger("tasklab.bus")


@dataclass(frozen=True)
class Bus:
    """Where the bus is and which namespace this installation's topics and groups live in."""

    bootstrap: str
    namespace: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Bus:
        return cls(settings.kafka_bootstrap, settings.kafka_namespace)

    def topic(self, name: str) -> str:
        return topic_name(name, self.namespace)

    def group(self, name: str) -> str:
        return f"{self.namespace}.{name}" if self.namespace else name


class _OncePerInterval(logging.Filter):
    """Lets a repeated client message through once per `interval` seconds.

    While a broker is down every client reports every reconnect attempt ("Connect to ...
    failed: Connection refused"); one line every ten seconds says the same thing.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())[:160]
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.interval:
            return False
        self._last[key] = now
        return True


# librdkafka's own log lines, in the process's log format instead of raw on stderr.
kafka_log = get_logger("tasklab.kafka")
kafka_log.addFilter(_OncePerInterval())


def _common(bus: Bus, client_id: str) -> dict:
    return {
        "bootstrap.servers": bus.bootstrap,
        "client.id": client_id,
        # Reconnect to a restarted broker within a second (the default backs off to 10 s):
        # the manager reads a client that is late to come back as an agent gone silent.
        "reconnect.backoff.max.ms": 1000,
        "logger": kafka_log,
        "log_level": 4,
    }


# --8<-- [start:client-config]
def producer_config(bus: Bus, client_id: str) -> dict:
    return {
        **_common(bus, client_id),
        # No duplicates and no reordering from the producer's own retries: the broker drops a
        # retried batch it already has (producer id + sequence number). confluent-kafka leaves
        # this off by default. It implies acks=all, said again below so nobody lowers it.
        "enable.idempotence": True,
        # Acknowledged only once every in-sync replica has the message: an acknowledged
        # dispatch or status survives the loss of the partition leader.
        "acks": "all",
        # One request in flight per connection: a request that fails and is retried can never
        # be overtaken by the next one. With several in flight, a first request to a partition
        # refused while the broker takes the partition up can be overtaken, and the broker then
        # refuses its retry as out of sequence for ever (KAFKA-15591): a RUNNING lost, its
        # SUCCESS kept.
        "max.in.flight.requests.per.connection": 1,
        # Send at once, no lingering: librdkafka's default (5 ms since v1.5) made every hop of
        # a task (dispatch, RUNNING) wait 5 ms on an idle bus, 11 of stage 3's 17.5 ms from
        # submit to start. Under load it batches anyway: with one request in flight, whatever
        # is produced meanwhile waits for its reply and leaves together in the next request, so
        # a burst of log lines still goes out in a few requests, not one each.
        "linger.ms": 0,
        # Never give a message up while the process lives: a SUCCESS that was dropped after a
        # long broker outage would leave its task RUNNING on a live agent for good. A full
        # local queue blocks the publisher instead (EventPublisher.publish_raw).
        "message.timeout.ms": 0,
    }


def consumer_config(bus: Bus, group: str, client_id: str, **extra: object) -> dict:
    return {
        **_common(bus, client_id),
        "group.id": bus.group(group),
        # At-least-once: the consumer never marks a message done by itself. The application
        # stores a message's offset only after its effect is in Redis; the commit thread
        # commits only stored offsets. A crash redelivers what was read but not applied.
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        # A new group starts at the beginning: events published before the first manager
        # started (or while none ran) are still applied.
        "auto.offset.reset": "earliest",
        # Return as soon as anything arrives, do not wait to fill a batch.
        "fetch.wait.max.ms": 100,
        # The group's lag per partition on /metrics, from librdkafka's own statistics.
        **lag_statistics(bus.group(group)),
        **extra,
    }


# --8<-- [end:client-config]
DeliveryCallback = Callable[[KafkaError | None, Message], None]


class EventPublisher:
    """The process's idempotent producer, with a thread that serves delivery reports."""

    def __init__(self, bus: Bus, client_id: str) -> None:
        self.bus = bus
        self.producer = Producer(producer_config(bus, client_id))
        self.failed = 0
        # Base topic name -> the namespaced one: built once per topic, not once per message.
        self._topics: dict[str, str] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bus-publisher", daemon=True)
        self._thread.start()

    def publish(
        self,
        topic: str,
        key: str,
        message: BusMessage,
        headers: dict[str, str] | None = None,
        on_delivery: DeliveryCallback | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue a message for `topic` (a base name; the namespace is added here), to
        `partition` if given, else to the one its key hashes to."""
        full = self._topics.get(topic)
        if full is None:
            full = self._topics[topic] = self.bus.topic(topic)
        self.publish_raw(full, key, message.encode(), headers, on_delivery, partition)

    def publish_raw(
        self,
        full_topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: dict[str, str] | list | None = None,
        on_delivery: DeliveryCallback | None = None,
        partition: int | None = None,
    ) -> None:
        # Only when given: confluent-kafka's own default (-1) means "by the key".
        where = {} if partition is None else {"partition": partition}
        # No closure per message unless the caller waits for this one's report.
        report = self._delivered if on_delivery is None else partial(self._told, on_delivery)
        while True:
            try:
                self.producer.produce(
                    full_topic, key=key, value=value, headers=headers, on_delivery=report, **where
                )
                return
            except BufferError:
                # The local queue is full (the broker has been away a while): wait for room
                # rather than drop a status or a log line.
                self.producer.poll(0.1)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        # Every message's delivery report: a failure is counted and logged whoever sent it.
        if err is not None:
            self.failed += 1
            log.error("delivery to %s failed: %s", msg.topic(), err)

    def _told(self, on_delivery: DeliveryCallback, err: KafkaError | None, msg: Message) -> None:
        self._delivered(err, msg)
        on_delivery(err, msg)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait until everything queued is acknowledged; return how many are still queued."""
        return self.producer.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        left = self.flush(timeout)
        if left:
            log.warning("%d message(s) still undelivered at shutdown", left)
        self._stopping.set()
        self._thread.join(2)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self.producer.poll(0.1)
