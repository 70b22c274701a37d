"""Exercise 4.1, one more link in the chain: a request id on every answer.

When a caller reports "my request failed", the first question is which request. Write a link,
`RequestIdLink` in common/api/links.py, a pure-ASGI class like the others
(`RequestIdLink(app)`), and add it in `install_links`:

- every HTTP answer carries an `X-Request-ID` header;
- the caller's own, if it sent one that is fit to echo (printable ASCII, at most 128
  characters), so it can match our answer and our logs to its own;
- otherwise a fresh UUID4 (an id that is too long or carries control characters is replaced,
  never echoed: a header is no place for a caller's arbitrary bytes);
- including the answers the other links give on their own (401, 413, 429): a refused
  request is the one a caller most wants to ask about. So where in the chain does it go?

Also put the id in `scope["state"]["request_id"]` if you like, so a route can log it. No
services (`make exercise-stage4`).
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from common.api import links
from common.api.problems import Problem
from common.config import load_settings
from common.security import Principal, Role
from exercises.support import attribute

KEY = "reader-key-01"
MAX_BODY = 64


def app_with_links(auth: bool) -> FastAPI:
    attribute(
        "4.1",
        links,
        "RequestIdLink",
        "write class RequestIdLink in common/api/links.py and add it in install_links",
    )
    app = FastAPI()

    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response(instance=request.url.path)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/api/v1/tasks")
    async def write(request: Request, _: Principal = Depends(links.require(Role.TASK_READ))):
        return {"bytes": len(await request.body())}

    # Rate limiting off: its buckets live in Redis, and this test needs no services.
    api = {"rate_limiting": {"enabled": False}, "security": {"max_body_bytes": MAX_BODY}}
    settings = load_settings(api_keys={KEY: ["TaskRead"]}, api=api) if auth else None
    links.install_links(app, settings or load_settings(api=api), None)
    return app


def call(app: FastAPI, method: str, path: str, **kwargs) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def fresh_id(response: httpx.Response) -> uuid.UUID:
    assert "x-request-id" in response.headers, f"no X-Request-ID on a {response.status_code}"
    value = response.headers["x-request-id"]
    parsed = uuid.UUID(value)  # ValueError: not a UUID at all
    assert parsed.version == 4 and str(parsed) == value.lower(), value
    return parsed


def test_an_answer_carries_a_fresh_uuid4_request_id_and_each_request_its_own():
    app = app_with_links(auth=False)
    first, second = call(app, "GET", "/health"), call(app, "GET", "/health")
    assert first.status_code == second.status_code == 200
    assert fresh_id(first) != fresh_id(second)


def test_the_callers_own_request_id_is_echoed_when_it_is_fit_to_echo():
    app = app_with_links(auth=False)
    mine = "checkout-7f3a:retry#2 (from the console)"
    response = call(app, "GET", "/health", headers={"X-Request-ID": mine})
    assert response.headers.get("x-request-id") == mine
    longest = "r" * 128
    assert (
        call(app, "GET", "/health", headers={"X-Request-ID": longest}).headers.get("x-request-id")
        == longest
    )


def test_an_id_too_long_or_with_control_characters_is_replaced_not_echoed():
    app = app_with_links(auth=False)
    for unfit in ["r" * 129, "abc\tdef", ""]:
        response = call(app, "GET", "/health", headers={"X-Request-ID": unfit})
        assert response.status_code == 200
        fresh_id(response)


def test_the_answers_of_the_other_links_carry_it_too():
    app = app_with_links(auth=True)
    # 401 from AuthLink: no credential.
    refused = call(app, "POST", "/api/v1/tasks", content=b"{}", headers={"X-Request-ID": "a-1"})
    assert refused.status_code == 401
    assert refused.headers.get("x-request-id") == "a-1"
    # 413 from BodyLimitLink: the body is over the limit, and the id is a fresh one.
    too_large = call(
        app, "POST", "/api/v1/tasks", content=b"x" * (MAX_BODY + 1), headers={"X-API-Key": KEY}
    )
    assert too_large.status_code == 413
    fresh_id(too_large)
    # And the request that passed every link.
    passed = call(app, "POST", "/api/v1/tasks", content=b"{}", headers={"X-API-Key": KEY})
    assert passed.status_code == 200, passed.text
    fresh_id(passed)
