"""The stage 5 runbook's Break it, as tests on a real stage 3 platform watched by the real
Prometheus and Alertmanager: a poisoned Kafka message, a flood of tasks, a frozen leader. (The
first experiment, kill -9 of an agent into AgentDown, is test_alerting.py's.)

One platform for the module: Redis, ZooKeeper, Kafka, two schedulers, one agent and the
manager, each role listed in the targets file Prometheus reads. Prometheus scrapes and
evaluates every second with the repository's rules, their `for` waits divided by 30 as in
test_alerting.py, but NoSchedulerLeader's, divided by 5 only: the frozen-leader test is about
the race between a standby taking over (one ZooKeeper session timeout, 3 s in the test profile,
10 s by default) and NoSchedulerLeader's wait (1 min, here 12 s), and the scaled wait must stay
well above the session timeout for the race to be the one a deployment runs. No other alert
here races anything: QueueBacklog's 2 min is 4 s, as the flood holds the queue for a minute.
The tests run in file order.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from monitoring_support import ListedRoles, PrometheusAPI, WebhookReceiver, monitoring

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NO_LEADER_FACTOR = 5
NO_LEADER_WAIT = 60 / NO_LEADER_FACTOR  # NoSchedulerLeader's `for: 1m`, scaled
PROCESSES = (
    ("scheduler", "scheduler-1"),
    ("scheduler", "scheduler-2"),
    ("agent", "agent-1"),
    ("manager", "manager-1"),
)
FLOOD = 130  # more than QueueBacklog's 100, on one agent with 2 slots


@dataclass
class Platform:
    prometheus: PrometheusAPI
    webhook: WebhookReceiver
    tasks: TaskClient
    listed: ListedRoles
    env: dict[str, str]


@pytest.fixture(scope="module")
def platform(
    redis_service, zookeeper_service, kafka_service, tmp_path_factory
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("break-it")
    redis_url = redis_service.env["TASKLAB_REDIS_URL"]
    client = redis_client(redis_url)
    client.flushdb()
    env = {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_ZK_CHROOT": f"/tasklab-break-it-{uuid.uuid4().hex[:8]}",
        "TASKLAB_KAFKA_NAMESPACE": f"t{uuid.uuid4().hex[:8]}",
        **zookeeper_service.env,
        **kafka_service.env,
    }
    webhook = WebhookReceiver().start()
    listed = None
    try:
        with monitoring(root, webhook.url, factors={"NoSchedulerLeader": NO_LEADER_FACTOR}) as (
            prometheus,
            targets,
        ):
            listed = ListedRoles.start(3, PROCESSES, env, root, targets)
            eventually(
                lambda: (
                    len(prometheus.query('up{job="tasklab"} == 1')) == len(PROCESSES)
                    and prometheus.query("max(tasklab_scheduler_is_leader) == 1")
                ),
                45,
                0.5,
                message="every role scraped, one scheduler leading",
            )
            tasks = TaskClient(RedisTaskStore(client))
            # The platform runs: one task through Kafka to SUCCESS before anything breaks.
            task, _ = tasks.submit({"taskType": "SHELL", "payload": "echo ready"})
            assert tasks.wait(task.task_id, 60).status.value == "SUCCESS"
            yield Platform(prometheus, webhook, tasks, listed, env)
            listed.stop()
            listed = None
    finally:
        if listed is not None:
            listed.stop()
        webhook.stop()
        client.close()


def tasklab(env: dict[str, str], *args: str) -> str:
    """The CLI, as the runbook runs it, against the platform's services."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("tasklab")), *args],
        env={**os.environ, **env, "TASKLAB_ENV": "test"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_message_that_is_not_json_on_a_kafka_topic_reaches_the_webhook_as_dead_letters_growing(
    platform,
):
    assert not platform.webhook.alerts("DeadLettersGrowing")

    # When a message that is not an event is published on the topic the manager reads
    delivered = tasklab(
        platform.env, "bus", "publish", "task-status-update-topic", "this is not an event"
    )
    assert delivered.startswith("delivered to ")

    # Then the manager dead-letters it, counted from the 0 its series started at...
    eventually(
        lambda: platform.prometheus.query(
            'tasklab_dead_letters_total{channel="kafka", reason="not_json"} == 1'
        ),
        30,
        0.5,
        message="the kafka dead letter is scraped",
    )
    # ...Alertmanager posts DeadLettersGrowing for the kafka channel, and only for it
    alerts = eventually(
        lambda: platform.webhook.alerts("DeadLettersGrowing"),
        30,
        0.2,
        message="DeadLettersGrowing at the webhook",
    )
    assert {(a["labels"]["channel"], a["labels"]["reason"]) for a in alerts} == {
        ("kafka", "not_json")
    }
    print(f"DeadLettersGrowing: {alerts[0]['annotations']['summary']}")


def test_a_flood_of_tasks_the_agents_cannot_take_reaches_the_webhook_as_queue_backlog(platform):
    tasks = platform.tasks
    assert not platform.webhook.alerts("QueueBacklog")

    # When more tasks arrive than the one agent's two slots and inbox can take
    flood = [
        tasks.submit(
            {
                "taskType": "SHELL",
                "payload": "sleep 60",
                "executionTimeout": 120,
                "taskName": f"f{n}",
            }
        )[0].task_id
        for n in range(FLOOD)
    ]
    try:
        # Then queue:pending stays over 100 and Alertmanager posts QueueBacklog for it
        alerts = eventually(
            lambda: platform.webhook.alerts("QueueBacklog"),
            60,
            0.2,
            message="QueueBacklog at the webhook",
        )
        assert [a["labels"]["queue"] for a in alerts] == ["pending"]
        depth = platform.prometheus.values(
            'max by (queue) (tasklab_queue_depth{queue="pending"})', "queue"
        )["pending"]
        assert depth > 100
        print(f"QueueBacklog: {alerts[0]['annotations']['summary']}")
    finally:
        # The flood goes, so the next experiment runs on an idle platform.
        for task_id in flood:
            tasks.cancel(task_id)
    eventually(
        lambda: platform.prometheus.query('max(tasklab_queue_depth{queue="pending"}) == 0'),
        30,
        0.5,
        message="the cancelled flood leaves queue:pending",
    )


def rfc3339(text: str) -> float:
    """Prometheus's timestamps (nanoseconds, `Z` or an offset) as Unix time."""
    found = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert found, text
    whole, frac, zone = found.groups()
    stamp = f"{whole}.{(frac or '0')[:6]}{'+00:00' if zone == 'Z' else zone}"
    return datetime.fromisoformat(stamp).timestamp()


def test_a_frozen_leader_is_replaced_within_its_session_so_no_scheduler_leader_never_fires(
    platform,
):
    prometheus = platform.prometheus
    leaders = prometheus.values("tasklab_scheduler_is_leader == 1", "instance")
    assert len(leaders) == 1, leaders
    (leader,) = leaders
    standby = next(name for role, name in PROCESSES if role == "scheduler" and name != leader)
    epochs = prometheus.values("tasklab_scheduler_epoch", "instance")
    proc = platform.listed.procs[leader]

    # When the leader is frozen (SIGSTOP): alive for the kernel, silent for everyone else
    frozen_at = time.time()
    proc.pause()
    try:
        # Then the standby leads within about one ZooKeeper session timeout, in a new term
        # whose epoch is higher than the frozen leader's
        eventually(
            lambda: (
                prometheus.values("tasklab_scheduler_is_leader == 1", "instance") == {standby: 1.0}
            ),
            30,
            0.2,
            message=f"{standby} leads",
        )
        took = time.time() - frozen_at
        new_epochs = prometheus.values("tasklab_scheduler_epoch", "instance")
        assert new_epochs[standby] > epochs[leader]
        assert prometheus.values("tasklab_scheduler_terms_total", "instance")[standby] == 1
        assert prometheus.values('up{role="scheduler"}', "instance")[leader] == 0

        # ...NoSchedulerLeader was pending while nobody led, and Prometheus evaluated it past
        # its wait without it ever firing: the takeover beat the rule
        def evaluated_past_its_wait() -> bool:
            rule = prometheus.rule("NoSchedulerLeader")
            return (
                rfc3339(rule["lastEvaluation"]) > frozen_at + NO_LEADER_WAIT + 2
                and rule["state"] == "inactive"
            )

        eventually(evaluated_past_its_wait, 45, 0.5, message="NoSchedulerLeader evaluated")
        history = 'count_over_time(ALERTS{{alertname="NoSchedulerLeader", alertstate="{}"}}[5m])'
        assert prometheus.query(history.format("pending")), "nobody led for a while"
        assert not prometheus.query(history.format("firing"))
        assert not platform.webhook.alerts("NoSchedulerLeader")
    finally:
        proc.resume()

    # When the old leader wakes up, its term is over: it does not lead, and the standby does
    eventually(
        lambda: (
            prometheus.values("tasklab_scheduler_is_leader", "instance")
            == {leader: 0.0, standby: 1.0}
        ),
        30,
        0.2,
        message=f"{leader} scraped again, as a standby",
    )
    # ...and the platform still runs tasks, placed by the new leader
    task, _ = platform.tasks.submit({"taskType": "SHELL", "payload": "echo after"})
    assert platform.tasks.wait(task.task_id, 60).status.value == "SUCCESS"
    deposed = prometheus.values("tasklab_scheduler_deposed_total", "instance")
    print(
        f"{standby} led {took:.1f}s after {leader} was frozen "
        f"(epoch {epochs[leader]:.0f} -> {new_epochs[standby]:.0f}); NoSchedulerLeader pending, "
        f"never firing; {leader} deposed_total={deposed.get(leader)}"
    )
