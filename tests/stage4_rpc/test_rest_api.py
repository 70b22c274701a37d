"""The REST API on a running stage 4 platform: a real `tasklab run api` process, serving on a
free loopback port, over two real providers, the stage 3 platform running the tasks.

Every endpoint of the contract, and each status code it answers on purpose.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import pytest

from common.testing import eventually

PROBLEM = "application/problem+json"
FINAL = {"SUCCESS", "FAILED", "CANCELLED"}


def shell(payload: str, **fields) -> dict:
    return {"taskType": "SHELL", "payload": payload, **fields}


def submit(http: httpx.Client, body: dict, **kwargs) -> httpx.Response:
    return http.post("/api/v1/tasks", json=body, **kwargs)


def final(http: httpx.Client, task_id: str, timeout: float = 30.0) -> dict:
    def done():
        view = http.get(f"/api/v1/tasks/{task_id}").json()
        return view if view["status"] in FINAL else None

    return eventually(done, timeout, interval=0.1, message=f"task {task_id} final")


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status, body
    assert body["title"] and body["instance"] == response.request.url.path
    return body


def marker() -> str:
    return f"rest-{uuid.uuid4().hex[:8]}"


# -- submit, read ----------------------------------------------------------------------------
def test_a_submitted_task_answers_201_with_its_location_and_runs_to_success(http):
    response = submit(http, shell("echo one; echo two", taskName="two lines"))
    assert response.status_code == 201, response.text
    view = response.json()
    assert view["status"] == "PENDING" and view["taskName"] == "two lines"
    assert response.headers["location"] == f"/api/v1/tasks/{view['taskId']}"
    assert view["agentId"] is None and view["result"] is None and view["retryOf"] is None
    assert view["createdAt"].endswith("Z") and len(view["createdAt"]) == 24

    done = final(http, view["taskId"])
    assert done["status"] == "SUCCESS" and done["exitCode"] == 0
    detail = http.get(response.headers["location"]).json()
    assert detail["result"] == "one\ntwo\n" and detail["logs"] == ["one", "two"]
    states = [(e["fromState"], e["state"]) for e in detail["timeline"]]
    assert states == [
        (None, "PENDING"),
        ("PENDING", "SCHEDULED"),
        ("SCHEDULED", "DISPATCHED"),
        ("DISPATCHED", "RUNNING"),
        ("RUNNING", "SUCCESS"),
    ]
    assert detail["agentId"] and detail["timeline"][-1]["actor"] == detail["agentId"]


def test_the_logs_endpoint_returns_the_lines(http):
    task_id = submit(http, shell("echo a; echo b")).json()["taskId"]
    final(http, task_id)
    response = http.get(f"/api/v1/tasks/{task_id}/logs")
    assert response.status_code == 200
    assert response.json() == {"taskId": task_id, "lines": ["a", "b"]}


# -- idempotency -----------------------------------------------------------------------------
def test_the_same_idempotency_key_and_body_return_the_original_task_with_200(http):
    key = marker()
    first = submit(http, shell("true"), headers={"Idempotency-Key": key})
    again = submit(http, shell("true"), headers={"Idempotency-Key": key})
    in_body = submit(http, shell("true", requestId=key))
    assert first.status_code == 201 and again.status_code == 200 and in_body.status_code == 200
    assert again.json()["taskId"] == first.json()["taskId"] == in_body.json()["taskId"]
    assert first.json()["requestId"] == key


def test_fifty_simultaneous_submits_with_one_key_make_one_task(rest):
    key = marker()
    barrier = threading.Barrier(50)
    answers: list[httpx.Response] = []
    failures: list[BaseException] = []

    def one() -> None:
        try:
            with httpx.Client(base_url=rest, timeout=30.0) as client:
                barrier.wait(10)
                answers.append(
                    submit(client, shell("true", taskName=key), headers={"Idempotency-Key": key})
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert len(answers) == 50
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 49 + [201], statuses
    assert len({a.json()["taskId"] for a in answers}) == 1
    with httpx.Client(base_url=rest, timeout=30.0) as client:
        listed = client.get("/api/v1/tasks", params={"name": key, "limit": 500}).json()
    assert len(listed["items"]) == 1, "one task stored"


def test_an_idempotency_key_in_the_header_and_a_different_one_in_the_body_is_422(http):
    response = submit(http, shell("true", requestId="a"), headers={"Idempotency-Key": "b"})
    body = assert_problem(response, 422, "validation")
    assert [e["field"] for e in body["errors"]] == ["requestId"]


# The providers answer ALREADY_EXISTS for a reused key with another body (submit.lua compares
# the request's fingerprint); the API maps it to 409 idempotency-conflict.
def test_the_same_key_with_a_different_body_is_409_idempotency_conflict(http):
    key = marker()
    assert submit(http, shell("echo first"), headers={"Idempotency-Key": key}).status_code == 201
    response = submit(http, shell("echo second"), headers={"Idempotency-Key": key})
    assert_problem(response, 409, "idempotency-conflict")


# -- bad input -------------------------------------------------------------------------------
def test_bad_input_is_422_with_every_problem_and_its_field(http):
    body = {"taskType": "COBOL", "payload": "", "executionTimeout": 0, "retryCount": 11, "x": 1}
    problem = assert_problem(submit(http, body), 422, "validation")
    fields = {e["field"]: e for e in problem["errors"]}
    assert set(fields) == {"taskType", "payload", "executionTimeout", "retryCount", "x"}
    assert fields["payload"]["pointer"] == "#/payload"
    assert all(e["detail"] for e in problem["errors"])


def test_a_rule_only_the_domain_knows_comes_back_from_the_provider_as_422_with_its_field(http):
    # The DTO lets a blank payload through (it has a character); the provider's validator
    # refuses it: INVALID_ARGUMENT with a BadRequest field violation, mapped to the same shape.
    problem = assert_problem(submit(http, shell("   ")), 422, "validation")
    assert [e["field"] for e in problem["errors"]] == ["payload"]
    assert "blank" in problem["errors"][0]["detail"]


def test_a_payload_over_the_size_limit_is_413(http):
    # Over max_payload_bytes (64 KiB in tests): the provider answers RESOURCE_EXHAUSTED.
    response = submit(http, shell("x" * (64 * 1024 + 1)))
    assert_problem(response, 413, "payload-too-large")


def test_a_body_that_is_not_json_is_400(http):
    response = http.post(
        "/api/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 400, "validation")
    assert problem["errors"][0]["field"] == "body"


def test_bad_query_parameters_are_422_naming_each(http):
    response = http.get("/api/v1/tasks", params={"limit": 0, "status": "DONE"})
    problem = assert_problem(response, 422, "validation")
    assert {(e["field"], e["in"]) for e in problem["errors"]} == {
        ("limit", "query"),
        ("status", "query"),
    }
    assert_problem(http.get("/api/v1/tasks", params={"cursor": "not-a-cursor"}), 422, "validation")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/tasks/{id}"),
        ("DELETE", "/api/v1/tasks/{id}"),
        ("POST", "/api/v1/tasks/{id}/retry"),
        ("GET", "/api/v1/tasks/{id}/logs"),
    ],
)
def test_an_unknown_task_is_404(http, method, path):
    response = http.request(method, path.format(id=uuid.uuid4()))
    assert_problem(response, 404, "task-not-found")


def test_an_unknown_path_is_a_404_problem_and_each_problem_type_is_described(http):
    body = assert_problem(http.get("/api/v1/nothing-here"), 404, "not-found")
    described = http.get(body["type"])
    assert described.status_code == 200
    assert described.json()["status"] == 404 and described.json()["description"]


# -- cancel and retry ------------------------------------------------------------------------
def test_cancel_of_a_running_task_then_retry_records_what_it_retries(http):
    task_id = submit(http, shell("sleep 30")).json()["taskId"]
    eventually(
        lambda: http.get(f"/api/v1/tasks/{task_id}").json()["status"] == "RUNNING",
        20,
        message="running",
    )
    cancelled = http.delete(f"/api/v1/tasks/{task_id}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {
        "message": "Cancel request accepted.",
        "taskId": task_id,
        "status": "CANCELLED",
        "cancelledFrom": "RUNNING",
        "alreadyCancelled": False,
    }
    again = http.delete(f"/api/v1/tasks/{task_id}")
    assert again.status_code == 200 and again.json()["alreadyCancelled"] is True

    key = marker()
    retried = http.post(f"/api/v1/tasks/{task_id}/retry", headers={"Idempotency-Key": key})
    assert retried.status_code == 201, retried.text
    new = retried.json()
    assert new["status"] == "PENDING" and new["retryOf"] == task_id
    assert retried.headers["location"] == f"/api/v1/tasks/{new['newTaskId']}"
    replay = http.post(f"/api/v1/tasks/{task_id}/retry", headers={"Idempotency-Key": key})
    assert replay.status_code == 200 and replay.json()["newTaskId"] == new["newTaskId"]
    assert http.get(f"/api/v1/tasks/{new['newTaskId']}").json()["retryOf"] == task_id
    http.delete(f"/api/v1/tasks/{new['newTaskId']}")  # spare the agents a 30 s sleep


def test_cancel_or_retry_in_a_state_that_forbids_it_is_409(http):
    task_id = submit(http, shell("true")).json()["taskId"]
    assert final(http, task_id)["status"] == "SUCCESS"
    assert_problem(http.delete(f"/api/v1/tasks/{task_id}"), 409, "illegal-transition")
    assert_problem(http.post(f"/api/v1/tasks/{task_id}/retry"), 409, "illegal-transition")


# -- synchronous submit ----------------------------------------------------------------------
def test_a_submit_with_wait_answers_200_with_the_final_state(http):
    response = submit(http, shell("echo waited"), params={"wait": 30})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "SUCCESS" and response.json()["result"] == "waited\n"


def test_a_submit_whose_wait_runs_out_answers_202_with_the_task_as_it_is(http):
    started = time.monotonic()
    response = submit(http, shell("sleep 20"), params={"wait": 0.5})
    assert response.status_code == 202, response.text
    assert response.json()["status"] not in FINAL
    assert time.monotonic() - started < 5, "answered when the wait ran out"
    http.delete(f"/api/v1/tasks/{response.json()['taskId']}")


@pytest.mark.parametrize("wait", ["0", "301", "soon"])
def test_a_wait_out_of_range_is_422(http, wait):
    assert_problem(submit(http, shell("true"), params={"wait": wait}), 422, "validation")


# -- follow (Server-Sent Events) -------------------------------------------------------------
def read_events(response: httpx.Response, limit: int = 200) -> list[tuple[str, str | None, str]]:
    """(event, id, data) until `end` or `error`; bounded by `limit` events."""
    events: list[tuple[str, str | None, str]] = []
    kind, event_id, data = "", None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and kind:
            events.append((kind, event_id, "\n".join(data)))
            if kind in ("end", "error") or len(events) >= limit:
                break
            kind, event_id, data = "", None, []
    return events


def test_follow_streams_transitions_and_lines_as_events_and_ends_with_the_task(http):
    payload = "sleep 0.5; for i in 1 2 3; do echo line-$i; sleep 0.1; done"
    task_id = submit(http, shell(payload)).json()["taskId"]
    url = f"/api/v1/tasks/{task_id}/logs"
    with http.stream("GET", url, params={"follow": "true"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
    logs = [(i, d) for k, i, d in events if k == "log"]
    assert logs == [("0", "line-1"), ("1", "line-2"), ("2", "line-3")]
    states = [json.loads(d)["state"] for k, _, d in events if k == "transition"]
    assert states == ["PENDING", "SCHEDULED", "DISPATCHED", "RUNNING", "SUCCESS"]
    assert events[-1][0] == "end" and json.loads(events[-1][2])["status"] == "SUCCESS"

    # Resumed after the first line (what EventSource sends by itself), transitions skipped.
    headers = {"Last-Event-ID": "0", "Accept": "text/event-stream"}
    with http.stream("GET", url, params={"fromTransition": 5}, headers=headers) as response:
        resumed = read_events(response)
    assert [(k, i, d) for k, i, d in resumed if k != "end"] == [
        ("log", "1", "line-2"),
        ("log", "2", "line-3"),
    ]


# -- listing ---------------------------------------------------------------------------------
def test_listing_filters_and_pages_with_a_cursor_newest_first(http):
    name = marker()
    ids = []
    for i in range(5):
        body = shell(f"echo {i}", taskName=f"{name}-{i}")
        if i % 2:
            body = {
                "taskType": "PYTHON_SCRIPT",
                "payload": f"print({i})",
                "taskName": f"{name}-{i}",
            }
        ids.append(submit(http, body).json()["taskId"])
    views = {task_id: final(http, task_id) for task_id in ids}

    seen: list[str] = []
    cursor = None
    for _ in range(20):  # bounded: 5 tasks, 2 a page, short pages allowed
        params = {"name": name, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = http.get("/api/v1/tasks", params=params).json()
        assert len(page["items"]) <= 2
        seen.extend(t["taskId"] for t in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)), "each once, newest first"

    def listed(**params) -> list[str]:
        page = http.get("/api/v1/tasks", params={"name": name, "limit": 500, **params})
        assert page.status_code == 200, page.text
        return [t["taskId"] for t in page.json()["items"]]

    assert listed(type="PYTHON_SCRIPT") == [ids[3], ids[1]]
    assert listed(status="SUCCESS") == list(reversed(ids))
    assert listed(status="FAILED") == []
    agent = views[ids[0]]["agentId"]
    assert listed(agent=agent) == [t for t in reversed(ids) if views[t]["agentId"] == agent]
    middle = views[ids[2]]["createdAt"]
    assert listed(createdAfter=middle) == [ids[4], ids[3], ids[2]]
    assert listed(createdBefore=middle) == [ids[1], ids[0]]


# -- agents and the system endpoints ---------------------------------------------------------
def test_agents_lists_the_platforms_agents_with_their_load_and_capacity(http):
    def both_alive():
        items = http.get("/api/v1/agents").json()["items"]
        alive = {a["agentId"]: a for a in items if a["alive"]}
        return alive if {"agent-1", "agent-2"} <= set(alive) else None

    agents = eventually(both_alive, 15, message="both agents alive")
    for agent in agents.values():
        assert agent["load"] >= 0 and agent["lastHeartbeat"].endswith("Z")
        assert agent["capacity"] is None or agent["capacity"] >= 1


def test_health_ready_info_and_detailed_health_answer(http):
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"redis", "zookeeper", "kafka", "providers"}
    info = http.get("/api/v1/system/info").json()
    assert info["stage"] == 4 and info["apiVersion"] == "v1" and len(info["providers"]) >= 2
    detailed = http.get("/api/v1/system/health/detailed").json()
    assert detailed["status"] == "ok" and all(c["ok"] for c in detailed["checks"].values())


def test_the_openapi_document_has_every_path_of_the_contract_with_examples(http):
    document = http.get("/openapi.json").json()
    assert {
        "/api/v1/tasks",
        "/api/v1/tasks/{taskId}",
        "/api/v1/tasks/{taskId}/retry",
        "/api/v1/tasks/{taskId}/logs",
        "/api/v1/agents",
        "/health",
        "/ready",
        "/api/v1/system/info",
        "/api/v1/system/health/detailed",
    } <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert schemas["SubmitTask"]["examples"] and schemas["TaskView"]["examples"]
    problem = document["paths"]["/api/v1/tasks"]["post"]["responses"]["422"]["content"]
    assert list(problem) == [PROBLEM]
    assert http.get("/docs").status_code == 200


def test_the_servicer_adds_each_live_agents_capacity_from_zookeeper_when_given_a_client(stage4):
    # Given the servicer over the platform's Redis, with the ZooKeeper client of the chroot
    # the agents registered in
    from common.rpc.gen import task_service_pb2 as pb
    from common.rpc.service import TaskServicer

    class Context:
        def time_remaining(self):
            return None

    servicer = TaskServicer(stage4.tasks, stage4.tasks.store.client, zk=stage4.zk)

    def listed():
        agents = servicer.ListAgents(pb.ListAgentsRequest(), Context()).agents
        by_id = {a.agent_id: a for a in agents}
        return by_id if {"agent-1", "agent-2"} <= set(by_id) else None

    # Then both agents are listed alive, with the capacity they registered
    agents = eventually(listed, 15, message="both agents listed")
    for agent_id in ("agent-1", "agent-2"):
        assert agents[agent_id].alive and agents[agent_id].HasField("capacity")
        assert agents[agent_id].capacity >= 1


# -- the process -----------------------------------------------------------------------------
def test_sigterm_lets_a_request_in_flight_finish_then_the_api_exits_cleanly(stage4, http):
    # Given a second API process with a synchronous submit in flight
    url = stage4.start_api(f"api-term-{uuid.uuid4().hex[:4]}")
    proc = stage4.processes[-1]
    answers: list[httpx.Response] = []
    name = marker()

    def slow_submit() -> None:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            body = shell("sleep 1; echo done", taskName=name)
            answers.append(submit(client, body, params={"wait": 20}))

    thread = threading.Thread(target=slow_submit)
    thread.start()
    eventually(
        lambda: http.get("/api/v1/tasks", params={"name": name}).json()["items"],
        10,
        message="the submit reached the platform",
    )

    # When it is told to stop
    proc.terminate()

    # Then the request in flight is answered, and the process exits 0, refusing new ones
    thread.join(30)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["result"] == "done\n"
    eventually(lambda: not proc.alive(), 15, message="the API exited")
    assert proc.proc.returncode == 0, proc.log_text()[-2000:]
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_an_address_already_in_use_fails_the_start_with_one_line(stage4, rest):
    address = rest.removeprefix("http://")
    proc = stage4.start("api", f"api-taken-{uuid.uuid4().hex[:4]}", TASKLAB_API_ADDRESS=address)
    eventually(lambda: not proc.alive(), 20, message="the second API gave up")
    assert proc.proc.returncode != 0
    assert f"error: cannot serve the REST API on {address}" in proc.log_text()
