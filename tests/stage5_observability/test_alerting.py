"""The real Prometheus scrapes a running stage 2 platform and the real Alertmanager delivers its
alerts: kill -9 of an agent reaches a webhook the test runs as AgentDown, naming that agent.

One platform for the module: Redis, ZooKeeper, a scheduler and two agents, each role with its
operator port listed in the file_sd targets file Prometheus reads (as the dev stack writes it),
Prometheus scraping and evaluating every second with the repository's rules (their `for`
waits scaled down, see monitoring_support.scaled_rules), and Alertmanager with a one-second
group wait. The tests run in file order: the dashboards' queries, last, need the failover
that the kill causes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from monitoring_support import (
    ListedRoles,
    PrometheusAPI,
    WebhookReceiver,
    alert_names,
    dashboard_queries,
    monitoring,
    panels_without_data,
    wait_until_every_series_scraped_thrice,
    wait_until_scraped,
)

from common import keys
from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.testing import RoleProcess, eventually

pytestmark = pytest.mark.integration

# The dashboards whose every panel a stage 2 platform feeds (the front door's is stage 4's,
# test_front_door_dashboard.py).
DASHBOARDS = ("overview.json", "agent.json", "guarantees.json")

# What the platform runs before the tests look: successes, a failure after one retry, a
# Python script, and a message that is not JSON (a dead letter), so that every panel of the
# dashboards has something to show. A counter or histogram series is created by its first
# event, and rate() cannot see what a series already held when Prometheus first scraped it:
# a first wave creates the series, Prometheus scrapes them, then the second wave is what the
# rates show (a burst of short tasks ends between two scrapes).
# The first wave's tasks last long enough to fill both agents' slots, so both agents' series
# exist before the second wave, wherever the scheduler places its tasks.
FIRST_WAVE = [
    *({"taskType": "SHELL", "payload": "sleep 0.5", "taskName": f"first-{n}"} for n in range(4)),
    {"taskType": "PYTHON_SCRIPT", "payload": "print(1)", "taskName": "first-script"},
]
SECOND_WAVE = [
    *({"taskType": "SHELL", "payload": "true", "taskName": f"ok-{n}"} for n in range(6)),
    {"taskType": "SHELL", "payload": "exit 3", "taskName": "fails", "retryCount": 1},
    {"taskType": "PYTHON_SCRIPT", "payload": "print(6 * 7)", "taskName": "script"},
]
ON_BOTH_AGENTS = "count(count by (instance) (tasklab_task_schedule_to_start_seconds_count)) == 2"
PROCESSES = (("scheduler", "scheduler-1"), ("agent", "agent-1"), ("agent", "agent-2"))


@dataclass
class LivePlatform:
    prometheus_url: str
    webhook: WebhookReceiver
    tasks: TaskClient
    agents: dict[str, RoleProcess]
    scheduler: RoleProcess
    addresses: dict[str, str]  # process name -> operator address
    roles: dict[str, str]  # process name -> role
    finished: int  # tasks that reached a final status before the tests


@pytest.fixture(scope="module")
def live_platform(redis_service, zookeeper_service, tmp_path_factory) -> Iterator[LivePlatform]:
    root = tmp_path_factory.mktemp("alerting")
    redis_url = redis_service.env["TASKLAB_REDIS_URL"]
    client = redis_client(redis_url)
    client.flushdb()
    env = {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_ZK_CHROOT": f"/tasklab-alerting-{uuid.uuid4().hex[:8]}",
        **zookeeper_service.env,
    }
    webhook = WebhookReceiver().start()
    listed = None
    try:
        with monitoring(root, webhook.url) as (prometheus, targets):
            listed = ListedRoles.start(2, PROCESSES, env, root, targets)
            # The work runs only once Prometheus scrapes every role: a counter or histogram
            # series is created by its first event, and rate() cannot see the events a series
            # already held when it was first scraped.
            wait_until_scraped(prometheus, len(PROCESSES))

            tasks = TaskClient(RedisTaskStore(client))
            first = [tasks.submit(body)[0].task_id for body in FIRST_WAVE]
            assert all(tasks.wait(task_id, 30).status.value == "SUCCESS" for task_id in first)
            eventually(
                lambda: (
                    prometheus.query(f"sum(tasklab_tasks_finished_total) == {len(first)}")
                    and prometheus.query("count(tasklab_task_schedule_to_start_seconds_count) >= 2")
                ),
                15,
                0.5,
                message="Prometheus scraped the first wave, from both agents",
            )
            second = [tasks.submit(body)[0].task_id for body in SECOND_WAVE]
            client.lpush(keys.PENDING_QUEUE, "{not json")
            finals = [tasks.wait(task_id, 30).status.value for task_id in second]
            assert finals.count("SUCCESS") == 7 and finals.count("FAILED") == 1, finals
            eventually(lambda: client.llen(keys.DEAD_LETTER) == 1, 15, message="the dead letter")
            wait_until_every_series_scraped_thrice(prometheus)

            yield LivePlatform(
                prometheus_url=prometheus.url,
                webhook=webhook,
                tasks=tasks,
                agents={n: p for n, p in listed.procs.items() if listed.roles[n] == "agent"},
                scheduler=listed.procs["scheduler-1"],
                addresses=listed.addresses,
                roles=listed.roles,
                finished=len(first) + len(finals),
            )
            # Stopped while Prometheus still runs, so none of them is scraped after its stop.
            listed.stop()
            listed = None
    finally:
        if listed is not None:
            listed.stop()
        webhook.stop()
        client.close()
        if webhook.notifications:
            print(f"webhook received {len(webhook.notifications)} notification(s)")


def test_prometheus_scrapes_the_scheduler_and_both_agents_from_the_targets_file(live_platform):
    prometheus = PrometheusAPI(live_platform.prometheus_url)

    # Given the roles listed in the targets file, When Prometheus has discovered them
    def all_up() -> list[dict] | None:
        targets = prometheus.targets()
        healthy = [t for t in targets if t["health"] == "up"]
        return targets if len(targets) == 3 and len(healthy) == 3 else None

    targets = eventually(all_up, 30, 0.5, message="the three tasklab targets are up")

    # Then each is scraped at its operator port, labelled with its role and process name
    by_instance = {t["labels"]["instance"]: t for t in targets}
    assert set(by_instance) == set(live_platform.addresses)
    for name, target in by_instance.items():
        assert target["labels"]["role"] == live_platform.roles[name]
        assert target["scrapeUrl"] == f"http://{live_platform.addresses[name]}/metrics"
        assert target["lastError"] == ""

    # ...and what it scraped is the platform's own count of what ran
    def finished() -> float | None:
        result = prometheus.query("sum(tasklab_tasks_finished_total)")
        return float(result[0]["value"][1]) if result else None

    # (eventually: the last task may have finished after the latest scrape)
    eventually(
        lambda: finished() == live_platform.finished, 15, 0.5, message="finished tasks scraped"
    )
    assert {r["metric"]["instance"] for r in prometheus.query('up{job="tasklab"} == 1')} == set(
        live_platform.addresses
    )
    # ...and the rules it loaded are the repository's alerts, every one of them
    assert prometheus.rule_names() == set(alert_names())
    for name, target in sorted(by_instance.items()):
        print(
            f"target {name} role={target['labels']['role']} {target['scrapeUrl']} "
            f"health={target['health']} lastScrapeDuration={target['lastScrapeDuration']:.4f}s"
        )


def test_a_message_that_is_not_json_reaches_the_webhook_as_dead_letters_growing(live_platform):
    # Given the message pushed onto queue:pending by hand, which the scheduler set aside as a
    # dead letter: the first of its reason, in a counter series served at 0 until then
    # Then Alertmanager posts DeadLettersGrowing for its channel and reason
    alerts = eventually(
        lambda: live_platform.webhook.alerts("DeadLettersGrowing"),
        30,
        0.2,
        message="DeadLettersGrowing at the webhook",
    )
    assert [(a["labels"]["channel"], a["labels"]["reason"]) for a in alerts] == [
        ("redis", "not_json")
    ]


def test_an_agent_killed_with_kill_9_reaches_the_webhook_as_agent_down(live_platform):
    prometheus = PrometheusAPI(live_platform.prometheus_url)
    tasks = live_platform.tasks
    # Given an agent running a long task (the one the failover will have to give back)
    task, _ = tasks.submit({"taskType": "SHELL", "payload": "sleep 30", "taskName": "long"})
    owner = eventually(
        lambda: (t := tasks.get(task.task_id)).status.value == "RUNNING" and t.agent_id,
        20,
        0.1,
        message="the long task runs",
    )
    survivor = next(name for name in live_platform.agents if name != owner)
    assert not live_platform.webhook.alerts("AgentDown"), "nothing was down yet"

    # When that agent is killed with kill -9
    killed_at = time.monotonic()
    live_platform.agents[owner].kill()

    # Then Alertmanager posts AgentDown for that agent, and only for it, to the webhook
    alerts = eventually(
        lambda: live_platform.webhook.alerts("AgentDown"),
        45,
        0.2,
        message=f"AgentDown for {owner} at the webhook",
    )
    delay = time.monotonic() - killed_at
    assert [a["labels"]["instance"] for a in alerts] == [owner]
    alert = alerts[0]
    assert alert["labels"]["role"] == "agent"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["also_known_as"] == "WorkerNodeDown"
    assert alert["annotations"]["summary"] == f"Agent {owner} is down"
    # ...Prometheus sees the killed agent's target down and the survivor's up
    health = {t["labels"]["instance"]: t["health"] for t in prometheus.targets()}
    assert health[owner] == "down" and health[survivor] == "up"
    # ...and the leader's failover gives the long task back, which Prometheus scrapes too
    eventually(
        lambda: prometheus.query('sum(tasklab_failovers_total{by="zookeeper"}) >= 1'),
        30,
        0.5,
        message="the failover is scraped",
    )
    print(f"AgentDown for {owner} reached the webhook {delay:.1f}s after kill -9")


def test_every_dashboard_panel_query_has_data_in_the_live_prometheus(live_platform):
    queries = dashboard_queries(DASHBOARDS)
    assert len(queries) >= 30, "the three dashboards' queries were found"

    empty = panels_without_data(PrometheusAPI(live_platform.prometheus_url), queries)

    assert not empty, "panels without data:\n" + "\n".join(empty)
    print(f"{len(queries)} dashboard queries, each with data")


def test_the_only_scheduler_killed_with_kill_9_reaches_the_webhook_as_no_scheduler_leader(
    live_platform,
):
    # Given the platform's one scheduler, leading
    prometheus = PrometheusAPI(live_platform.prometheus_url)
    assert prometheus.query("max(tasklab_scheduler_is_leader) == 1")
    assert not live_platform.webhook.alerts("NoSchedulerLeader")

    # When it is killed with kill -9
    killed_at = time.monotonic()
    live_platform.scheduler.kill()

    # Then Alertmanager posts NoSchedulerLeader: its target is down and nobody leads
    eventually(
        lambda: live_platform.webhook.alerts("NoSchedulerLeader"),
        45,
        0.2,
        message="NoSchedulerLeader at the webhook",
    )
    print(
        f"NoSchedulerLeader reached the webhook {time.monotonic() - killed_at:.1f}s after kill -9"
    )
