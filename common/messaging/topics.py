"""The topics of the event bus, created by the platform at start-up.

Every role calls `ensure_topics` before it produces or consumes: creating a topic that exists
is a no-op, so whichever role starts first creates them, with the partition counts below, and
the broker runs with `auto.create.topics.enable=false` so a misspelt name fails loudly instead
of creating a topic nobody reads.

Partitions are the unit of ordering and of parallelism: messages with the same key land in the
same partition, in order, and one partition is read by one consumer of a group at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common.observability import get_logger

log = get_logger("tasklab.topics")

DISPATCH = "task-dispatch-topic"
STATUS = "task-status-update-topic"
HEARTBEAT = "agent-heartbeat-topic"
LOGS = "task-logs-topic"
DEAD_LETTER = "tasklab-dead-letter-topic"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    key: str  # what the producers key it by (decides ordering), for the docs and `bus topics`
    config: tuple[tuple[str, str], ...] = ()


TOPICS: tuple[TopicSpec, ...] = (
    # One partition per agent: each agent reads the partition it announced in ZooKeeper and the
    # scheduler produces an agent's dispatches there (keyed by taskId all the same), so a
    # dispatch is read once, however many agents run. More agents than partitions share them
    # (each skips the others' dispatches on a header): 12 covers a laptop's or a small
    # cluster's agents at the cost of a few idle partitions.
    TopicSpec(DISPATCH, 12, "taskId"),
    # Key taskId: one task's RUNNING is read before its SUCCESS, by the same manager.
    TopicSpec(STATUS, 6, "taskId"),
    # Key taskId: one task's lines stay in order in one partition.
    TopicSpec(LOGS, 6, "taskId"),
    # Key agentId. Heartbeats are only worth anything while fresh: keep them an hour.
    TopicSpec(HEARTBEAT, 3, "agentId", (("retention.ms", str(3600 * 1000)),)),
    # One partition: dead letters are few, and read by a person in the order they happened.
    # Kept a week (as long as a finished task, task_retention's default) and at most 256 MiB,
    # set on the topic so a broker with other defaults cannot let a flood of them grow forever.
    TopicSpec(
        DEAD_LETTER,
        1,
        "original key",
        (("retention.ms", str(7 * 86400 * 1000)), ("retention.bytes", str(256 * 1024 * 1024))),
    ),
)


def topic_name(name: str, namespace: str = "") -> str:
    """The topic's name under a namespace (`ns.task-dispatch-topic`), like a ZooKeeper chroot."""
    return f"{namespace}.{name}" if namespace else name


def ensure_topics(bootstrap: str, namespace: str = "", timeout: float = 30.0) -> list[str]:
    """Create every topic that does not exist yet; return the names created now."""
    # librdkafka's log lines go to the process's log, like every other client's.
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": get_logger("tasklab.kafka")})
    wanted = [
        NewTopic(
            topic_name(spec.name, namespace),
            num_partitions=spec.partitions,
            # Single-broker dev stack and compose file; a real cluster would say 3.
            replication_factor=1,
            config=dict(spec.config),
        )
        for spec in TOPICS
    ]
    deadline = time.monotonic() + timeout
    created: list[str] = []
    while True:
        futures = admin.create_topics(wanted, request_timeout=10)
        retry: list[NewTopic] = []
        for topic in wanted:
            # .exception(), not .result(): a raised exception would tie this frame, the future
            # and the client into a cycle that keeps the client (and its threads reconnecting
            # to the broker) alive long after this function returned.
            exc = futures[topic.topic].exception()
            if exc is None:
                created.append(topic.topic)
                continue
            err = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            if not err.retriable() or time.monotonic() >= deadline:
                raise KafkaException(err)
            retry.append(topic)
        if not retry:
            break
        wanted = retry
        time.sleep(0.5)
    if created:
        log.info("created topics %s", ", ".join(created))
    _wait_for_leaders(admin, bootstrap, [topic_name(s.name, namespace) for s in TOPICS], deadline)
    return created


def _wait_for_leaders(
    admin: AdminClient, bootstrap: str, names: list[str], deadline: float
) -> None:
    # A topic answers CreateTopics before its partitions have a leader, and metadata can name
    # a leader before that broker has taken the partition up. A producer that writes in that
    # window loses data although it is idempotent: its first request fails (not leader), the
    # next one is accepted as the partition's first, and the retried first one is then refused
    # as out of order for ever (KAFKA-15591). So wait until every partition answers an offset
    # request, which only its leader, once ready, does.
    while True:
        metadata = admin.list_topics(timeout=10)
        ready = all(
            name in metadata.topics
            and metadata.topics[name].error is None
            and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
            for name in names
        )
        if ready:
            break
        if time.monotonic() >= deadline:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "topics have no leader yet"))
        time.sleep(0.1)
    probe = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tasklab-topics",  # never joined: only offsets are asked for
            "logger": get_logger("tasklab.kafka"),
        }
    )
    try:
        for name in names:
            for partition in sorted(metadata.topics[name].partitions):
                while True:
                    try:
                        probe.get_watermark_offsets(TopicPartition(name, partition), timeout=5)
                        break
                    except KafkaException:
                        if time.monotonic() >= deadline:
                            raise
                        time.sleep(0.1)
    finally:
        probe.close()
