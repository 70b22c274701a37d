"""Redis stopped under the REST API: 503 problems (never a 500, never a hang), readiness says
what is down, and everything works again when Redis is back, without restarting anything.

The API and its provider get a Redis of their own, stopped and started by this test (the
platform of the other modules lives on the session's Redis and must not see the outage).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from rpc_support import free_port, wait_for_api

from common.devstack.redis import RedisService
from common.testing import eventually
from common.testing.processes import RoleProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBLEM = "application/problem+json"


@pytest.fixture
def outage_api(
    zookeeper_service, kafka_service, tmp_path
) -> Iterator[tuple[str, RedisService, list]]:
    service = RedisService(appendonly=True)
    running = [service.start(tmp_path / "redis")]
    env = {
        **running[0].env,
        **zookeeper_service.env,
        "TASKLAB_ZK_CHROOT": f"/tasklab-outage-{uuid.uuid4().hex[:8]}",
        **kafka_service.env,
    }
    address = f"127.0.0.1:{free_port()}"
    provider = RoleProcess("rpc", 4, env, tmp_path, name="rpc-outage").start()
    api = RoleProcess(
        "api", 4, {**env, "TASKLAB_API_ADDRESS": address}, tmp_path, name="api-outage"
    )
    api.start()
    try:
        url = f"http://{address}"
        wait_for_api(api, url)
        yield url, service, running
    finally:
        for proc in (api, provider):
            proc.stop()
            print(f"\n----- {proc.name} -----\n{proc.log_text()[-3000:]}")
        service.stop(running[0])


def test_with_redis_stopped_the_api_answers_503_problems_and_recovers_when_it_is_back(outage_api):
    url, service, running = outage_api
    with httpx.Client(base_url=url, timeout=30.0) as http:
        # Given a working API with a task stored
        before = eventually(
            lambda: (
                (
                    r := http.post("/api/v1/tasks", json={"taskType": "SHELL", "payload": "true"})
                ).status_code
                == 201
                and r
            ),
            20,
            message="a submit goes through",
        )
        task_id = before.json()["taskId"]

        # When Redis stops under it
        service.stop(running[0])

        # Then a submit and a read answer 503 problems that say to retry, in bounded time
        for method, path, body in (
            ("POST", "/api/v1/tasks", {"taskType": "SHELL", "payload": "true"}),
            ("GET", f"/api/v1/tasks/{task_id}", None),
        ):
            response = http.request(method, path, json=body)
            assert response.status_code == 503, response.text
            assert response.headers["content-type"].startswith(PROBLEM)
            assert response.json()["type"] == "/problems/service-unavailable"
            assert int(response.headers["retry-after"]) >= 1
        ready = http.get("/ready")
        assert ready.status_code == 503 and ready.headers["content-type"].startswith(PROBLEM)
        assert "redis" in ready.json()["down"] and "redis" in ready.json()["detail"]
        assert http.get("/health").status_code == 200, "liveness does not depend on Redis"

        # When Redis is back on the same port, with its data
        running[0] = service.restart(running[0])

        # Then the same API process serves again: reads, submits, readiness
        eventually(
            lambda: http.get(f"/api/v1/tasks/{task_id}").status_code == 200,
            20,
            message="the stored task is readable again",
        )
        after = http.post("/api/v1/tasks", json={"taskType": "SHELL", "payload": "true"})
        assert after.status_code == 201, after.text
        eventually(lambda: http.get("/ready").status_code == 200, 20, message="ready again")
