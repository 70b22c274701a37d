"""A consumer that librdkafka declares dead (a fatal error) is replaced, not left hung.

The case that needs it: a static group member (the manager, with group.instance.id) whose
session timed out while the broker was down is fenced when it rejoins; librdkafka reports a
fatal error and that Consumer never consumes again (confluentinc/librdkafka#3437). Found by the
stage 3 runbook's Break it 1 (tests/runbooks, slow set): the tasks stayed RUNNING for good.
No broker here: the failed consumer is a stand-in, its replacement a real, unconnected one.
"""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError, TopicPartition

from common.messaging.clients import Bus
from common.messaging.consumer import AtLeastOnceConsumer


class FatalMessage:
    def error(self) -> KafkaError:
        return KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced")


class FailedConsumer:
    """What a fenced librdkafka consumer does: report _FATAL, then nothing ever again."""

    def __init__(self) -> None:
        self.closed = False
        self.polls = 0

    def subscribe(self, *args, **kwargs) -> None:
        pass

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("task-status-update-topic", 0)]

    def poll(self, timeout: float):
        self.polls += 1
        return FatalMessage() if self.polls == 1 else None

    def store_offsets(self, *args, **kwargs) -> None:
        raise AssertionError("a fenced consumer must store nothing")

    def close(self) -> None:
        self.closed = True


def test_a_fatal_consumer_error_replaces_the_consumer_and_forgets_what_it_held():
    revoked: list[list[TopicPartition]] = []
    consumer = AtLeastOnceConsumer(
        Bus("127.0.0.1:9"),  # nothing listens: the replacement never connects
        "test-group",
        "test-client",
        {"task-status-update-topic": lambda msg: None},
        dead_letters=None,
        retry_backoff=0.0,
        on_revoke=revoked.append,
        **{"group.instance.id": "test-client"},
    )
    failed = FailedConsumer()
    consumer.consumer.close()  # the one the constructor built: not used here
    consumer.consumer = failed
    stopping = threading.Event()

    def tick() -> None:
        if consumer.replaced:
            stopping.set()

    runner = threading.Thread(target=consumer.run, args=(stopping, tick, 0.05))
    runner.start()
    runner.join(30)
    stopping.set()
    runner.join(30)

    assert not runner.is_alive(), "the consumer loop did not end"
    assert consumer.replaced == 1
    assert failed.closed
    assert consumer.consumer is not failed
    assert revoked == [[TopicPartition("task-status-update-topic", 0)]]
