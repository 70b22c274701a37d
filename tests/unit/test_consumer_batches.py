"""How the at-least-once consumer settles a batch handler's outcomes, message by message.

No broker: the client is an in-memory stand-in that records pauses, seeks and resumes, and the
messages are plain objects with the few methods the consumer reads. What is checked is the
bookkeeping the guarantee rests on: which offsets become storable, which partitions are held
back and from where they are read again, what is dead-lettered.
"""

from __future__ import annotations

from functools import partial

from confluent_kafka import TopicPartition

from common.messaging.clients import Bus
from common.messaging.consumer import SKIPPED, AtLeastOnceConsumer, NotYet, Unprocessable
from common.testing.messages import ConsumedMessage

TOPIC = "task-status-update-topic"


# A message of TOPIC: Msg(partition, offset[, value]).
Msg = partial(ConsumedMessage, TOPIC)


class Client:
    """What the consumer asks of librdkafka here: pause, seek, resume."""

    def __init__(self) -> None:
        self.paused: list[tuple[int, int]] = []
        self.seeks: list[tuple[int, int]] = []

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused += [(tp.partition, tp.offset) for tp in tps]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def resume(self, tps: list[TopicPartition]) -> None:
        pass

    def close(self) -> None:
        pass


class Letters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def send(self, msg: ConsumedMessage, error: str) -> None:
        self.sent.append((msg.offset(), error))


def consumer_with(batch_handler, single=lambda msg: None) -> tuple[AtLeastOnceConsumer, Client]:
    letters = Letters()
    consumer = AtLeastOnceConsumer(
        Bus("127.0.0.1:9"),  # nothing listens: the stand-in below does the client's part
        "test-group",
        "test-client",
        {TOPIC: single},
        dead_letters=letters,
        batch_handlers={TOPIC: batch_handler},
    )
    consumer.consumer.close()
    client = Client()
    consumer.consumer = client
    return consumer, client


def storable(consumer: AtLeastOnceConsumer) -> dict[int, int]:
    """partition -> the next offset to read, as the consumer would store it."""
    consumer._pending.cut(0.0)
    return {p: o for (_, p), o in consumer._pending.ready(1.0).items()}


def test_a_held_message_holds_its_partition_and_the_rest_of_the_batch_is_stored():
    # Given a batch handler that held back offset 11 of partition 0 (and so skipped 12 behind
    # it), dead-lettered offset 20 of partition 1 and applied the rest
    outcomes = [None, NotYet("lines not in"), SKIPPED, Unprocessable("no task"), None]
    consumer, client = consumer_with(lambda msgs: outcomes)
    letters = consumer.dead_letters

    # When the consumer settles the batch
    consumer.process_batch([Msg(0, 10), Msg(0, 11), Msg(0, 12), Msg(1, 20), Msg(1, 21)])

    # Then partition 0 is paused and rewound to the held message, to be read again from there
    assert client.paused == [(0, 11)] and client.seeks == [(0, 11)]
    # and only what was settled before it is storable there; partition 1 went on past its
    # dead letter
    assert storable(consumer) == {0: 11, 1: 22}
    assert letters.sent == [(20, "no task")]


def test_a_skipped_message_whose_partition_is_not_held_is_applied_on_its_own():
    # Given a batch handler that skipped a message without holding anything before it
    applied: list[int] = []
    consumer, client = consumer_with(
        lambda msgs: [None, SKIPPED], single=lambda msg: applied.append(msg.offset())
    )

    # When the consumer settles the batch
    consumer.process_batch([Msg(0, 1), Msg(0, 2)])

    # Then the skipped message went through the single handler, in order, and is stored
    assert applied == [2]
    assert storable(consumer) == {0: 3} and client.paused == []


def test_a_batch_handler_that_fails_falls_back_to_one_message_at_a_time():
    # Given a batch handler with a bug, and a single handler that refuses one message
    def broken(msgs):
        raise KeyError("a bug")

    def single(msg):
        if msg.offset() == 2:
            raise Unprocessable("cannot apply")

    consumer, _ = consumer_with(broken, single)

    # When the consumer settles a batch
    consumer.process_batch([Msg(0, 1), Msg(0, 2), Msg(0, 3)])

    # Then every message was settled on its own: one dead letter, the others stored
    assert consumer.dead_letters.sent == [(2, "cannot apply")]
    assert storable(consumer) == {0: 4}


def test_a_transient_failure_holds_the_partition_for_a_retry_and_stores_nothing_past_it():
    # Given a batch whose second message met Redis away (the rest of the batch with it)
    from redis.exceptions import ConnectionError as RedisDown

    down = RedisDown("Redis is away")
    consumer, client = consumer_with(lambda msgs: [None, down, down])

    # When the consumer settles the batch
    consumer.process_batch([Msg(0, 5), Msg(0, 6), Msg(0, 7)])

    # Then the partition is rewound to the first message not applied, nothing is dead-lettered
    assert client.seeks == [(0, 6)]
    assert storable(consumer) == {0: 6} and consumer.dead_letters.sent == []
