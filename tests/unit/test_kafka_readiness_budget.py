"""The manager's `kafka` readiness check asks the broker within the probe's budget, so a silent
broker reads as the broker's own reason, not as a check that did not answer."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from confluent_kafka import KafkaError, KafkaException

from common.messaging.metrics import observe_consumer
from common.observability.health import ReadinessChecks


class SilentBroker:
    """A consumer whose broker never answers: list_topics waits out its timeout, then raises
    as librdkafka does."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._never = threading.Event()

    def list_topics(self, timeout: float):
        self.asked.append(timeout)
        self._never.wait(timeout)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    def assignment(self) -> list:
        return []


class AnsweringBroker:
    def list_topics(self, timeout: float):
        return SimpleNamespace(brokers={1: "127.0.0.1:9092"})

    def assignment(self) -> list:
        return [("task-status-topic", 0), ("task-status-topic", 1)]


def test_a_silent_broker_fails_the_check_with_its_own_reason_inside_the_probes_budget():
    # Given the manager's check, registered into probes with a short budget
    broker = SilentBroker()
    checks = ReadinessChecks(timeout=0.6)
    observe_consumer(SimpleNamespace(consumer=broker), checks=checks)
    # When a probe asks it while the broker is silent
    ok, results = checks.run()
    # Then the call's own timeout came first: not ready, saying the broker timed out
    assert not ok
    assert results["kafka"].detail.startswith("KafkaException"), results["kafka"]
    assert broker.asked, "the broker was asked"


def test_an_answering_broker_makes_the_check_ready_with_what_the_manager_reads():
    checks = ReadinessChecks(timeout=0.6)
    observe_consumer(SimpleNamespace(consumer=AnsweringBroker()), checks=checks)
    ok, results = checks.run()
    assert ok
    assert results["kafka"].detail == "1 broker(s), 2 partition(s) assigned"
