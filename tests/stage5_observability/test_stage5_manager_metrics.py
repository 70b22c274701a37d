"""Stage 3's operator ports: the manager counts the outcomes it writes and the dead letters it
sends, and serves its consumer group's lag per partition; an agent serves its own group's."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from observability_support import promtool_problems, scrape, wait_ready

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.messaging.clients import Bus
from common.messaging.topics import DISPATCH, HEARTBEAT, LOGS, STATUS, ensure_topics
from common.testing import eventually

pytestmark = pytest.mark.integration

MANAGER_FAMILIES = {
    "tasklab_tasks_finished_total": "counter",
    "tasklab_task_retries_total": "counter",
    "tasklab_task_schedule_to_start_seconds": "histogram",
    "tasklab_dead_letters_total": "counter",
    "tasklab_kafka_consumer_lag": "gauge",
    "tasklab_queue_depth": "gauge",
    "tasklab_fenced_writes_rejected_total": "counter",
    "tasklab_redis_up": "gauge",
}


def test_the_manager_serves_outcomes_dead_letters_and_consumer_lag_and_an_agent_its_lag(
    observed_role, redis_url, zookeeper_service, zk_chroot, kafka_service, kafka_namespace
):
    # Given the stage 3 roles, each with an operator port
    bus = Bus(kafka_service.env["TASKLAB_KAFKA_BOOTSTRAP"], kafka_namespace)
    ensure_topics(bus.bootstrap, bus.namespace)
    env = {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_ZK_CHROOT": zk_chroot,
        "TASKLAB_KAFKA_BOOTSTRAP": bus.bootstrap,
        "TASKLAB_KAFKA_NAMESPACE": bus.namespace,
        **zookeeper_service.env,
    }
    manager, manager_address = observed_role("manager", 3, env, "manager-m1")
    scheduler, scheduler_address = observed_role("scheduler", 3, env, "scheduler-m1")
    agent, agent_address = observed_role("agent", 3, env, "agent-m1")
    checks = wait_ready(manager, manager_address)["checks"]
    assert {"redis", "kafka"} <= set(checks), checks
    wait_ready(scheduler, scheduler_address)
    wait_ready(agent, agent_address)

    # When a task succeeds, one fails after a retry, and a status message is not JSON
    tasks = TaskClient(RedisTaskStore(redis_client(redis_url)))
    ok, _ = tasks.submit({"taskType": "SHELL", "payload": "echo hi"})
    failing, _ = tasks.submit({"taskType": "SHELL", "payload": "exit 2", "retryCount": 1})
    for task in (ok, failing):
        assert tasks.wait(task.task_id, 30).status.value in ("SUCCESS", "FAILED")
    producer = Producer({"bootstrap.servers": bus.bootstrap})
    producer.produce(bus.topic(STATUS), key=b"poison", value=b"this is not json")
    assert producer.flush(15) == 0

    # Then the manager counted what it wrote (from stage 3 it writes outcomes, not the agent)
    def dead_lettered():
        metrics = scrape(manager_address)
        return metrics.value("tasklab_dead_letters_total", channel="kafka") == 1 and metrics

    metrics = eventually(dead_lettered, 20, 0.2, message="the manager dead-letters the poison")
    for name, kind in MANAGER_FAMILIES.items():
        assert metrics.families().get(name) == kind, name
    assert metrics.value("tasklab_dead_letters_total", channel="kafka", reason="not_json") == 1
    assert metrics.value("tasklab_tasks_finished_total", type="SHELL", status="SUCCESS") == 1
    assert metrics.value("tasklab_tasks_finished_total", type="SHELL", status="FAILED") == 1
    assert metrics.value("tasklab_task_retries_total", type="SHELL") == 1
    assert metrics.value("tasklab_task_schedule_to_start_seconds_count", type="SHELL") == 2
    agent_metrics = scrape(agent_address)
    assert agent_metrics.value("tasklab_tasks_finished_total") == 0, "the agent writes nothing"
    assert agent_metrics.value("tasklab_tasks_started_total", type="SHELL") == 3

    # ...and the lag of its group on each topic it reads, which it has caught up with
    group = bus.group("tasklab-manager")

    def caught_up():
        metrics = scrape(manager_address)
        topics = metrics.label_values("tasklab_kafka_consumer_lag", "topic")
        wanted = {bus.topic(STATUS), bus.topic(LOGS), bus.topic(HEARTBEAT)}
        return (
            wanted <= topics
            and metrics.value("tasklab_kafka_consumer_lag", group=group, topic=bus.topic(STATUS))
            == 0
            and metrics
        )

    metrics = eventually(caught_up, 20, 0.5, message="the manager's lag is served, at 0")
    assert metrics.label_values("tasklab_kafka_consumer_lag", "group") == {group}
    # ...while the agent serves its own group's, on the dispatch topic
    agent_lag = eventually(
        lambda: (
            (m := scrape(agent_address)).samples(
                "tasklab_kafka_consumer_lag", topic=bus.topic(DISPATCH)
            )
            and m
        ),
        20,
        0.5,
        message="the agent's lag is served",
    )
    assert agent_lag.label_values("tasklab_kafka_consumer_lag", "group") == {
        bus.group("tasklab-agent-agent-m1")
    }
    for address in (manager_address, scheduler_address, agent_address):
        assert promtool_problems(scrape(address).text) == ""
