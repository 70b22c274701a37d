"""The REST API's request metrics are labelled by route template, whoever answered: a route,
or a link that refused the request before routing (auth's 401). No provider, no server: the
app with auth on and nothing behind it (a refused request never reaches a provider)."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from common.api.app import create_app
from common.config import Settings
from common.observability import metrics

# Nothing listens on port 1: a request that reached a real service would fail, not pass.
OFFLINE = Settings(
    redis_url="redis://127.0.0.1:1/0",
    zk_hosts="127.0.0.1:1",
    kafka_bootstrap="127.0.0.1:1",
    api_keys={"a-key-for-this-test-only": ["TaskRead"]},
)


def call(app, method: str, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path)

    return asyncio.run(go())


def requests(route: str, method: str, status: str) -> float:
    return metrics.HTTP_REQUESTS.labels(route, method, status)._value.get()


def test_a_request_refused_by_auth_is_counted_under_the_route_it_asked_for():
    app = create_app(OFFLINE)
    before = requests("/api/v1/tasks/{taskId}", "GET", "401")
    task_id = str(uuid.uuid4())
    assert call(app, "GET", f"/api/v1/tasks/{task_id}").status_code == 401
    assert requests("/api/v1/tasks/{taskId}", "GET", "401") == before + 1


def test_a_path_no_route_matches_is_counted_as_unmatched_and_health_as_itself():
    app = create_app(OFFLINE)
    unmatched, health = requests("unmatched", "GET", "401"), requests("/health", "GET", "200")
    # Auth answers first (the path is not public); the label is still bounded.
    assert call(app, "GET", "/no/such/path/" + uuid.uuid4().hex).status_code == 401
    assert call(app, "GET", "/health").status_code == 200
    assert requests("unmatched", "GET", "401") == unmatched + 1
    assert requests("/health", "GET", "200") == health + 1


def test_the_api_serves_metrics_without_credentials_and_outside_its_openapi_document():
    app = create_app(OFFLINE)
    response = call(app, "GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "tasklab_http_requests_total" in response.text
    assert "/metrics" not in app.openapi()["paths"]
