"""The REST chain's links (CORS -> auth -> rate limit -> size) in front of a tiny FastAPI app,
served by uvicorn on loopback ports, with the rate limit's buckets in a real Redis.

Two servers share one Redis, as two API replicas do; a third runs with auth off. The app's
handlers record what reached them, so a test can say the app never saw a refused request.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import jwt
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from common.adapters.redis_client import redis_client
from common.api.links import forwarded_credentials, install_links, require
from common.api.problems import PROBLEM_JSON, Problem
from common.config import load_settings
from common.devstack.redis import RedisService
from common.security import Principal, Role
from common.security.authenticator import fingerprint
from common.testing import eventually

pytestmark = pytest.mark.integration

LINKS_DB = 5  # other suites flush database 0 per test; the servers here live for the module
SECRET = "0f4c9a8e7b6d5c4b3a29181706f5e4d3c2b1a09f8e7d6c5b"
READER, WRITER, ADMIN, FLOOD = "reader-key-01", "writer-key-02", "admin-key-03", "flood-key-04"
KEYS = {READER: ["TaskRead"], WRITER: ["TaskWrite"], ADMIN: ["Admin"], FLOOD: ["TaskRead"]}
BURST = 4
MAX_BODY = 1024
ORIGIN = "https://console.example"


@dataclass
class Served:
    url: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread
    seen: list[int] = field(default_factory=list)  # body sizes the app's POST handler got


def tiny_app(seen: list[int]) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response(instance=request.url.path)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/problems/{slug}")
    def problem_page(slug: str) -> dict:
        return {"slug": slug}

    @app.get("/api/v1/tasks")
    def read(principal: Principal = Depends(require(Role.TASK_READ))) -> dict:
        return {"principal": principal.name}

    @app.post("/api/v1/tasks")
    async def write(
        request: Request, principal: Principal = Depends(require(Role.TASK_WRITE))
    ) -> dict:
        body = await request.body()
        seen.append(len(body))
        return {"principal": principal.name, "bytes": len(body)}

    @app.get("/api/v1/credentials")
    def passed_on(request: Request, _: Principal = Depends(require(Role.TASK_READ))) -> list:
        return forwarded_credentials(request.scope)

    @app.delete("/api/v1/system")
    def admin(principal: Principal = Depends(require(Role.ADMIN))) -> dict:
        return {"principal": principal.name}

    return app


def serve(settings, redis) -> Served:
    seen: list[int] = []
    app = tiny_app(seen)
    install_links(app, settings, redis)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    eventually(lambda: server.started, 10, message=f"uvicorn on {port}")
    return Served(f"http://127.0.0.1:{port}", port, server, thread, seen)


@pytest.fixture(scope="module")
def servers(redis_service) -> Iterator[dict[str, Served]]:
    url = redis_service.env["TASKLAB_REDIS_URL"].rsplit("/", 1)[0] + f"/{LINKS_DB}"
    redis = redis_client(url)
    redis.flushdb()
    api = {
        "rate_limiting": {"requests_per_second": 0.01, "burst": BURST},
        "security": {
            "cors_origins": [ORIGIN],
            "max_body_bytes": MAX_BODY,
            "max_url_bytes": 1024,
            "max_header_bytes": 2048,
        },
    }
    on = load_settings(api_keys=KEYS, jwt_secret=SECRET, api=api)
    off = load_settings(api=api)
    assert on.auth_enabled and not off.auth_enabled
    served = {"a": serve(on, redis), "b": serve(on, redis), "off": serve(off, redis)}
    yield served
    for s in served.values():
        s.server.should_exit = True
    for s in served.values():
        s.thread.join(10)


@pytest.fixture(autouse=True)
def fresh(servers, redis_service) -> Iterator[None]:
    # Every test starts with full buckets and an empty record of what the apps saw.
    redis = redis_client(redis_service.env["TASKLAB_REDIS_URL"].rsplit("/", 1)[0] + f"/{LINKS_DB}")
    redis.flushdb()
    for s in servers.values():
        s.seen.clear()
    yield


def get(served: Served, path: str = "/api/v1/tasks", **headers: str) -> httpx.Response:
    return httpx.get(served.url + path, headers=headers, timeout=10)


def token(**claims) -> str:
    body = {"sub": "alice", "exp": int(time.time()) + 60, "roles": ["TaskWrite"], **claims}
    return jwt.encode(body, SECRET, "HS256")


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status
    return body


def raw(port: int, head: bytes, body_parts: tuple[bytes, ...] = ()) -> tuple[int, dict, bytes]:
    """Send bytes as they are (a body cut short, a chunk never finished) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data:  # bounded by the socket timeout
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest


# -- auth ---------------------------------------------------------------------------------


def test_a_call_without_a_credential_is_401_with_a_challenge(servers):
    response = get(servers["a"])
    body = assert_problem(response, 401, "unauthenticated")
    assert body["instance"] == "/api/v1/tasks" and "X-API-Key" in body["detail"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="tasklab"') and "ApiKey" in challenge


def test_an_unknown_key_and_an_expired_token_are_401_saying_why(servers):
    unknown = assert_problem(get(servers["a"], **{"X-API-Key": "nope"}), 401, "unauthenticated")
    assert unknown["detail"] == "unknown API key"
    expired = token(exp=int(time.time()) - 10)
    response = get(servers["a"], Authorization=f"Bearer {expired}")
    assert assert_problem(response, 401, "unauthenticated")["detail"] == "token expired"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_probes_docs_and_problem_pages_need_no_key(servers):
    for path in ("/health", "/openapi.json", "/docs", "/problems/rate-limited"):
        assert get(servers["a"], path).status_code == 200, path


def test_a_reader_may_read_but_not_write(servers):
    response = get(servers["a"], **{"X-API-Key": READER})
    assert response.status_code == 200
    assert response.json() == {"principal": "key:" + fingerprint(READER)}
    write = httpx.post(servers["a"].url + "/api/v1/tasks", headers={"X-API-Key": READER})
    body = assert_problem(write, 403, "forbidden")
    assert "needs the TaskWrite role" in body["detail"] and READER not in body["detail"]
    assert servers["a"].seen == [], "the refused write never reached its handler"


def test_task_write_implies_read_and_admin_implies_everything(servers):
    assert get(servers["a"], **{"X-API-Key": WRITER}).status_code == 200
    admin_only = httpx.delete(servers["a"].url + "/api/v1/system", headers={"X-API-Key": WRITER})
    assert_problem(admin_only, 403, "forbidden")
    for method in ("GET", "POST"):
        answer = httpx.request(
            method, servers["a"].url + "/api/v1/tasks", headers={"X-API-Key": ADMIN}
        )
        assert answer.status_code == 200, method
    admin = httpx.delete(servers["a"].url + "/api/v1/system", headers={"X-API-Key": ADMIN})
    assert admin.status_code == 200


def test_a_bearer_token_with_task_write_may_submit(servers):
    response = httpx.post(
        servers["a"].url + "/api/v1/tasks",
        headers={"Authorization": f"Bearer {token()}"},
        content=b"{}",
    )
    assert response.status_code == 200 and response.json()["principal"] == "jwt:alice"


def test_with_auth_off_anyone_is_the_anonymous_admin_and_nothing_is_limited(servers):
    answers = [get(servers["off"]).status_code for _ in range(BURST + 3)]
    assert answers == [200] * (BURST + 3)
    assert get(servers["off"]).json() == {"principal": "anonymous"}


def test_the_credential_that_authenticated_is_what_goes_on_to_the_providers(servers):
    answer = httpx.get(
        servers["a"].url + "/api/v1/credentials",
        headers={"X-API-Key": READER, "Authorization": f"Bearer {token()}"},
    )
    assert answer.json() == [["x-api-key", READER]]
    # With auth off, a header gRPC metadata cannot carry is dropped, not passed on to fail
    stray = httpx.get(
        servers["off"].url + "/api/v1/credentials",
        headers={"Authorization": "Bearer caf\xe9".encode("latin-1")},
    )
    assert stray.status_code == 200 and stray.json() == []


def test_the_openapi_document_declares_both_schemes_on_protected_routes(servers):
    document = get(servers["a"], "/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["ApiKeyAuth"]["description"],
    }
    assert schemes["BearerAuth"]["scheme"] == "bearer"
    assert schemes["BearerAuth"]["bearerFormat"] == "JWT"
    security = document["paths"]["/api/v1/tasks"]["get"]["security"]
    assert {"ApiKeyAuth": []} in security and {"BearerAuth": []} in security
    assert "security" not in document["paths"]["/health"]["get"]


# -- rate limit ----------------------------------------------------------------------------


def test_a_key_flooding_two_replicas_gets_429_with_retry_after_from_either(servers):
    # Given one key's burst of 4, spent across two replicas sharing Redis
    codes = [get(servers["ab"[i % 2]], **{"X-API-Key": FLOOD}).status_code for i in range(BURST)]
    assert codes == [200] * BURST
    # Then the next call is refused by either replica, with a whole number of seconds to wait
    for name in ("a", "b"):
        response = get(servers[name], **{"X-API-Key": FLOOD})
        body = assert_problem(response, 429, "rate-limited")
        assert int(response.headers["retry-after"]) >= 1
        assert f"bursts of {BURST}" in body["detail"]
    # And another key is not held back by it
    assert get(servers["b"], **{"X-API-Key": READER}).status_code == 200


def test_an_unknown_caller_costs_no_token(servers, redis_service):
    for _ in range(BURST + 2):
        assert get(servers["a"], **{"X-API-Key": "nope"}).status_code == 401
    redis = redis_client(redis_service.env["TASKLAB_REDIS_URL"].rsplit("/", 1)[0] + f"/{LINKS_DB}")
    assert redis.keys("ratelimit:*") == [], "auth refuses before the rate limit counts"


@pytest.fixture
def over_own_redis(tmp_path) -> Iterator[tuple[Served, int]]:
    """A server whose buckets are in a Redis of its own (burst 1), which a test may pause."""
    service = RedisService()
    running = service.start(tmp_path)
    limits = {"requests_per_second": 0.01, "burst": 1, "redis_timeout": 0.5}
    settings = load_settings(api_keys=KEYS, api={"rate_limiting": limits})
    served = serve(settings, redis_client(running.env["TASKLAB_REDIS_URL"]))
    try:
        yield served, running.pid
    finally:
        served.server.should_exit = True
        served.thread.join(10)
        os.kill(running.pid, signal.SIGCONT)
        service.stop(running)


def test_with_redis_hung_the_rate_limit_lets_calls_through_within_its_timeout(over_own_redis):
    served, redis_pid = over_own_redis
    # Given a key that has spent its burst of 1
    assert get(served, **{"X-API-Key": READER}).status_code == 200
    assert get(served, **{"X-API-Key": READER}).status_code == 429
    # When Redis hangs (SIGSTOP): no answer, no refusal
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answers = [get(served, **{"X-API-Key": READER}).status_code for _ in range(3)]
        took = time.monotonic() - started
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    # Then the calls go through (fail open), each held at most about the 0.5 s timeout
    assert answers == [200, 200, 200] and took < 3 * 0.5 + 1.5, took
    # And once Redis answers again, the key is limited again without a restart
    eventually(
        lambda: get(served, **{"X-API-Key": READER}).status_code == 429, 15, message="limited"
    )


# -- sizes ---------------------------------------------------------------------------------


def post_head(port: int, extra: str) -> bytes:
    return (
        f"POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {WRITER}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def test_a_content_length_over_the_limit_is_413_before_any_byte_is_read(servers):
    port = servers["a"].port
    # The body is announced and never sent: the answer cannot have waited for it
    status, headers, body = raw(port, post_head(port, "Content-Length: 10000000\r\n"))
    assert status == 413 and headers["content-type"] == PROBLEM_JSON
    assert b"/problems/payload-too-large" in body and b"Content-Length is 10000000" in body
    assert servers["a"].seen == []


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(servers):
    port = servers["a"].port
    chunk = b"x" * (MAX_BODY // 2 + 10)
    one = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    # Two chunks pass the limit; the terminating chunk is never sent
    status, headers, body = raw(port, post_head(port, "Transfer-Encoding: chunked\r\n"), (one, one))
    assert status == 413 and b"/problems/payload-too-large" in body
    assert servers["a"].seen == [], "the app never saw a partial body"


def test_a_chunked_body_within_the_limit_reaches_the_app_whole(servers):
    port = servers["a"].port
    chunk = b"y" * 300
    one = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    status, _, body = raw(
        port, post_head(port, "Transfer-Encoding: chunked\r\n"), (one, one, b"0\r\n\r\n")
    )
    assert status == 200 and servers["a"].seen == [600]


def test_an_unauthenticated_oversized_body_is_401_first(servers):
    port = servers["a"].port
    head = b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
    assert raw(port, head)[0] == 401, "auth comes before size in the chain"


def test_a_long_url_is_414_and_large_headers_are_431(servers):
    response = get(servers["a"], "/api/v1/tasks?name=" + "n" * 2000, **{"X-API-Key": READER})
    assert_problem(response, 414, "uri-too-long")
    response = get(servers["a"], **{"X-API-Key": READER, "X-Padding": "p" * 3000})
    assert_problem(response, 431, "headers-too-large")


# -- CORS ----------------------------------------------------------------------------------


def test_a_cors_preflight_needs_no_key(servers):
    response = httpx.options(
        servers["a"].url + "/api/v1/tasks",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key, content-type, idempotency-key",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in response.headers["access-control-allow-headers"].lower()


def test_a_preflight_from_an_unknown_origin_is_refused_by_cors_not_by_auth(servers):
    response = httpx.options(
        servers["a"].url + "/api/v1/tasks",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_a_refusal_carries_the_cors_headers_so_the_page_can_read_it(servers):
    response = get(servers["a"], Origin=ORIGIN)
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "www-authenticate" in response.headers["access-control-expose-headers"].lower()
