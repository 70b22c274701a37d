"""The bus's dead-letter topic as the API and the console show it, on a real Kafka: a status
message a consumer refused is dead-lettered the way the platform does it (DeadLetters.send),
then read back newest first with where it was refused and why, beside the Redis list, without
consuming it (the review's "looked at" mark does not move)."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from common.adapters.redis_client import redis_client
from common.adapters.redis_dead_letter import dead_letter_message
from common.api.app import create_app
from common.api.bus_dead_letters import KafkaBusDeadLetters
from common.config import Settings
from common.messaging.clients import Bus, EventPublisher
from common.messaging.dead_letter import DeadLetters
from common.messaging.dead_letter_review import KafkaDeadLetterReview
from common.messaging.topics import STATUS, ensure_topics
from common.ports.bus_dead_letters import BusUnavailable

pytestmark = pytest.mark.integration

BASE = "http://console.test"
REASON = "not a status event: status: unknown 'SUCCES'"


def refuse(bus: Bus, publisher: EventPublisher, n: int) -> list[tuple[int, int]]:
    """Publish `n` status messages no manager could apply and dead-letter each as the manager
    does, from the message it read; their (partition, offset) on the status topic."""
    topic = bus.topic(STATUS)
    delivered: list[tuple[int, int]] = []
    done = threading.Event()

    def on_delivery(err, msg) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))
        if len(delivered) == n:
            done.set()

    for i in range(n):
        value = f'{{"taskId":"t{i}","status":"SUCCES"}}'.encode()
        publisher.publish_raw(topic, f"t{i}", value, None, on_delivery)
    assert done.wait(15), "the status messages were acknowledged"
    reader = Consumer({"bootstrap.servers": bus.bootstrap, "group.id": bus.group("test-reader")})
    try:
        dead = DeadLetters(publisher, "tasklab-manager")
        for partition, offset in delivered:
            reader.assign([TopicPartition(topic, partition, offset)])
            msg = None
            for _ in range(100):  # bounded: 100 polls of 0.1 s
                msg = reader.poll(0.1)
                if msg is not None and msg.error() is None:
                    break
            assert msg is not None and msg.error() is None, "the refused message was read"
            dead.send(msg, REASON)
    finally:
        reader.close()
    return delivered


@pytest.fixture
def bus(kafka_service, kafka_namespace) -> Bus:
    bootstrap = kafka_service.env["TASKLAB_KAFKA_BOOTSTRAP"]
    ensure_topics(bootstrap, kafka_namespace)
    return Bus(bootstrap, kafka_namespace)


@pytest.fixture
def publisher(bus):
    made = EventPublisher(bus, "test-dead-letters")
    yield made
    made.close()


def test_the_buss_dead_letters_are_read_newest_first_with_where_and_why_and_not_consumed(
    bus, publisher, redis_url
):
    # Given three refused status messages dead-lettered, and one entry on the Redis list
    refused = refuse(bus, publisher, 3)
    dead_letter_message(
        redis_client(redis_url), '{"taskType":"RUBY"}', "unknown taskType", "s1", "q", None
    )
    # When the reader lists two of them
    reader = KafkaBusDeadLetters(bus)
    try:
        entries, total = reader.list(2)
    finally:
        reader.close()
    # Then the newest two come back, each saying where it was refused, why, and by whom
    assert total == 3 and len(entries) == 2
    assert [(e.original_partition, e.original_offset) for e in entries] == refused[:0:-1]
    newest = entries[0]
    assert newest.original_topic == bus.topic(STATUS) and newest.reason == REASON
    assert newest.group == "tasklab-manager" and newest.key == "t2"
    assert newest.message == '{"taskId":"t2","status":"SUCCES"}' and newest.at is not None
    # ...REST lists them with ?box=bus, and the console beside the Redis list's entry
    settings = Settings(
        redis_url=redis_url,
        zk_hosts="127.0.0.1:1",
        kafka_bootstrap=bus.bootstrap,
        kafka_namespace=bus.namespace,
    )
    with TestClient(create_app(settings), base_url=BASE) as client:
        listing = client.get("/api/v1/dead-letters", params={"box": "bus", "limit": 5}).json()
        assert listing["total"] == 3 and [i["key"] for i in listing["items"]] == ["t2", "t1", "t0"]
        item = listing["items"][0]
        assert (item["topic"], item["partition"], item["offset"]) == (
            bus.topic(STATUS),
            *refused[2],
        )
        page = client.get("/ui/dead-letters").text
        assert "unknown taskType" in page and page.count("unknown &#39;SUCCES&#39;") == 3
        assert "3 on the event bus's dead-letter topic" in page
    # ...and reading consumed nothing: all three are still new to the dead-letter review
    review = KafkaDeadLetterReview(bus)
    try:
        assert review.unseen()[0] == 3
    finally:
        review.close()


def test_a_broker_that_does_not_answer_is_bus_unavailable_within_the_timeout():
    reader = KafkaBusDeadLetters(Bus("127.0.0.1:1"), timeout=1.0)
    try:
        with pytest.raises(BusUnavailable):
            reader.list(10)
    finally:
        reader.close()
