"""The event bus's dead letters as the front door reads them (stage 3 on): read only.

Pattern: Ports and Adapters. From stage 3 a message a consumer can never parse or apply goes to
the dead-letter topic (common/messaging/dead_letter.py) with headers naming where it came from
and why; the Redis dead-letter list (common/ports/dead_letters.py) keeps on holding what the
queue's intake could not take. The REST API and the console show both, and read the topic
through this port: `common.api.bus_dead_letters.KafkaBusDeadLetters` is the real reader,
`NoBusDeadLetters` stands where no bus is configured.

No requeue: a dead letter on the topic is a copy of a bus message (a status update, a log
line) whose effect is tied to the consumer that refused it; publishing it again is a decision
the dead-letter review (`tasklab bus dead-letters`, `tasklab dead-letters-seen`) leaves to a
person reading it, not a button.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


class BusUnavailable(RuntimeError):
    """The bus did not answer (a broker down, a timeout): say so, try again later."""


@dataclass(frozen=True)
class BusDeadLetter:
    """One message on the dead-letter topic, with what its headers say."""

    partition: int  # where the dead letter itself is on the dead-letter topic
    offset: int
    key: str | None
    message: str  # the original value, decoded (bytes that are not UTF-8 shown replaced)
    reason: str  # x-error
    group: str  # x-consumer-group: the consumers that refused it
    original_topic: str  # x-original-topic, -partition, -offset: where it was refused
    original_partition: int | None
    original_offset: int | None
    at: float | None  # x-failed-at (Unix seconds), else the broker's timestamp

    @property
    def entry_id(self) -> str:
        """Names it on the topic: partition and offset, as `tasklab bus dead-letters` prints."""
        return f"{self.partition}@{self.offset}"


class BusDeadLetters(ABC):
    @property
    @abstractmethod
    def configured(self) -> bool:
        """Whether this installation has an event bus at all."""

    @property
    @abstractmethod
    def topic(self) -> str:
        """The dead-letter topic's name (with the installation's namespace)."""

    @abstractmethod
    def list(self, limit: int) -> tuple[list[BusDeadLetter], int]:
        """The newest `limit` dead letters, newest first, and how many the topic holds.
        Raises BusUnavailable when the bus does not answer."""

    def close(self) -> None:  # noqa: B027 - nothing to close unless a reader holds a client
        """Let go of any client."""


class NoBusDeadLetters(BusDeadLetters):
    """No event bus configured (an empty `kafka_bootstrap`): nothing to read, and a reason."""

    def __init__(self, why: str) -> None:
        self.why = why

    @property
    def configured(self) -> bool:
        return False

    @property
    def topic(self) -> str:
        return ""

    def list(self, limit: int) -> tuple[list[BusDeadLetter], int]:
        return [], 0
