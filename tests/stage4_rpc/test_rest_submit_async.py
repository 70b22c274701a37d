"""`POST /api/v1/tasks` on the event loop (grpc.aio) against real providers: the answers it
gave as a blocking route, failover when a provider is killed, a bounded 503 problem when none
is left, and recovery when one comes back, all in one API process that is never restarted.

No agent runs here (the module starts no platform roles): a task stays PENDING unless the test
cancels it, which is how a wait is made to end, or to run out, when the test chooses.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from rpc_support import Stage4

from common.api.commands import CALL_TIMEOUT
from common.api.rpc_problems import problem_from_rpc
from common.rpc.aio_proxy import AsyncTaskServiceProxy
from common.rpc.gen import task_service_pb2 as pb
from common.rpc.proxy import TaskServiceProxy
from common.testing import eventually

pytestmark = pytest.mark.integration

PLATFORM_ROLES = ()  # providers and the API only: nothing runs the tasks
PROBLEM = "application/problem+json"


def shell(payload: str, **fields) -> dict:
    return {"taskType": "SHELL", "payload": payload, **fields}


@pytest.fixture(scope="module")
def front_door(stage4: Stage4) -> Iterator[tuple[Stage4, list[str], httpx.Client]]:
    """Two providers and one API over them; the last test kills the providers."""
    providers = [stage4.start_provider("rpc-async-a"), stage4.start_provider("rpc-async-b")]
    url = stage4.start_api("api-async")
    with httpx.Client(base_url=url, timeout=30.0) as http:
        yield stage4, providers, http


def test_a_submit_answers_201_then_200_for_its_key_and_409_for_the_key_with_another_body(
    front_door,
):
    _, _, http = front_door
    key = f"async-{uuid.uuid4().hex[:8]}"
    first = http.post("/api/v1/tasks", json=shell("true"), headers={"Idempotency-Key": key})
    again = http.post("/api/v1/tasks", json=shell("true"), headers={"Idempotency-Key": key})
    other = http.post("/api/v1/tasks", json=shell("false"), headers={"Idempotency-Key": key})
    assert (first.status_code, again.status_code) == (201, 200), (first.text, again.text)
    assert first.json()["taskId"] == again.json()["taskId"]
    assert first.headers["location"] == f"/api/v1/tasks/{first.json()['taskId']}"
    assert other.status_code == 409 and other.json()["type"] == "/problems/idempotency-conflict"


def test_a_provider_refusal_is_a_422_problem_with_its_field(front_door):
    _, _, http = front_door
    # A blank payload passes the DTO and is refused by the provider's validator: its
    # BadRequest detail must survive grpc.aio's error to name the field.
    response = http.post("/api/v1/tasks", json=shell("   "))
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert [e["field"] for e in response.json()["errors"]] == ["payload"]


def test_a_wait_answers_200_with_the_final_state_when_the_task_ends_during_it(front_door):
    _, _, http = front_door
    answers: list[httpx.Response] = []
    key = f"async-wait-{uuid.uuid4().hex[:8]}"
    # Given a submit waiting up to 30 s for a task nothing will run
    waiter = threading.Thread(
        target=lambda: answers.append(
            http.post(
                "/api/v1/tasks",
                json=shell("sleep 60"),
                params={"wait": 30},
                headers={"Idempotency-Key": key},
            )
        ),
        daemon=True,
    )
    waiter.start()
    # When the task is cancelled while the submit waits (the replay finds its id)
    task_id = eventually(
        lambda: http.post(
            "/api/v1/tasks", json=shell("sleep 60"), headers={"Idempotency-Key": key}
        ).json()["taskId"],
        10,
        message="the waiting submit stored its task",
    )
    assert http.delete(f"/api/v1/tasks/{task_id}").status_code == 200
    waiter.join(20)
    # Then the waiting submit answers at once with the final state, not when its wait runs out
    assert not waiter.is_alive(), "the wait ended with the task"
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["status"] == "CANCELLED"


def test_a_wait_that_runs_out_answers_202_with_the_task_as_it_is_in_bounded_time(front_door):
    _, _, http = front_door
    started = time.monotonic()
    response = http.post("/api/v1/tasks", json=shell("true"), params={"wait": 0.5})
    assert response.status_code == 202 and response.json()["status"] == "PENDING"
    assert time.monotonic() - started < 5, "answered when the wait ran out"


def test_the_async_proxy_gives_one_task_per_request_id_and_the_rich_details_of_a_refusal(stage4):
    async def scenario():
        proxy = TaskServiceProxy(stage4.zk, default_timeout=20.0).start()
        tasks = AsyncTaskServiceProxy(proxy)
        try:
            request = pb.SubmitRequest(task_type=pb.SHELL, payload="true", request_id="rid-1")
            first = await tasks.submit(request)
            again = await tasks.submit(request)
            try:
                await tasks.submit(pb.SubmitRequest(task_type=pb.SHELL, payload="  "))
            except Exception as exc:  # noqa: BLE001 - inspected below
                refused = exc
            else:
                refused = None
            return first, again, refused
        finally:
            await tasks.close()
            proxy.close()

    first, again, refused = asyncio.run(scenario())
    assert first.created and not again.created and first.task.task_id == again.task.task_id
    problem = problem_from_rpc(refused)
    assert problem.status == 422 and [e["field"] for e in problem.errors] == ["payload"]


# Last in the module: it kills the providers the tests above use.
def test_submits_fail_over_a_killed_provider_then_answer_503_in_bounded_time_then_recover(
    front_door,
):
    stage4, providers, http = front_door
    # Given one of the two providers killed -9
    stage4.providers[providers[0]].kill()

    # Then every submit still goes through, on the other one
    answers = [http.post("/api/v1/tasks", json=shell("true")).status_code for _ in range(10)]
    assert answers == [201] * 10

    # When the second one is killed too
    stage4.providers[providers[1]].kill()

    # Then a submit answers a 503 problem that says to retry, by the call's deadline, no hang
    started = time.monotonic()
    response = http.post("/api/v1/tasks", json=shell("true"))
    took = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "/problems/service-unavailable"
    assert "TaskService" in response.json()["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert took < CALL_TIMEOUT + 3, f"answered in {took:.1f}s"

    # When a new provider registers, the same API process submits through it
    stage4.start_provider("rpc-async-c")
    eventually(
        lambda: http.post("/api/v1/tasks", json=shell("true")).status_code == 201,
        20,
        message="a submit goes through the new provider",
    )
