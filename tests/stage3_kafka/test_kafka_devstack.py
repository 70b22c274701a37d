"""The native Kafka of the dev stack behaves like the Kafka stage 3 relies on.

Stage 3 creates its topics explicitly, produces with idempotence on, consumes at-least-once
with offsets committed after the effect, and must ride out a broker restart. These tests pin
down exactly those broker behaviours against a real KRaft broker started from the jars, so a
later failure in a scheduler or agent test can be blamed on tasklab, not on the stack.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common.devstack.base import RunningService, ServiceUnavailable, pid_alive, port_open
from common.devstack.kafka import (
    KAFKA_VERSION,
    NODE_ID,
    KafkaService,
    kafka_home,
    pom_kafka_version,
)
from common.testing.pytest_plugin import unavailable

pytestmark = pytest.mark.integration


class KafkaUnderTest:
    """One native broker plus the RunningService that describes it right now.

    `restart` replaces the RunningService (the PID changes), so the fixture keeps this holder
    and stops whatever the latest process is.
    """

    def __init__(self, service: KafkaService, running: RunningService) -> None:
        self.service = service
        self.running = running

    @property
    def bootstrap(self) -> str:
        return self.running.env["TASKLAB_KAFKA_BOOTSTRAP"]

    def restart(self, grace: float = 10.0) -> None:
        self.running = self.service.restart(self.running, grace=grace)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, partitions: int = 3) -> str:
        topic = f"test-{uuid.uuid4().hex[:8]}"
        # Keep the client referenced until the future resolves: destroying it fails the
        # request. One broker, so one replica is all there can be.
        admin = self.admin()
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
        futures[topic].result(timeout=30)
        return topic


@pytest.fixture(scope="module")
def kafka(tmp_path_factory) -> Iterator[KafkaUnderTest]:
    """One broker of the module's own, shared by its tests: a broker takes seconds to start.
    Each test uses topics and consumer groups of its own; the restart tests restart this
    broker in place (same port, same data), and whichever process runs last is stopped."""
    service = KafkaService()
    try:
        service.check_available()
    except ServiceUnavailable as exc:
        unavailable(f"Kafka unavailable: {exc}")  # skip locally, fail under CI
    # Past this point the tools are there, so a broker that does not come up is a failure.
    under_test = KafkaUnderTest(service, service.start(tmp_path_factory.mktemp("kafka")))
    try:
        yield under_test
    finally:
        service.stop(under_test.running)
        assert not pid_alive(under_test.running.pid)


def produce(bootstrap: str, topic: str, messages: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """Send (key, value) pairs with an idempotent producer; return (partition, offset) of each."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            # What the platform's producers set; it implies acks=all.
            "enable.idempotence": True,
        }
    )
    delivered: list[tuple[int, int]] = []
    errors: list[KafkaError] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))

    for key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still in flight after 30 s"
    assert errors == []
    return delivered


def new_consumer(bootstrap: str, group: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            # At-least-once, as the platform consumes: commit only what was handled.
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    return consumer


def read(consumer: Consumer, count: int, timeout: float = 30.0) -> list[tuple[str, str, int]]:
    """Poll until `count` messages arrived; return (key, value, partition) of each."""
    got: list[tuple[str, str, int]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error() is not None:
            raise KafkaException(msg.error())
        got.append((msg.key().decode(), msg.value().decode(), msg.partition()))
    return got


def read_all(bootstrap: str, topic: str, count: int) -> list[tuple[str, str, int]]:
    consumer = new_consumer(bootstrap, f"reader-{uuid.uuid4().hex[:8]}", topic)
    try:
        return read(consumer, count)
    finally:
        consumer.close()


def messages(n: int, prefix: str = "task") -> list[tuple[str, str]]:
    return [(f"{prefix}-{i}", f"payload-{prefix}-{i}") for i in range(n)]


def test_the_pom_resolves_the_same_kafka_version_that_kafka_py_runs():
    assert pom_kafka_version() == KAFKA_VERSION


def test_the_native_broker_answers_metadata_as_broker_1_on_its_loopback_address(
    kafka: KafkaUnderTest,
):
    running = kafka.running
    assert running.env == {"TASKLAB_KAFKA_BOOTSTRAP": f"127.0.0.1:{running.port}"}
    metadata = kafka.admin().list_topics(timeout=10)
    assert set(metadata.brokers) == {NODE_ID}
    broker = metadata.brokers[NODE_ID]
    assert (broker.host, broker.port) == ("127.0.0.1", running.port)
    # Jars come from the shared cache; config, data and logs live in the throw-away dir.
    assert (kafka_home() / "libs" / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    workdir = Path(running.workdir)
    assert (workdir / "data" / "meta.properties").is_file()
    assert "Kafka Server started" in (workdir / "server.log").read_text()


def test_a_topic_created_with_three_partitions_has_three_partitions(kafka: KafkaUnderTest):
    topic = kafka.create_topic(partitions=3)
    metadata = kafka.admin().list_topics(topic, timeout=10)
    assert len(metadata.topics[topic].partitions) == 3
    assert all(p.leader == NODE_ID for p in metadata.topics[topic].partitions.values())


def test_an_idempotent_producer_writes_messages_a_consumer_reads_back(kafka: KafkaUnderTest):
    topic = kafka.create_topic(partitions=3)
    sent = messages(30)
    delivered = produce(kafka.bootstrap, topic, sent)
    assert len(delivered) == 30
    # Keys spread over all three partitions, so the test covers more than one log.
    assert {partition for partition, _ in delivered} == {0, 1, 2}
    got = read_all(kafka.bootstrap, topic, 30)
    assert sorted((k, v) for k, v, _ in got) == sorted(sent)


def test_producing_to_a_topic_that_was_never_created_fails_instead_of_creating_it(
    kafka: KafkaUnderTest,
):
    # auto.create.topics.enable=false: a misspelt topic must not appear silently.
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "message.timeout.ms": 3000})
    errors: list[KafkaError] = []
    producer.produce("no-such-topic", value=b"x", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    assert len(errors) == 1 and errors[0] is not None
    assert "no-such-topic" not in kafka.admin().list_topics(timeout=10).topics


def test_after_a_restart_on_the_same_port_earlier_messages_and_committed_offsets_remain(
    kafka: KafkaUnderTest,
):
    topic = kafka.create_topic(partitions=3)
    before = messages(12, "before")
    produce(kafka.bootstrap, topic, before)
    consumer = new_consumer(kafka.bootstrap, "resuming-group", topic)
    try:
        assert len(read(consumer, 12)) == 12
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    old_pid, port = kafka.running.pid, kafka.running.port
    kafka.restart()
    assert not pid_alive(old_pid)
    assert kafka.running.port == port and kafka.running.pid != old_pid
    assert port_open("127.0.0.1", port)

    # Every message written before the restart is still in the log ...
    got = read_all(kafka.bootstrap, topic, 12)
    assert sorted((k, v) for k, v, _ in got) == sorted(before)
    # ... and the group resumes after its committed offsets: it sees only what came after.
    produce(kafka.bootstrap, topic, [("after-0", "payload-after-0")])
    consumer = new_consumer(kafka.bootstrap, "resuming-group", topic)
    try:
        assert [(k, v) for k, v, _ in read(consumer, 1)] == [("after-0", "payload-after-0")]
        assert read(consumer, 1, timeout=2.0) == []
    finally:
        consumer.close()


def test_acknowledged_messages_survive_a_kill_of_the_broker(kafka: KafkaUnderTest):
    topic = kafka.create_topic(partitions=3)
    sent = messages(20, "acked")
    produce(kafka.bootstrap, topic, sent)
    # grace=0: SIGKILL right after SIGTERM, no clean shutdown. Acknowledged writes are in the
    # page cache, and log recovery on start keeps them.
    kafka.restart(grace=0)
    got = read_all(kafka.bootstrap, topic, 20)
    assert sorted((k, v) for k, v, _ in got) == sorted(sent)
    # The end offsets agree: recovery neither lost nor duplicated a record.
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "offsets-probe"})
    try:
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(3)
        ]
    finally:
        consumer.close()
    assert sum(ends) == 20
