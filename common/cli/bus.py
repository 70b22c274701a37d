"""`tasklab bus`: look at the Kafka event bus (stage 3 on), and inject into it.

    tasklab bus topics                         partitions and message counts of every topic
    tasklab bus tail task-status-update-topic  the last messages of a topic (-f: keep reading)
    tasklab bus dead-letters                   every dead letter, with where it came from and why
    tasklab bus publish TOPIC VALUE --key K    put a message on a topic (a poisoned one, say)

Topic names are the base names of DESIGN_BRIEF section 5; TASKLAB_KAFKA_NAMESPACE is applied.
Reading never joins a consumer group, so it moves nobody's offsets.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

bus_app = typer.Typer(
    help="The Kafka event bus (stage 3 on): topics, messages, dead letters.", no_args_is_help=True
)


def _bus():
    from common.cli.shared import settings
    from common.messaging.clients import Bus

    return Bus.from_settings(settings())


def _agent_partition(agent_id: str) -> int:
    """The dispatch partition a live agent reads, from its node; a one-line error otherwise."""
    from common.cli.errors import fail
    from common.cli.shared import settings
    from common.coordination.agent_info import AgentInfo
    from common.coordination.paths import agent_node
    from common.coordination.zk import CoordinationUnavailable, close_zk, get_zk

    s = settings()
    try:
        zk = get_zk(s)
    except CoordinationUnavailable as exc:
        fail(str(exc))
    try:
        stat = zk.exists(agent_node(agent_id))
        data = zk.get(agent_node(agent_id))[0] if stat is not None else None
    finally:
        close_zk(s)
    if data is None:
        fail(f"agent {agent_id} is not live (no {agent_node(agent_id)})")
    found = AgentInfo.from_json(data).dispatch_partition
    if found is None:
        fail(f"agent {agent_id} names no dispatch partition (not a stage 3 agent)")
    return found


def _reader(bootstrap: str):
    from confluent_kafka import Consumer

    # A group id is required by the client, but nothing is committed under it.
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tasklab-cli",
            "enable.auto.commit": False,
            "log_level": 2,
        }
    )


def _partitions(consumer, topic: str) -> list[int]:
    from confluent_kafka import KafkaException

    try:
        metadata = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:
        raise typer.BadParameter(f"cannot reach Kafka: {exc.args[0].str()}") from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        typer.echo(f"error: no topic {topic} (is the platform started?)", err=True)
        raise typer.Exit(1)
    return sorted(info.partitions)


@bus_app.command()
def topics() -> None:
    """Every platform topic: partitions, key, messages held."""
    from confluent_kafka import TopicPartition

    from common.messaging.topics import TOPICS

    bus = _bus()
    consumer = _reader(bus.bootstrap)
    try:
        typer.echo(f"{'TOPIC':<40} {'PARTITIONS':>10} {'MESSAGES':>9}  KEY")
        for spec in TOPICS:
            name = bus.topic(spec.name)
            parts = _partitions(consumer, name)
            held = 0
            for p in parts:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                held += high - low
            typer.echo(f"{name:<40} {len(parts):>10} {held:>9}  {spec.key}")
    finally:
        consumer.close()


def _print(msg, with_headers: bool) -> None:
    key = msg.key().decode(errors="replace") if msg.key() else "-"
    value = msg.value().decode(errors="replace") if msg.value() is not None else "(null)"
    typer.echo(f"[{msg.partition()}]@{msg.offset()} key={key} {value}")
    if with_headers:
        for name, raw in msg.headers() or []:
            typer.echo(f"    {name}: {raw.decode(errors='replace') if raw else ''}")


def _read(topic: str, last: int, follow: bool, with_headers: bool) -> None:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    bus = _bus()
    name = bus.topic(topic)
    consumer = _reader(bus.bootstrap)
    try:
        starts, ends = [], {}
        for p in _partitions(consumer, name):
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            start = OFFSET_BEGINNING if last <= 0 else max(low, high - last)
            starts.append(TopicPartition(name, p, start))
            if high > max(low, start if start >= 0 else low):
                ends[p] = high
        consumer.assign(starts)
        # Without --follow: stop at the end each partition had when we started, so a busy
        # topic (heartbeats) does not keep the command reading for ever.
        deadline = time.monotonic() + 10.0
        while follow or (ends and time.monotonic() < deadline):
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            if not follow and msg.offset() >= ends.get(msg.partition(), -1):
                ends.pop(msg.partition(), None)
                continue
            _print(msg, with_headers)
            if not follow and msg.offset() + 1 >= ends.get(msg.partition(), -1):
                ends.pop(msg.partition(), None)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@bus_app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="e.g. task-status-update-topic")],
    last: Annotated[int, typer.Option("--last", "-n", help="per partition; 0 = all")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    headers: Annotated[bool, typer.Option("--headers")] = False,
) -> None:
    """Print a topic's latest messages, one a line: partition, offset, key, value."""
    _read(topic, last, follow, headers)


@bus_app.command("dead-letters")
def dead_letters(follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """Every dead letter, with the headers that say where it came from and why."""
    from common.messaging.topics import DEAD_LETTER

    _read(DEAD_LETTER, 0, follow, with_headers=True)


@bus_app.command()
def publish(
    topic: Annotated[str, typer.Argument(help="e.g. task-logs-topic")],
    value: Annotated[str, typer.Argument(help="the message value, as is")],
    key: Annotated[str | None, typer.Option("--key", "-k")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="NAME=VALUE")] = None,
    partition: Annotated[
        int | None, typer.Option("--partition", "-p", help="this partition, not the key's")
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="a dispatch for this live agent: its agentId header, on the partition of "
            "task-dispatch-topic its ZooKeeper node says it reads",
        ),
    ] = None,
) -> None:
    """Put one message on a topic exactly as given (to try what a consumer does with it)."""
    from confluent_kafka import Producer

    bus = _bus()
    pairs = [tuple(h.split("=", 1)) for h in header or []]
    if any(len(p) != 2 for p in pairs):
        raise typer.BadParameter("headers are NAME=VALUE")
    if agent is not None:
        if partition is not None:
            raise typer.BadParameter("--agent names the partition: give one of the two")
        partition = _agent_partition(agent)
        pairs = [p for p in pairs if p[0] != "agentId"] + [("agentId", agent)]
    producer = Producer({"bootstrap.servers": bus.bootstrap, "enable.idempotence": True})
    done: list = []
    producer.produce(
        bus.topic(topic),
        key=key,
        value=value.encode(),
        headers=pairs or None,
        on_delivery=lambda err, msg: done.append((err, msg)),
        **({} if partition is None else {"partition": partition}),
    )
    producer.flush(15)
    if not done or done[0][0] is not None:
        typer.echo(f"error: not delivered: {done[0][0] if done else 'timed out'}", err=True)
        raise typer.Exit(1)
    msg = done[0][1]
    typer.echo(f"delivered to {msg.topic()} [{msg.partition()}]@{msg.offset()}")
