"""Bad bytes on every stage 3 topic: task-dispatch-topic (read by agents), and
task-status-update-topic, task-logs-topic and agent-heartbeat-topic (read by the manager).

Black box: each case is produced as raw bytes to the real broker while a real scheduler, agent
and manager run as processes. Then: the message is on the dead-letter topic with headers naming
where it came from (topic, partition, offset) and an error saying what is wrong with it, every
process is still running, and a valid task submitted after it runs to SUCCESS.

The error must be the schema's (not JSON, not a JSON object, not a valid <Message>): the base
messages are about tasks that do not exist, which the manager dead-letters too ("no task ..."),
so only the reason shows that the bad part was what got caught.

A 10 MB value cannot enter a topic at all: the producer and the broker refuse anything over
Kafka's message size (1 MB by default), which `check_transport_limits` sizes the payload
limit against. The oversized cases here (100 KB fields) are ones Kafka carries.

The roles start once for the module; the topics live in a namespace of the module's own.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from kazoo.client import KazooClient

from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.coordination.agent_info import AgentInfo
from common.coordination.paths import LIVE_AGENTS, agent_node
from common.messaging import dead_letter
from common.messaging.clients import Bus
from common.messaging.topics import DEAD_LETTER, DISPATCH, HEARTBEAT, LOGS, STATUS, ensure_topics
from common.testing import eventually
from common.testing.bad_messages import (
    BadMessage,
    RoleSet,
    bus_messages,
    dispatch_base,
    flushed_redis,
    heartbeat_base,
    log_base,
    run_valid_task,
    status_base,
    with_fields,
)
from common.testing.processes import RoleProcess

pytestmark = pytest.mark.integration

AGENT = "agent-1"
# The probes' own Kafka clients: their complaints after the broker stops would bury the roles'
# logs that a failing test prints.
QUIET = logging.getLogger("tests.stage3.bad-bytes-probe")
QUIET.setLevel(logging.CRITICAL)
SCHEMA_ERROR = re.compile(r"^(not JSON|not a JSON object|not a valid \w+|empty message)")


# topic -> (a string field of its schema, an integer field, its base message)
TOPIC_CASES = {
    DISPATCH: ("payload", "attempt", dispatch_base),
    STATUS: ("status", "attempt", status_base),
    LOGS: ("stream", "seq", log_base),
    HEARTBEAT: ("agentId", "load", heartbeat_base),
}


def cases(topic: str) -> list:
    text_field, int_field, base_of = TOPIC_CASES[topic]
    base = base_of(AGENT)
    found = bus_messages(base, text_field, int_field)
    if topic == DISPATCH:
        # The payload over max_payload_bytes is the 100 KB text case; a 100 KB name and a NUL
        # in the command are the dispatch's own.
        found.append(BadMessage("task-name-100kb", with_fields(base, taskName="n" * 100_000)))
        found.append(BadMessage("payload-nul-escape", with_fields(base, payload="echo \x00")))
    return [pytest.param(case, id=case.name) for case in found]


class DeadLetterReader:
    """Every message on the dead-letter topic, read from the start and kept as it arrives."""

    def __init__(self, bus: Bus) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bus.bootstrap,
                "group.id": f"bad-bytes-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "logger": QUIET,
            }
        )
        name = bus.topic(DEAD_LETTER)
        partitions = self.consumer.list_topics(name, timeout=10).topics[name].partitions
        self.consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        self.letters: list[Message] = []

    def letter_for(self, original: Message) -> Message | None:
        """The dead letter of `original`, by the headers naming where it came from: among the
        letters read so far, else reading on for up to half a second, and back as soon as it
        arrives (the caller retries)."""
        where = (original.topic(), str(original.partition()), str(original.offset()))
        deadline = time.monotonic() + 0.5
        while True:
            for letter in self.letters:
                headers = {k: v.decode(errors="replace") for k, v in letter.headers() or []}
                got = (
                    headers.get(dead_letter.ORIGINAL_TOPIC),
                    headers.get(dead_letter.ORIGINAL_PARTITION),
                    headers.get(dead_letter.ORIGINAL_OFFSET),
                )
                if got == where:
                    return letter
            if time.monotonic() >= deadline:
                return None
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                self.letters.append(msg)

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture(scope="module")
def stage3(redis_service, zookeeper_service, kafka_service, tmp_path_factory):
    url = redis_service.env["TASKLAB_REDIS_URL"]
    hosts = zookeeper_service.env["TASKLAB_ZK_HOSTS"]
    chroot = f"/tasklab-bad-bytes-{uuid.uuid4().hex[:8]}"
    zk = KazooClient(hosts=hosts)
    zk.start(timeout=10)
    zk.ensure_path(chroot + LIVE_AGENTS)
    bus = Bus(kafka_service.env["TASKLAB_KAFKA_BOOTSTRAP"], f"bad{uuid.uuid4().hex[:8]}")
    ensure_topics(bus.bootstrap, bus.namespace)
    redis = flushed_redis(url)
    env = {
        "TASKLAB_REDIS_URL": url,
        "TASKLAB_ZK_HOSTS": hosts,
        "TASKLAB_ZK_CHROOT": chroot,
        "TASKLAB_KAFKA_BOOTSTRAP": bus.bootstrap,
        "TASKLAB_KAFKA_NAMESPACE": bus.namespace,
    }
    logs = tmp_path_factory.mktemp("stage3-bad-bytes")
    roles = RoleSet(
        [
            RoleProcess("scheduler", 3, {**env, "TASKLAB_SCHEDULER_ID": "scheduler-1"}, logs),
            RoleProcess("agent", 3, {**env, "TASKLAB_AGENT_ID": AGENT}, logs, name=AGENT),
            RoleProcess("manager", 3, {**env, "TASKLAB_MANAGER_ID": "manager-1"}, logs),
        ]
    )
    roles.start()
    tasks = TaskClient(RedisTaskStore(redis))
    producer = Producer(
        {"bootstrap.servers": bus.bootstrap, "enable.idempotence": True, "logger": QUIET}
    )
    reader = DeadLetterReader(bus)
    try:
        # A task that exists, for the base messages to be about; also: the stage is up.
        existing = run_valid_task(tasks, timeout=90)

        def dispatch_partition() -> int:
            # The partition the agent reads, as its node says once it is registered (a
            # restarted agent takes its partition back, and says so only once registered).
            # In a list: partition 0 would read as "not yet".
            def announced() -> list[int]:
                if zk.exists(chroot + agent_node(AGENT)) is None:
                    return []
                data, _ = zk.get(chroot + agent_node(AGENT))
                partition = AgentInfo.from_json(data).dispatch_partition
                return [] if partition is None else [partition]

            return eventually(announced, 30, message=f"{AGENT} registered with a partition")[0]

        yield roles, tasks, existing, bus, producer, reader, dispatch_partition
    finally:
        reader.close()
        producer.flush(5)
        roles.stop()
        redis.close()
        zk.stop()
        zk.close()


def produce(
    producer: Producer, topic: str, value: bytes | None, headers: list, partition: int | None
) -> Message:
    delivered: list[Message] = []
    producer.produce(
        topic,
        key=b"bad",
        value=value,
        headers=headers,
        on_delivery=lambda err, msg: delivered.append(msg) if err is None else None,
        **({} if partition is None else {"partition": partition}),
    )
    assert producer.flush(15) == 0 and delivered, f"not delivered to {topic}"
    return delivered[0]


def check_dead_lettered(stage3, topic: str, case: BadMessage | None) -> None:
    roles, tasks, existing, bus, producer, reader, dispatch_partition = stage3
    roles.restart_dead()
    value = None if case is None else case.raw(existing)
    # Addressed to the agent, on the partition it reads, so it reads the body rather than skip
    # it on the header.
    headers = [("agentId", AGENT.encode())] if topic == DISPATCH else []
    partition = dispatch_partition() if topic == DISPATCH else None
    # Given a bad message on the topic
    original = produce(producer, bus.topic(topic), value, headers, partition)
    # When the stage runs a valid task after it
    run_valid_task(tasks, timeout=30)
    # Then the bad one is on the dead-letter topic with the schema's reason
    # In a list: a Message is as long as its value, so one with no value would read as false.
    (letter,) = eventually(
        lambda: [m for m in [reader.letter_for(original)] if m is not None],
        15,
        interval=0.1,
        message=f"dead letter of {topic}@{original.offset()}",
    )
    error = dict(letter.headers())[dead_letter.ERROR].decode()
    assert SCHEMA_ERROR.match(error), error
    assert letter.value() == value
    roles.assert_alive()


@pytest.mark.parametrize("case", cases(DISPATCH))
def test_a_bad_message_on_the_dispatch_topic_is_dead_lettered_by_the_agent(stage3, case):
    check_dead_lettered(stage3, DISPATCH, case)


@pytest.mark.parametrize("case", cases(STATUS))
def test_a_bad_message_on_the_status_topic_is_dead_lettered_by_the_manager(stage3, case):
    check_dead_lettered(stage3, STATUS, case)


@pytest.mark.parametrize("case", cases(LOGS))
def test_a_bad_message_on_the_logs_topic_is_dead_lettered_by_the_manager(stage3, case):
    check_dead_lettered(stage3, LOGS, case)


@pytest.mark.parametrize("case", cases(HEARTBEAT))
def test_a_bad_message_on_the_heartbeat_topic_is_dead_lettered_by_the_manager(stage3, case):
    check_dead_lettered(stage3, HEARTBEAT, case)


@pytest.mark.parametrize("topic", [DISPATCH, STATUS, LOGS, HEARTBEAT])
def test_a_message_with_no_value_is_dead_lettered_on_every_topic(stage3, topic):
    check_dead_lettered(stage3, topic, None)
