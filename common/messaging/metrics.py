"""Kafka consumer lag, from librdkafka's own statistics: no extra request to the broker.

Every consumer tasklab builds (`consumer_config`) asks librdkafka for its statistics every
STATS_INTERVAL_MS; librdkafka already knows, for each partition it reads, the high watermark
and the committed offset, and hands them over as JSON from inside `poll()`. This module keeps
the newest per group and serves `tasklab_kafka_consumer_lag{group, topic, partition}` (high
watermark minus committed offset: what the group would read again, or still has to read, if
it restarted now). A partition that moved to another consumer leaves with the next report.
"""

from __future__ import annotations

import json
import threading

from common.observability import metrics
from common.observability.health import CHECKS, ReadinessChecks

STATS_INTERVAL_MS = 2000


class ConsumerLag:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # group -> {(topic, partition): lag}
        self._lag: dict[str, dict[tuple[str, str], int]] = {}

    def callback(self, group: str):
        """A `stats_cb` for a consumer of `group` (runs on the thread that polls)."""

        def on_stats(raw: str) -> None:
            try:
                self.update(group, json.loads(raw))
            except (ValueError, TypeError, AttributeError):
                return  # malformed statistics say nothing about lag; the next report will

        return on_stats

    def update(self, group: str, stats: dict) -> None:
        lags: dict[tuple[str, str], int] = {}
        for topic, info in (stats.get("topics") or {}).items():
            for partition, p in (info.get("partitions") or {}).items():
                # -1 is librdkafka's "unassigned" pseudo-partition; "none" = not ours to read.
                if partition == "-1" or p.get("fetch_state") in (None, "none"):
                    continue
                high, committed = p.get("hi_offset", -1), p.get("committed_offset", -1)
                if high < 0:
                    continue
                # Nothing committed yet (a new group): everything up to the watermark waits.
                lags[(topic, partition)] = max(0, high - max(committed, 0))
        with self._lock:
            self._lag[group] = lags

    def forget(self, group: str) -> None:
        with self._lock:
            self._lag.pop(group, None)

    def describe(self):
        return []

    def collect(self):
        family = metrics.F_LAG.gauge_family()
        with self._lock:
            snapshot = {g: dict(p) for g, p in self._lag.items()}
        for group in sorted(snapshot):
            for (topic, partition), lag in sorted(snapshot[group].items()):
                family.add_metric([group, topic, partition], lag)
        yield family


# One per process, like the registry it is served from; registered when first used.
CONSUMER_LAG = ConsumerLag()


def lag_statistics(group: str) -> dict[str, object]:
    """Consumer settings that report `group`'s lag to this process's /metrics."""
    metrics.register_collector("kafka-consumer-lag", CONSUMER_LAG)
    return {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": CONSUMER_LAG.callback(group)}


def observe_consumer(consumer, name: str = "kafka", checks: ReadinessChecks = CHECKS) -> None:
    """Readiness of a role that lives on a consumer (the manager): the broker answers it.

    `consumer` is an AtLeastOnceConsumer (duck-typed: its module imports this one); its
    confluent-kafka Consumer is read at each check, since a fatal error replaces it."""

    def kafka() -> tuple[bool, str]:
        client = consumer.consumer
        # Half the probe's budget for the broker's answer: a silent broker then fails the
        # check with librdkafka's own reason (timed out) well inside the probe's deadline,
        # whatever the check thread's start and the GIL cost on a busy manager. A call that
        # may take nearly the whole budget races the deadline: the probe then reads only
        # "no answer", and the call's thread outlives the probe that started it.
        brokers = client.list_topics(timeout=checks.timeout / 2).brokers
        assigned = len(client.assignment())
        return bool(brokers), f"{len(brokers)} broker(s), {assigned} partition(s) assigned"

    checks.add(name, kafka)
