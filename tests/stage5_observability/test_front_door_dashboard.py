"""The front door and bus dashboard on a live stage 4 platform: the real Prometheus scrapes the
REST API, a gRPC provider, the manager, a scheduler and an agent (Kafka between them), and
every panel's query returns data once requests went through the front door."""

from __future__ import annotations

import uuid

import httpx
import pytest
from monitoring_support import (
    ListedRoles,
    WebhookReceiver,
    dashboard_queries,
    monitoring,
    panels_without_data,
    wait_until_every_series_scraped_thrice,
    wait_until_scraped,
)
from observability_support import free_address

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.testing import eventually

pytestmark = pytest.mark.integration

PROCESSES = (
    ("scheduler", "scheduler-1"),
    ("agent", "agent-1"),
    ("manager", "manager-1"),
    ("rpc", "rpc-1"),
    ("api", "api-1"),
)

# What Prometheus shows once it scraped the first wave everywhere it was counted.
FIRST_WAVE_SCRAPED = (
    'sum(tasklab_http_requests_total{method="POST"}) == 2',
    'sum(tasklab_grpc_server_requests_total{method="tasklab.v1.TaskService/Submit"}) == 2',
    'sum(tasklab_grpc_server_requests_total{method="tasklab.v1.TaskService/GetTaskInfo"}) >= 2',
    "sum(tasklab_tasks_submitted_total) == 2",
)


def submit_through_the_api(http: httpx.Client, tasks: TaskClient, count: int) -> None:
    """`count` tasks through REST (POST, then GET each), each waited for to SUCCESS, and one
    GET of a task that does not exist."""
    ids = []
    for n in range(count):
        created = http.post("/api/v1/tasks", json={"taskType": "SHELL", "payload": f"echo {n}"})
        assert created.status_code == 201, created.text
        ids.append(created.json()["taskId"])
    for task_id in ids:
        assert tasks.wait(task_id, 30).status.value == "SUCCESS"
        assert http.get(f"/api/v1/tasks/{task_id}").status_code == 200
    assert http.get(f"/api/v1/tasks/{uuid.uuid4()}").status_code == 404


def test_every_front_door_panel_query_has_data_in_the_live_prometheus(
    redis_url, zookeeper_service, zk_chroot, kafka_service, kafka_namespace, tmp_path
):
    # Given a stage 4 platform, each role listed for the real Prometheus
    env = {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_ZK_CHROOT": zk_chroot,
        **zookeeper_service.env,
        **kafka_service.env,
        "TASKLAB_KAFKA_NAMESPACE": kafka_namespace,
    }
    api_address = free_address()
    own_env = {
        "rpc-1": {"TASKLAB_RPC_ADDRESS": free_address()},
        "api-1": {"TASKLAB_API_ADDRESS": api_address},
    }
    webhook = WebhookReceiver().start()
    tasks = TaskClient(RedisTaskStore(redis_client(redis_url)))
    listed = None
    try:
        with monitoring(tmp_path, webhook.url) as (prometheus, targets):
            listed = ListedRoles.start(4, PROCESSES, env, tmp_path, targets, own_env)
            wait_until_scraped(prometheus, len(PROCESSES))

            # When requests go through the front door, in two waves: the first creates the
            # series (their first event is invisible to rate()), the second is what rates show
            with httpx.Client(base_url=f"http://{api_address}", timeout=20) as http:
                submit_through_the_api(http, tasks, 2)
                # (from the API and from the provider behind it: each is scraped on its own)
                eventually(
                    lambda: all(prometheus.query(expr) for expr in FIRST_WAVE_SCRAPED),
                    15,
                    0.5,
                    message="Prometheus scraped the first wave",
                )
                submit_through_the_api(http, tasks, 4)
            wait_until_every_series_scraped_thrice(prometheus)

            # Then every panel of the front door dashboard has data
            queries = dashboard_queries(["front-door.json"])
            empty = panels_without_data(prometheus, queries)
            assert not empty, "panels without data:\n" + "\n".join(empty)
            # ...and with no lag, ConsumerLag is not even pending
            assert not prometheus.query('ALERTS{alertname="ConsumerLag"}')
            print(f"{len(queries)} front door queries, each with data")
            listed.stop()
            listed = None
    finally:
        if listed is not None:
            listed.stop()
        webhook.stop()
