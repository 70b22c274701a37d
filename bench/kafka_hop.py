"""One Kafka hop on this machine, by client setting: `python -m bench.kafka_hop [--n N]`.

Starts a Kafka broker natively, then sends one message at a time with tasklab's own producer
configuration (`producer_config`) to a consumer with tasklab's consumer configuration
(`consumer_config`), waiting for each to arrive before the next (20 ms apart, an idle bus as a
steady, modest rate sees it), and prints the produce -> consumed latency p50 and p90 for
each variant, in rounds, so that the machine's drift spreads over them. What it isolates is
the hop every stage 3 task takes twice on its way to start (the dispatch, then RUNNING).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from bench.measure import scratch_service

VARIANTS: list[tuple[str, dict, dict]] = [
    ("linger.ms 5 (librdkafka's default)", {"linger.ms": 5}, {}),
    ("linger.ms 0", {"linger.ms": 0}, {}),
    ("linger.ms 0, fetch.wait.max.ms 10", {"linger.ms": 0}, {"fetch.wait.max.ms": 10}),
    ("linger.ms 0, fetch.wait.max.ms 500", {"linger.ms": 0}, {"fetch.wait.max.ms": 500}),
]


def hop(bus, topic: str, producer_extra: dict, consumer_extra: dict, n: int) -> list[float]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from common.messaging.clients import consumer_config, producer_config

    producer = Producer({**producer_config(bus, "hop"), **producer_extra})
    consumer = Consumer({**consumer_config(bus, f"hop-{time.time_ns()}", "hop"), **consumer_extra})
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, high)])
    stop = threading.Event()

    def serve() -> None:  # delivery reports, as EventPublisher's thread serves them
        while not stop.is_set():
            producer.poll(0.1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    latencies: list[float] = []
    try:
        producer.produce(topic, b"warm-up", partition=0)
        deadline = time.monotonic() + 30
        while consumer.poll(0.5) is None and time.monotonic() < deadline:
            pass
        for _ in range(n):
            sent = time.perf_counter()
            producer.produce(topic, b"hop", partition=0)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    latencies.append((time.perf_counter() - sent) * 1e3)
                    break
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(5)
        consumer.close()
        producer.flush(10)
    return latencies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kafka_hop")
    p.add_argument("--n", type=int, default=150, help="messages per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    from confluent_kafka.admin import AdminClient, NewTopic

    from common.devstack.kafka import KafkaService
    from common.messaging.clients import Bus

    with scratch_service(KafkaService()) as running:
        bus = Bus(running.env["TASKLAB_KAFKA_BOOTSTRAP"])
        admin = AdminClient({"bootstrap.servers": bus.bootstrap})
        for future in admin.create_topics([NewTopic("hop", 1, 1)]).values():
            future.result()
        time.sleep(2)  # the new partition takes up its leadership
        for r in range(args.rounds):
            for name, producer_extra, consumer_extra in VARIANTS:
                values = sorted(hop(bus, "hop", producer_extra, consumer_extra, args.n))
                p90 = values[int(0.9 * (len(values) - 1))]
                print(
                    f"round {r + 1}  {name:38s} p50 {statistics.median(values):6.2f} ms"
                    f"  p90 {p90:6.2f} ms",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
