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

import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from monitoring_support import PrometheusAPI, WebhookReceiver, scaled_rules
from observability_support import free_address, wait_ready

from common import keys
from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.devstack.alertmanager import AlertmanagerService
from common.devstack.monitoring import DEPLOY_DIR, ScrapeTarget, write_targets
from common.devstack.prometheus import PrometheusService
from common.testing import RoleProcess, eventually

pytestmark = pytest.mark.integration

DASHBOARDS_DIR = DEPLOY_DIR / "grafana" / "dashboards"

# What the platform runs before the tests look: successes, a failure after one retry, a
# Python script, and a message that is not JSON (a dead letter), so that every panel of the
# dashboards has something to show. A counter or histogram series is created by its first
# event, and rate() cannot see what a series already held when Prometheus first scraped it:
# a first wave creates the series, Prometheus scrapes them, then the second wave is what the
# rates show (a burst of short tasks ends between two scrapes).
FIRST_WAVE = [
    *({"taskType": "SHELL", "payload": "true", "taskName": f"first-{n}"} for n in range(4)),
    {"taskType": "PYTHON_SCRIPT", "payload": "print(1)", "taskName": "first-script"},
]
SECOND_WAVE = [
    *({"taskType": "SHELL", "payload": "true", "taskName": f"ok-{n}"} for n in range(6)),
    {"taskType": "SHELL", "payload": "exit 3", "taskName": "fails", "retryCount": 1},
    {"taskType": "PYTHON_SCRIPT", "payload": "print(6 * 7)", "taskName": "script"},
]
PROCESSES = (("scheduler", "scheduler-1"), ("agent", "agent-1"), ("agent", "agent-2"))


@dataclass
class LivePlatform:
    prometheus_url: str
    alertmanager_url: str
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
    alertmanager = AlertmanagerService(
        webhook_url=webhook.url, group_wait="1s", group_interval="1s", repeat_interval="1h"
    )
    prometheus = PrometheusService(
        targets_file=root / "targets.json",
        rules=[scaled_rules(root / "rules.yml")],
        scrape_interval="1s",
    )
    started, procs = [], {}
    try:
        am = alertmanager.start(root)
        started.append((alertmanager, am))
        prometheus.alertmanagers = [f"{am.host}:{am.port}"]
        prom = prometheus.start(root)
        started.append((prometheus, prom))

        # The roles, each with its operator port, listed for Prometheus as the dev stack does
        addresses, roles = {}, {}
        for role, name in PROCESSES:
            addresses[name], roles[name] = free_address(), role
            procs[name] = RoleProcess(
                role,
                2,
                {
                    **env,
                    "TASKLAB_METRICS_ADDRESS": addresses[name],
                    "TASKLAB_AGENT_ID": name,
                    "TASKLAB_SCHEDULER_ID": name,
                },
                root,
                name=name,
            ).start()
        write_targets(
            root / "targets.json", (ScrapeTarget(roles[n], n, a) for n, a in addresses.items())
        )
        for name, proc in procs.items():
            wait_ready(proc, addresses[name])
        # The work runs only once Prometheus scrapes every role: a counter or histogram series
        # is created by its first event, and rate() cannot see the events a series already
        # held when it was first scraped.
        api = PrometheusAPI(prom.env["TASKLAB_PROMETHEUS_URL"])
        eventually(
            lambda: len(api.query('up{job="tasklab"} == 1')) == len(PROCESSES),
            30,
            0.5,
            message="Prometheus scrapes every role",
        )

        tasks = TaskClient(RedisTaskStore(client))
        first = [tasks.submit(body)[0].task_id for body in FIRST_WAVE]
        assert all(tasks.wait(task_id, 30).status.value == "SUCCESS" for task_id in first)
        eventually(
            lambda: api.query(f"sum(tasklab_tasks_finished_total) == {len(first)}"),
            15,
            0.5,
            message="Prometheus scraped the first wave",
        )
        second = [tasks.submit(body)[0].task_id for body in SECOND_WAVE]
        client.lpush(keys.PENDING_QUEUE, "{not json")
        finals = [tasks.wait(task_id, 30).status.value for task_id in second]
        assert finals.count("SUCCESS") == 7 and finals.count("FAILED") == 1, finals
        eventually(lambda: client.llen(keys.DEAD_LETTER) == 1, 15, message="the dead letter")

        # rate() needs two samples of a series: every tasklab series, those the second wave
        # created included, is scraped a few times before a test can kill its process.
        def scraped_thrice() -> bool:
            names = [n for n in api.get("/api/v1/label/__name__/values") if "tasklab_" in n]
            return all(not api.query(f"count_over_time({name}[5m]) < 3") for name in names)

        eventually(scraped_thrice, 15, 0.5, message="every tasklab series scraped three times")

        yield LivePlatform(
            prometheus_url=prom.env["TASKLAB_PROMETHEUS_URL"],
            alertmanager_url=am.env["TASKLAB_ALERTMANAGER_URL"],
            webhook=webhook,
            tasks=tasks,
            agents={n: p for n, p in procs.items() if roles[n] == "agent"},
            scheduler=procs["scheduler-1"],
            addresses=addresses,
            roles=roles,
            finished=len(first) + len(finals),
        )
    finally:
        for proc in procs.values():
            proc.stop()
        for service, running in reversed(started):
            service.stop(running)
        webhook.stop()
        client.close()
        for proc in procs.values():
            print(f"\n----- {proc.name} (pid {proc.pid}) -----\n{proc.log_text()[-3000:]}")
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
    # ...and the rules it loaded are the repository's eight alerts
    assert len(prometheus.rule_names()) == 8
    for name, target in sorted(by_instance.items()):
        print(
            f"target {name} role={target['labels']['role']} {target['scrapeUrl']} "
            f"health={target['health']} lastScrapeDuration={target['lastScrapeDuration']:.4f}s"
        )


def test_a_message_that_is_not_json_reaches_the_webhook_as_dead_letters_growing(live_platform):
    # Given the message pushed onto queue:pending by hand, which the scheduler set aside as a
    # dead letter: the first of its reason, in a counter series born at 1 that increase()
    # cannot see
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


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) for every query of every panel."""
    found = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def as_prometheus_sees_it(expr: str) -> str:
    """What Grafana would send: its variables replaced, as with "All" agents selected and a
    rate interval that spans the tasks this module ran (the oldest a minute or two ago)."""
    return expr.replace("$__rate_interval", "5m").replace("$agent", ".+")


def test_every_dashboard_panel_query_has_data_in_the_live_prometheus(live_platform):
    prometheus = PrometheusAPI(live_platform.prometheus_url)
    queries = dashboard_queries()
    assert len(queries) >= 30, "the three dashboards' queries were found"
    empty = []
    for dashboard, title, expr in queries:
        result = prometheus.query(as_prometheus_sees_it(expr))
        values = [float(r["value"][1]) for r in result]
        # NaN is what a ratio or a quantile over no events gives: a panel with nothing to show.
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{dashboard} / {title}: {expr} -> {result}")
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
