"""A consumed Kafka message without a broker, for tests that hand a batch to a handler.

The platform's consumers (common/messaging/consumer.py and the handlers behind it) read a
confluent_kafka.Message through a few methods only; this answers them with what it was made
with, and with no error. A real Message cannot be built in Python, hence the stand-in.
"""

from __future__ import annotations


class ConsumedMessage:
    """One message of `topic`'s `partition` at `offset`, as Consumer.poll/consume returns it."""

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes = b"{}",
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._headers = value, headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"ConsumedMessage({self._topic!r}, {self._partition}, {self._offset})"
