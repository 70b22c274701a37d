"""A stage 1 agent's operator port: /metrics after real tasks, /health, /ready, and readiness
following Redis (the only thing a stage 1 agent needs)."""

from __future__ import annotations

import httpx
import pytest
from observability_support import promtool_problems, ready, scrape, wait_ready

from common import keys
from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.devstack.redis import RedisService
from common.domain.transitions import TaskStatus
from common.testing import eventually

pytestmark = pytest.mark.integration

AGENT_FAMILIES = {
    "tasklab_tasks_started_total": "counter",
    "tasklab_tasks_finished_total": "counter",
    "tasklab_task_retries_total": "counter",
    "tasklab_task_run_seconds": "histogram",
    "tasklab_task_schedule_to_start_seconds": "histogram",
    "tasklab_dead_letters_total": "counter",
    "tasklab_agent_slots": "gauge",
    "tasklab_agent_slots_used": "gauge",
    "tasklab_agent_paused": "gauge",
    "tasklab_agent_heartbeat_age_seconds": "gauge",
    "tasklab_role_info": "gauge",
    # Stage 1 has no scheduler: its agents serve the cluster state read from Redis.
    "tasklab_redis_up": "gauge",
    "tasklab_queue_depth": "gauge",
    "tasklab_agents_heartbeating": "gauge",
    "tasklab_fenced_writes_rejected_total": "counter",
    "tasklab_transitions_accepted_total": "counter",
}


def test_a_stage1_agent_serves_its_tasks_slots_and_the_queues_as_prometheus_metrics(
    observed_role, redis_url
):
    # Given a stage 1 agent with an operator port, and three tasks: one succeeds, one fails
    # after its one retry, one never sits in Redis as a task (a message that is not JSON)
    proc, address = observed_role("agent", 1, {"TASKLAB_REDIS_URL": redis_url}, "agent-m1")
    wait_ready(proc, address)
    client = redis_client(redis_url)
    tasks = TaskClient(RedisTaskStore(client))
    ok, _ = tasks.submit({"taskType": "SHELL", "payload": "echo hi"})
    failing, _ = tasks.submit({"taskType": "SHELL", "payload": "exit 3", "retryCount": 1})
    client.lpush(keys.PENDING_QUEUE, "this is not json")

    # When they have run
    for task in (ok, failing):
        assert tasks.wait(task.task_id, 20).status.value in ("SUCCESS", "FAILED")
    eventually(lambda: client.llen(keys.DEAD_LETTER) == 1, 10, message="one dead letter")

    # Then /metrics has every family an agent serves, with the values those tasks make
    metrics = scrape(address)
    families = metrics.families()
    for name, kind in AGENT_FAMILIES.items():
        assert families.get(name) == kind, (name, families.get(name))
    assert metrics.value("tasklab_tasks_started_total", type="SHELL") == 3  # 1 + 2 attempts
    assert metrics.value("tasklab_tasks_finished_total", type="SHELL", status="SUCCESS") == 1
    assert metrics.value("tasklab_tasks_finished_total", type="SHELL", status="FAILED") == 1
    assert metrics.value("tasklab_task_retries_total", type="SHELL") == 1
    assert metrics.value("tasklab_task_run_seconds_count", outcome="success") == 1
    assert metrics.value("tasklab_task_run_seconds_count", outcome="failed") == 2
    assert metrics.value("tasklab_task_schedule_to_start_seconds_count", type="SHELL") == 2
    assert metrics.value("tasklab_dead_letters_total", channel="redis", reason="not_json") == 1
    assert metrics.value("tasklab_queue_depth", queue="dead_letter") == 1
    assert metrics.value("tasklab_queue_depth", queue="pending") == 0
    assert metrics.value("tasklab_agent_slots") == 2
    assert metrics.value("tasklab_agent_slots_used") == 0
    assert metrics.value("tasklab_agents_heartbeating") == 1
    assert metrics.value("tasklab_redis_up") == 1
    assert metrics.value("tasklab_role_info", role="agent", stage="1") == 1
    assert metrics.value("tasklab_transitions_accepted_total") >= 6
    # ...in bounded label sets: a task id never appears in a label
    assert ok.task_id not in metrics.text and failing.task_id not in metrics.text
    # ...and promtool finds nothing to say about it
    assert promtool_problems(metrics.text) == ""

    # When a late report of the failing task's first attempt arrives (a zombie agent's),
    # and a write fenced by an epoch older than the fence (a deposed leader's)
    store = RedisTaskStore(client)
    late = store.transition(failing.task_id, TaskStatus.SUCCESS, attempt=1, actor="zombie")
    client.set(keys.SCHEDULER_FENCE, 7)
    deposed = store.transition(
        ok.task_id, TaskStatus.CANCELLED, attempt=1, epoch=6, actor="old-leader", fenced=True
    )
    assert (late.reason, deposed.reason) == ("stale_attempt", "stale_epoch")

    # Then the duplicates fencing prevented are on /metrics, by reason
    fenced = scrape(address)
    assert fenced.value("tasklab_fenced_writes_rejected_total", reason="stale_attempt") == 1
    assert fenced.value("tasklab_fenced_writes_rejected_total", reason="stale_epoch") == 1
    assert fenced.value("tasklab_scheduler_fence_epoch") == 7


def test_an_agent_answers_health_always_and_ready_only_while_redis_answers(observed_role, tmp_path):
    # Given a stage 1 agent on a Redis of its own, ready
    service = RedisService()
    running = service.start(tmp_path / "redis")
    try:
        proc, address = observed_role("agent", 1, dict(running.env), "agent-r1")
        body = wait_ready(proc, address)
        assert body["status"] == "ready"
        assert {"heartbeat", "taking_work", "redis"} <= set(body["checks"])
        assert all(check["ok"] for check in body["checks"].values())

        # When Redis stops
        service.stop(running)

        # Then /ready says 503 and names Redis (and, soon, the heartbeats) as down
        def not_ready() -> dict | None:
            response = ready(address)
            return response.json() if response.status_code == 503 else None

        down = eventually(not_ready, 10, 0.1, message="/ready answers 503")
        assert down["status"] == "not ready"
        assert down["checks"]["redis"]["ok"] is False
        # ...while /health still says the process lives (restarting it would not help)
        health = httpx.get(f"http://{address}/health", timeout=5)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        # ...and /metrics still answers, saying Redis did not
        assert scrape(address).value("tasklab_redis_up") == 0

        # When Redis is back on the same port, the agent is ready again, untouched
        running = service.restart(running)
        wait_ready(proc, address, timeout=20)
        assert proc.alive()
        # An unknown path is a 404 that lists the paths there are
        missing = httpx.get(f"http://{address}/nope", timeout=5)
        assert missing.status_code == 404 and "/metrics" in missing.json()["paths"]
    finally:
        service.stop(running)
