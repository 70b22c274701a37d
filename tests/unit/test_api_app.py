"""The REST app without a server or a provider: the gRPC status -> problem table, the commands'
status codes, the last-resort guard, and the OpenAPI document built offline.

The TaskService here is an in-memory fake (a unit test); the same routes run against real
providers in tests/stage4_rpc/test_rest_api.py.
"""

from __future__ import annotations

import asyncio

import grpc
import httpx  # noqa: E402
import pytest
from google.rpc import code_pb2, error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from common.api import catalog  # noqa: E402
from common.api.app import create_app, openapi_document  # noqa: E402
from common.api.idempotency import Idempotency  # noqa: E402
from common.api.problems import Problem  # noqa: E402
from common.api.rpc_problems import problem_from_rpc  # noqa: E402
from common.config import Settings  # noqa: E402
from common.rpc.errors import _status, field_violations  # noqa: E402
from common.testing.task_service import TaskServiceFake

# Nothing listens on port 1: a test that reached a real service would fail, not pass.
OFFLINE = Settings(
    redis_url="redis://127.0.0.1:1/0", zk_hosts="127.0.0.1:1", kafka_bootstrap="127.0.0.1:1"
)


class FakeCall(grpc.RpcError, grpc.Call):
    """A failed call as grpcio raises it: a code, a message, the rich details in trailers."""

    def __init__(self, code: int, message: str, *details) -> None:
        self._status = rpc_status.to_status(_status(code, message, *details))

    def code(self):
        return self._status.code

    def details(self):
        return self._status.details

    def trailing_metadata(self):
        return self._status.trailing_metadata

    def initial_metadata(self):
        return ()

    def is_active(self):
        return False

    def time_remaining(self):
        return None

    def cancel(self):
        return False

    def add_callback(self, callback):
        return False


@pytest.mark.parametrize(
    ("code", "status", "slug"),
    [
        (code_pb2.INVALID_ARGUMENT, 422, "validation"),
        (code_pb2.RESOURCE_EXHAUSTED, 413, "payload-too-large"),
        (code_pb2.NOT_FOUND, 404, "task-not-found"),
        (code_pb2.FAILED_PRECONDITION, 409, "illegal-transition"),
        (code_pb2.ALREADY_EXISTS, 409, "idempotency-conflict"),
        (code_pb2.UNAUTHENTICATED, 401, "unauthenticated"),
        (code_pb2.PERMISSION_DENIED, 403, "forbidden"),
        (code_pb2.UNAVAILABLE, 503, "service-unavailable"),
        (code_pb2.DEADLINE_EXCEEDED, 503, "deadline-exceeded"),
        (code_pb2.INTERNAL, 503, "unexpected-error"),
    ],
)
def test_each_grpc_status_becomes_the_contracts_problem(code, status, slug):
    problem = problem_from_rpc(FakeCall(code, "what happened"))
    assert (problem.status, problem.slug) == (status, slug)
    assert problem.status != 500


def test_every_field_violation_becomes_an_error_with_its_field_and_pointer():
    bad = field_violations(["payload: must not be blank", "executionTimeout: too long"])
    problem = problem_from_rpc(FakeCall(code_pb2.INVALID_ARGUMENT, "bad", bad))
    assert problem.errors == [
        {"field": "payload", "detail": "must not be blank", "pointer": "#/payload"},
        {"field": "executionTimeout", "detail": "too long", "pointer": "#/executionTimeout"},
    ]


def test_unavailable_says_when_to_retry_from_the_providers_retry_info():
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(2500)
    problem = problem_from_rpc(FakeCall(code_pb2.UNAVAILABLE, "Redis down", retry))
    assert problem.headers["Retry-After"] == "3"


def test_a_key_in_the_header_and_another_in_the_body_is_refused_and_one_alone_is_used():
    assert Idempotency("k").key(None) == "k" and Idempotency(None).key("k") == "k"
    assert Idempotency("k").key("k") == "k" and Idempotency(None).key(None) is None
    with pytest.raises(Problem) as refused:
        Idempotency("a").key("b")
    assert refused.value.status == 422 and refused.value.errors[0]["field"] == "requestId"


class FakeTasks(TaskServiceFake):
    """The in-memory TaskService behind the blocking stub."""

    def __init__(self, finishes: bool = False, fails: Exception | None = None) -> None:
        super().__init__(
            lambda: FakeCall(code_pb2.DEADLINE_EXCEEDED, "still running"), finishes, fails
        )

    def submit(self, request, timeout=None, metadata=None):
        return self.submitted(request, metadata)

    def watch(self, task_id, from_transition=0, from_log=0, timeout=None, metadata=None):
        yield self.final(task_id)

    def get_task_info(self, task_id, timeout=None, metadata=None):
        return self.info(task_id)


def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


SHELL = {"taskType": "SHELL", "payload": "true"}


def test_submit_answers_201_then_200_for_the_same_key_and_passes_the_callers_key_on():
    tasks = FakeTasks()
    app = create_app(OFFLINE, tasks=tasks)
    headers = {"Idempotency-Key": "k1", "X-API-Key": "secret"}
    first = call(app, "POST", "/api/v1/tasks", json=SHELL, headers=headers)
    again = call(app, "POST", "/api/v1/tasks", json=SHELL, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["taskId"] == again.json()["taskId"]
    assert first.headers["location"] == "/api/v1/tasks/" + first.json()["taskId"]
    assert tasks.metadata[0] == [("x-api-key", "secret")], "credentials go on as metadata"


def test_a_wait_answers_200_when_the_task_finishes_and_202_when_it_does_not():
    finished = call(
        create_app(OFFLINE, FakeTasks(finishes=True)), "POST", "/api/v1/tasks?wait=5", json=SHELL
    )
    assert finished.status_code == 200 and finished.json()["status"] == "SUCCESS"
    pending = call(create_app(OFFLINE, FakeTasks()), "POST", "/api/v1/tasks?wait=5", json=SHELL)
    assert pending.status_code == 202 and pending.json()["status"] == "PENDING"


def test_an_unexpected_error_is_a_503_problem_never_a_500():
    app = create_app(OFFLINE, tasks=FakeTasks(fails=RuntimeError("a bug")))
    response = call(app, "POST", "/api/v1/tasks", json=SHELL)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/unexpected-error"


def test_every_problem_type_is_described_at_its_type_uri():
    app = create_app(OFFLINE)
    for slug, kind in catalog.CATALOG.items():
        described = call(app, "GET", f"/problems/{slug}").json()
        assert described["status"] == kind.status and described["description"]
    assert call(app, "GET", "/problems/no-such-kind").status_code == 404


def test_the_openapi_document_is_built_offline_with_problems_as_problem_json():
    document = openapi_document()
    assert document["info"]["title"] == "tasklab"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response.get("content", {})) in (
                        ["application/problem+json"],
                        [],
                    ), (method, path, status)


def test_the_dev_stack_chooses_the_apis_address_once_and_prints_it_for_both_sides(tmp_path):
    from common.devstack import DevStack

    stack = DevStack(tmp_path / "devstack")
    env = stack.role_env(4)
    assert env["TASKLAB_API_URL"] == "http://" + env["TASKLAB_API_ADDRESS"]
    assert env["TASKLAB_API_ADDRESS"].startswith("127.0.0.1:")
    assert DevStack(tmp_path / "devstack").role_env(4) == env, "the same address every time"
    assert stack.role_env(3) == {}, "a stage without an api role has no API address"
    assert f"TASKLAB_API_URL={env['TASKLAB_API_URL']}" in DevStack.env_lines([], env)
