"""The submit route on the event loop: it awaits its TaskService instead of taking a worker
thread, and answers exactly as the blocking route did (status codes, problems, the wait).

The TaskService here is an in-memory fake with async calls (a unit test); the route runs
against real providers, through the grpc.aio proxy, in tests/stage4_rpc/test_rest_submit_async.py.
"""

from __future__ import annotations

import asyncio

import anyio
import grpc
import grpc.aio
import httpx
import pytest
from google.rpc import code_pb2
from grpc_status import rpc_status

from common.api.app import create_app
from common.api.backends import Backends, ThreadedTaskService
from common.api.rpc_problems import problem_from_rpc
from common.config import Settings
from common.rpc.aio_proxy import CallFailed
from common.rpc.errors import _status, field_violations
from common.rpc.gen import task_service_pb2 as pb
from common.testing.task_service import TaskServiceFake

# Nothing listens on port 1: a test that reached a real service would fail, not pass.
OFFLINE = Settings(
    redis_url="redis://127.0.0.1:1/0", zk_hosts="127.0.0.1:1", kafka_bootstrap="127.0.0.1:1"
)
SHELL = {"taskType": "SHELL", "payload": "true"}


def aio_error(code: int, message: str, *details) -> grpc.aio.AioRpcError:
    """A failed grpc.aio call as grpcio raises it: the rich details in its trailers."""
    status = rpc_status.to_status(_status(code, message, *details))
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), message
    )


class AsyncFakeTasks(TaskServiceFake):
    """The in-memory TaskService behind the asyncio proxy."""

    def __init__(self, finishes: bool = False, fails: Exception | None = None) -> None:
        super().__init__(
            lambda: CallFailed(aio_error(code_pb2.DEADLINE_EXCEEDED, "still running")),
            finishes,
            fails,
        )

    async def submit(self, request, timeout=None, metadata=None):
        return self.submitted(request, metadata)

    async def watch(self, task_id, from_transition=0, from_log=0, timeout=None, metadata=None):
        yield self.final(task_id)

    async def get_task_info(self, task_id, timeout=None, metadata=None):
        return self.info(task_id)


def app_with(tasks) -> object:
    """The app, its submit route awaiting `tasks` (what Backends.async_tasks would build)."""
    app = create_app(OFFLINE)
    app.state.backends._async_tasks = tasks
    return app


async def post(app, path: str, **kwargs) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.post(path, **kwargs)


def test_a_submit_is_answered_while_every_worker_thread_is_taken():
    # Given an app whose thread pool has one token, held by something else for the whole test
    app = app_with(AsyncFakeTasks())

    async def scenario() -> httpx.Response:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = 1
        async with limiter:
            # When a client submits: a route, dependency or call needing a thread would wait
            # for the token forever; the bound turns that wait into a failure.
            with anyio.fail_after(5):
                return await post(app, "/api/v1/tasks", json=SHELL)

    # Then the task is created: the route, its role check and its key never left the loop
    assert asyncio.run(scenario()).status_code == 201


def test_the_async_submit_answers_201_then_200_for_one_key_and_passes_the_credentials_on():
    tasks = AsyncFakeTasks()
    app = app_with(tasks)
    headers = {"Idempotency-Key": "k1", "X-API-Key": "secret"}
    first = asyncio.run(post(app, "/api/v1/tasks", json=SHELL, headers=headers))
    again = asyncio.run(post(app, "/api/v1/tasks", json=SHELL, headers=headers))
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["taskId"] == again.json()["taskId"]
    assert first.headers["location"] == "/api/v1/tasks/" + first.json()["taskId"]
    assert tasks.metadata[0] == [("x-api-key", "secret")], "credentials go on as metadata"


def test_a_key_in_the_header_and_another_in_the_body_is_a_422_before_any_call():
    tasks = AsyncFakeTasks()
    body = {**SHELL, "requestId": "b"}
    response = asyncio.run(
        post(app_with(tasks), "/api/v1/tasks", json=body, headers={"Idempotency-Key": "a"})
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "requestId"
    assert tasks.metadata == [], "nothing was sent to the TaskService"


def test_the_async_wait_answers_200_when_the_task_finishes_and_202_when_it_does_not():
    done = asyncio.run(post(app_with(AsyncFakeTasks(True)), "/api/v1/tasks?wait=5", json=SHELL))
    assert done.status_code == 200 and done.json()["status"] == "SUCCESS"
    pending = asyncio.run(post(app_with(AsyncFakeTasks()), "/api/v1/tasks?wait=5", json=SHELL))
    assert pending.status_code == 202 and pending.json()["status"] == "PENDING"


@pytest.mark.parametrize(
    ("code", "status", "slug"),
    [
        (code_pb2.INVALID_ARGUMENT, 422, "validation"),
        (code_pb2.RESOURCE_EXHAUSTED, 413, "payload-too-large"),
        (code_pb2.ALREADY_EXISTS, 409, "idempotency-conflict"),
        (code_pb2.UNAUTHENTICATED, 401, "unauthenticated"),
        (code_pb2.PERMISSION_DENIED, 403, "forbidden"),
        (code_pb2.UNAVAILABLE, 503, "service-unavailable"),
        (code_pb2.DEADLINE_EXCEEDED, 503, "deadline-exceeded"),
        (code_pb2.INTERNAL, 503, "unexpected-error"),
    ],
)
def test_each_grpc_aio_failure_of_a_submit_is_the_same_problem_as_a_blocking_ones(
    code, status, slug
):
    failure = CallFailed(aio_error(code, "what happened"))
    response = asyncio.run(
        post(app_with(AsyncFakeTasks(fails=failure)), "/api/v1/tasks", json=SHELL)
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"/problems/{slug}"


def test_a_grpc_aio_failure_keeps_its_field_violations_for_the_problem():
    error = aio_error(
        code_pb2.INVALID_ARGUMENT,
        "bad task",
        field_violations(["executionTimeout: must be at most 86400"]),
    )
    problem = problem_from_rpc(CallFailed(error))
    assert problem.status == 422
    assert problem.errors[0]["field"] == "executionTimeout"
    assert problem.errors[0]["detail"] == "must be at most 86400"


def test_a_blocking_stub_given_to_the_app_is_awaited_on_worker_threads():
    class Blocking:
        def submit(self, request, timeout=None, metadata=None):
            return pb.SubmitResponse(task=pb.Task(task_id="t-1", status=pb.PENDING), created=True)

    backends = Backends(OFFLINE, tasks=Blocking())
    wrapped = asyncio.run(backends.async_tasks())
    assert isinstance(wrapped, ThreadedTaskService)
    answer = asyncio.run(wrapped.submit(pb.SubmitRequest()))
    assert answer.task.task_id == "t-1" and answer.created


def test_an_answer_is_the_same_json_bytes_jsonresponse_rendered_from_the_dumped_model():
    from fastapi.responses import JSONResponse

    from common.api import views
    from common.api.commands import Outcome
    from common.api.routes_tasks import answer

    task = pb.Task(task_id="t", task_name="héllo ✓", task_type=pb.SHELL, payload='echo "a"\n')
    task.status, task.result, task.exit_code = pb.SUCCESS, "out\u2028", 0
    task.created_at.FromSeconds(1_800_000_000)
    view = views.task_view(task)
    ours = answer(Outcome(201, view, {"Location": "/api/v1/tasks/t"}))
    theirs = JSONResponse(view.model_dump(by_alias=True, mode="json"), status_code=201)
    assert ours.body == theirs.body
    assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    assert ours.status_code == 201 and ours.headers["location"] == "/api/v1/tasks/t"
