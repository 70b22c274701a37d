"""The dead-letter topic: where a message goes that a consumer can never parse or apply.

Pattern: Dead Letter Channel (introduced in stage 3). Without it a consumer has two bad
choices on a poisoned message: retry it forever (the partition is stuck behind it, and every
message after it waits) or skip it silently (nobody ever learns it existed). Moving it aside
with where it came from and why keeps the partition flowing and the evidence intact: key and
value are copied unchanged, so a fixed message can be published again as it was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message

from common.messaging.clients import EventPublisher
from common.messaging.topics import DEAD_LETTER
from common.observability import get_logger, metrics

log = get_logger("tasklab.dead-letter")

# Header names, each starting with x- so they cannot collide with a producer's own headers.
ORIGINAL_TOPIC = "x-original-topic"
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
ERROR = "x-error"
CONSUMER_GROUP = "x-consumer-group"
FAILED_AT = "x-failed-at"


class DeadLetterUnavailable(RuntimeError):
    """The dead letter was not acknowledged: keep the original message, try again later."""


class DeadLetters:
    def __init__(self, publisher: EventPublisher, group: str, timeout: float = 10.0) -> None:
        self.publisher = publisher
        self.group = group
        self.timeout = timeout
        self.sent = 0

    def send(self, msg: Message, error: str) -> None:
        """Publish `msg` to the dead-letter topic and wait for the broker's acknowledgement.

        The caller stores the original's offset only after this returns: a crash in between
        dead-letters it twice (harmless), never zero times.
        """
        self.send_raw(
            msg.key(),
            msg.value(),
            [
                (ORIGINAL_TOPIC, msg.topic()),
                (ORIGINAL_PARTITION, str(msg.partition())),
                (ORIGINAL_OFFSET, str(msg.offset())),
            ],
            error,
            where=f"{msg.topic()}[{msg.partition()}]@{msg.offset()}",
            extra=msg.headers() or [],
        )

    def send_raw(
        self,
        key: str | bytes | None,
        value: bytes | None,
        origin: Sequence[tuple[str, str]],
        error: str,
        *,
        where: str,
        extra: Sequence[tuple[str, str | bytes]] = (),
    ) -> None:
        """Publish one dead letter (`origin`: where it was refused, as x-original-* headers;
        `where`: the same, for the log) and wait for the broker's acknowledgement; raise
        DeadLetterUnavailable if it does not come."""
        headers = [
            *origin,
            (ERROR, error[:2000]),
            (CONSUMER_GROUP, self.group),
            (FAILED_AT, repr(time.time())),
            *extra,
        ]
        done = threading.Event()
        outcome: list[KafkaError | None] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            outcome.append(err)
            done.set()

        self.publisher.publish_raw(
            self.publisher.bus.topic(DEAD_LETTER), key, value, headers, on_delivery
        )
        if not done.wait(self.timeout) or outcome[0] is not None:
            raise DeadLetterUnavailable(
                f"dead letter for {where} not acknowledged: "
                f"{outcome[0] if outcome else 'timed out'}"
            )
        self.sent += 1
        metrics.record_dead_letter("kafka", error)
        log.warning("dead-lettered %s: %s", where, error)


def header(msg: Message, name: str) -> str | None:
    """The first value of header `name`, decoded, or None."""
    for key, value in msg.headers() or []:
        if key == name:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None
