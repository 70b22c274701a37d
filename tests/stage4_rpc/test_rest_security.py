"""Security end to end: a real `tasklab run api --stage 4` with API_KEYS, JWT_SECRET and a
small rate limit, over a provider holding the same keys. The credential a caller sends to the
API is checked there, then again by the provider it is passed on to.

No agents: whether a call got through shows in its answer (a task created PENDING), so Redis,
ZooKeeper and one provider are the platform it needs.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest

from common.devstack.redis import RedisService
from common.security.authenticator import fingerprint
from common.testing import eventually
from common.testing.processes import RoleProcess

pytestmark = pytest.mark.integration

SECRET = "5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4"
READER, WRITER, FLOOD = "rest-reader-key-1", "rest-writer-key-2", "rest-flood-key-3"
KEYS = {READER: ["TaskRead"], WRITER: ["TaskWrite"], FLOOD: ["TaskRead"]}
BURST = 3
TASK = {"taskType": "SHELL", "payload": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api(zookeeper_service, kafka_service, tmp_path_factory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("rest-security")
    service = RedisService()
    running = service.start(workdir / "redis")
    credentials = {"TASKLAB_API_KEYS": json.dumps(KEYS), "TASKLAB_JWT_SECRET": SECRET}
    env = {
        **running.env,
        **zookeeper_service.env,
        "TASKLAB_ZK_CHROOT": f"/tasklab-restsec-{uuid.uuid4().hex[:8]}",
        **kafka_service.env,
        **credentials,
    }
    address = f"127.0.0.1:{free_port()}"
    rpc_address = f"127.0.0.1:{free_port()}"
    provider = RoleProcess("rpc", 4, {**env, "TASKLAB_RPC_ADDRESS": rpc_address}, workdir, "rpc")
    api_env = {
        **env,
        "TASKLAB_API_ADDRESS": address,
        "TASKLAB_API__RATE_LIMITING__BURST": str(BURST),
        "TASKLAB_API__RATE_LIMITING__REQUESTS_PER_SECOND": "0.01",
    }
    api = RoleProcess("api", 4, api_env, workdir, name="api")
    provider.start()
    api.start()
    url = f"http://{address}"

    def answers() -> bool:
        assert api.alive(), api.log_text()[-2000:]
        try:
            return httpx.get(url + "/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(answers, 30, message="the API answers")
        yield url
    finally:
        for proc in (api, provider):
            proc.stop()
            if "Traceback" in proc.log_text():
                print(f"\n----- {proc.name} -----\n{proc.log_text()[-5000:]}")
        service.stop(running)


def token(**claims) -> str:
    body = {"sub": "alice", "exp": int(time.time()) + 60, "roles": ["TaskWrite"], **claims}
    return jwt.encode(body, SECRET, "HS256")


def problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    return body


def submit(api: str, headers: dict[str, str], timeout: float = 30) -> httpx.Response:
    return httpx.post(api + "/api/v1/tasks", json=TASK, headers=headers, timeout=timeout)


def task_count(api: str) -> int:
    listing = httpx.get(api + "/api/v1/tasks?limit=500", headers={"X-API-Key": READER}, timeout=30)
    assert listing.status_code == 200, listing.text
    return len(listing.json()["items"])


def test_a_submit_without_a_credential_is_401_and_creates_nothing(api):
    before = task_count(api)
    response = submit(api, {})
    problem(response, 401, "unauthenticated")
    assert "Bearer" in response.headers["www-authenticate"]
    assert task_count(api) == before


def test_a_writer_key_submits_through_the_api_and_the_provider(api):
    # The provider checks the key the API passes on: a 201 means both let it in
    created = submit(api, {"X-API-Key": WRITER})
    assert created.status_code == 201, created.text
    task_id = created.json()["taskId"]
    read = httpx.get(f"{api}/api/v1/tasks/{task_id}", headers={"X-API-Key": WRITER}, timeout=30)
    assert read.status_code == 200 and read.json()["status"] == "PENDING"


def test_a_reader_key_may_list_but_not_submit(api):
    body = problem(submit(api, {"X-API-Key": READER}), 403, "forbidden")
    assert fingerprint(READER) in body["detail"] and READER not in body["detail"]


def test_a_bearer_token_submits_and_an_expired_one_is_401(api):
    assert submit(api, {"Authorization": f"Bearer {token()}"}).status_code == 201
    expired = token(exp=int(time.time()) - 30)
    body = problem(submit(api, {"Authorization": f"Bearer {expired}"}), 401, "unauthenticated")
    assert body["detail"] == "token expired"


def test_a_flooding_key_gets_429_with_retry_after(api):
    headers = {"X-API-Key": FLOOD}
    codes = [
        httpx.get(api + "/api/v1/tasks", headers=headers, timeout=30).status_code
        for _ in range(BURST)
    ]
    assert codes == [200] * BURST
    refused = httpx.get(api + "/api/v1/tasks", headers=headers, timeout=30)
    problem(refused, 429, "rate-limited")
    assert int(refused.headers["retry-after"]) >= 1


def test_an_oversized_body_is_413_before_it_is_read(api):
    huge = b'{"taskType": "SHELL", "payload": "' + b"x" * (1024 * 1024) + b'"}'
    response = httpx.post(
        api + "/api/v1/tasks",
        content=huge,
        headers={"X-API-Key": WRITER, "Content-Type": "application/json"},
        timeout=30,
    )
    problem(response, 413, "payload-too-large")
