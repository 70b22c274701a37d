"""The CLI over the REST API: each task verb through `ApiTaskClient`, against an in-memory API
that answers as the REST contract says (TaskView, problem+json, cursors, Server-Sent Events),
served by httpx.MockTransport over the real task rules (TaskClient on InMemoryTaskStore).

The same store is also read through the Redis path (`RedisBackend`), so "same output either
way" is checked by printing one task both ways and comparing the lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial

import httpx
import pytest
from typer.testing import CliRunner

from common.adapters.memory_store import InMemoryTaskStore
from common.cli import main, remote
from common.cli.backend import CliError, RedisBackend
from common.cli.remote import ApiTaskClient, epoch, sse_events, task_of
from common.client import NotRetryable, TaskClient, TaskNotFound
from common.domain.task import Task, TaskValidationError
from common.domain.transitions import TaskStatus

URL = "http://api.test:8080"
KEY = "k-123"
TASK_PATH = re.compile(r"^/api/v1/tasks/(?P<id>[^/]+)(?P<rest>/retry|/logs)?$")


def rfc3339(seconds: float | None) -> str | None:
    if not seconds:
        return None
    # Milliseconds, truncated, as the contract's example: "2026-11-29T21:40:00.123Z".
    moment = datetime.fromtimestamp(int(seconds * 1000) / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def problem(status: int, slug: str, title: str, detail: str, errors=None, headers=None):
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/problem+json", **(headers or {})},
    )


class FakeApi:
    """The REST contract over TaskClient and an in-memory store; records what it was sent."""

    def __init__(self, api_key: str | None = KEY) -> None:
        self.store = InMemoryTaskStore()
        self.tasks = TaskClient(self.store)
        self.api_key = api_key
        self.requests: list[httpx.Request] = []
        self.agents = [
            {
                "agentId": "agent-1",
                "alive": True,
                "load": 1,
                "capacity": 2,
                "lastHeartbeat": "2026-11-29T21:40:00.123Z",
            },
            {"agentId": "agent-2", "alive": False, "load": 0, "capacity": 2, "lastHeartbeat": None},
        ]

    # -- what a test does to the platform -----------------------------------------------------
    def run(self, task_id: str, lines: list[str], exit_code: int = 0) -> Task:
        """What an agent does: RUNNING, output lines, then SUCCESS or FAILED."""
        self.store.transition(
            task_id, TaskStatus.RUNNING, attempt=1, actor="agent-1", fields={"agentId": "agent-1"}
        )
        self.store.log_lines.setdefault(task_id, []).extend(lines)
        final = TaskStatus.SUCCESS if exit_code == 0 else TaskStatus.FAILED
        fields = {"exitCode": exit_code, "result": "".join(f"{line}\n" for line in lines)}
        if exit_code:
            fields["error"] = f"exit code {exit_code}"
        self.store.transition(task_id, final, attempt=1, actor="agent-1", fields=fields)
        return self.tasks.get(task_id)

    # -- the contract -------------------------------------------------------------------------
    def view(self, task: Task) -> dict:
        data = task.model_dump(by_alias=True, mode="json")
        data["createdAt"] = rfc3339(task.created_at)
        data["updatedAt"] = rfc3339(task.updated_at)
        return data

    def timeline(self, task_id: str) -> list[dict]:
        return [
            {
                "state": e["state"],
                "fromState": e.get("from"),
                "at": rfc3339(e["at"]),
                "actor": e["actor"],
                "epoch": e["epoch"],
                "attempt": e["attempt"],
                "reason": e.get("reason"),
            }
            for e in self.store.history(task_id)
        ]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.api_key and request.headers.get("X-API-Key") != self.api_key:
            return problem(
                401,
                "unauthenticated",
                "Unauthenticated",
                "an API key (X-API-Key) or a bearer token is required",
                headers={"WWW-Authenticate": 'Bearer realm="tasklab"'},
            )
        path, method = request.url.path, request.method
        try:
            if path == "/api/v1/tasks" and method == "POST":
                return self.submit(request)
            if path == "/api/v1/tasks" and method == "GET":
                return self.list(request)
            if path == "/api/v1/agents":
                return httpx.Response(200, json={"items": self.agents})
            match = TASK_PATH.match(path)
            if match:
                return self.one(request, match["id"], match["rest"] or "")
        except TaskNotFound as exc:
            return problem(404, "task-not-found", "Task not found", str(exc))
        except NotRetryable as exc:
            return problem(409, "illegal-transition", "Illegal transition", str(exc))
        return problem(404, "not-found", "Not found", f"no route {method} {path}")

    def submit(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        try:
            task, created = self.tasks.submit(body, actor="api")
        except TaskValidationError as exc:
            errors = [
                {"field": p.split(":")[0], "detail": p.split(": ", 1)[1], "pointer": "#/x"}
                for p in exc.problems
            ]
            return problem(422, "validation", "Validation failed", "the task is invalid", errors)
        wait = request.url.params.get("wait")
        if wait is not None:
            # A synchronous submit: "echo" payloads finish at once, "sleep" ones never do.
            if task.payload.startswith("echo"):
                task = self.run(task.task_id, [task.payload.removeprefix("echo ")])
            elif task.payload.startswith("exit"):
                task = self.run(task.task_id, [], exit_code=int(task.payload.split()[1]))
            return httpx.Response(200 if task.is_terminal else 202, json=self.view(task))
        headers = {"Location": f"/api/v1/tasks/{task.task_id}"}
        return httpx.Response(201 if created else 200, json=self.view(task), headers=headers)

    def list(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        status = TaskStatus(params["status"]) if "status" in params else None
        start = int(params.get("cursor", "0"))
        limit = int(params.get("limit", "50"))
        assert 1 <= limit <= 500, limit
        # Pages of at most 2: the client must follow the cursor to fill a longer listing.
        page = self.store.list_tasks(status, offset=start, limit=min(limit, 2))
        more = self.store.list_tasks(status, offset=start + len(page), limit=1)
        cursor = str(start + len(page)) if more else None
        return httpx.Response(
            200, json={"items": [self.view(t) for t in page], "nextCursor": cursor}
        )

    def one(self, request: httpx.Request, task_id: str, rest: str) -> httpx.Response:
        method = request.method
        if rest == "" and method == "GET":
            task = self.tasks.get(task_id)
            body = self.view(task) | {
                "logs": self.store.logs(task_id),
                "timeline": self.timeline(task_id),
            }
            return httpx.Response(200, json=body)
        if rest == "" and method == "DELETE":
            result = self.tasks.cancel(task_id, actor="api")
            if not result.accepted:
                return problem(
                    409,
                    "illegal-transition",
                    "Illegal transition",
                    f"task {task_id} is {result.status}: a finished task cannot be cancelled",
                )
            return httpx.Response(
                200,
                json={
                    "message": "Cancel request accepted.",
                    "taskId": task_id,
                    "status": "CANCELLED",
                    "cancelledFrom": result.cancelled_from,
                    "alreadyCancelled": result.reason == "already_cancelled",
                },
            )
        if rest == "/retry" and method == "POST":
            new, created = self.tasks.retry(task_id, actor="api")
            return httpx.Response(
                201 if created else 200,
                json={"newTaskId": new.task_id, "status": "PENDING", "retryOf": task_id},
            )
        if rest == "/logs" and request.url.params.get("follow") == "true":
            return self.stream(task_id, int(request.url.params.get("fromLog", "0")))
        if rest == "/logs":
            self.tasks.get(task_id)
            return httpx.Response(200, json={"taskId": task_id, "lines": self.store.logs(task_id)})
        return problem(405, "method-not-allowed", "Method not allowed", method)

    def stream(self, task_id: str, from_log: int) -> httpx.Response:
        task = self.tasks.get(task_id)
        events = []
        for entry in self.timeline(task_id):
            events.append(f"event: transition\ndata: {json.dumps(entry)}\n\n")
        for seq, line in enumerate(self.store.logs(task_id)[from_log:], start=from_log):
            events.append(f"event: log\nid: {seq}\ndata: {line}\n\n")
        events.append(f"event: end\ndata: {json.dumps(self.view(task))}\n\n")
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=(": keep-alive\n\n" + "".join(events)).encode(),
        )


@pytest.fixture
def api(monkeypatch) -> FakeApi:
    """The fake API, reached the way the CLI reaches a real one: through TASKLAB_API_URL."""
    fake = FakeApi()
    monkeypatch.setenv("TASKLAB_API_URL", URL)
    monkeypatch.setenv("TASKLAB_API_KEY", KEY)
    # Only the transport differs from a real run: tasks() still reads the environment.
    transport = httpx.MockTransport(fake.handle)
    monkeypatch.setattr(remote, "ApiTaskClient", partial(ApiTaskClient, transport=transport))
    return fake


def cli(*args: str, input: str | None = None):
    return CliRunner().invoke(main.app, list(args), input=input)


def one_line_error(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- choosing the backend ---------------------------------------------------------------------
def test_the_task_verbs_talk_to_the_api_when_its_url_is_set_and_to_redis_otherwise():
    chosen = main.tasks({"TASKLAB_API_URL": URL + "/", "TASKLAB_API_KEY": KEY})
    assert isinstance(chosen, ApiTaskClient)
    assert chosen.base_url == URL
    assert chosen.http.headers["X-API-Key"] == KEY
    keyless = main.tasks({"TASKLAB_API_URL": URL})
    assert "X-API-Key" not in keyless.http.headers
    assert isinstance(main.tasks({}), RedisBackend)


def test_an_api_url_that_is_not_http_is_refused_in_one_line_with_exit_code_2(monkeypatch):
    monkeypatch.setenv("TASKLAB_API_URL", "api.test:8080")
    result = cli("status", "x")
    assert result.exit_code == 2
    assert "expected http://host:port" in one_line_error(result)


# -- submit ---------------------------------------------------------------------------------
def test_submit_posts_the_task_with_the_api_key_and_prints_its_id(api):
    result = cli("submit", "echo hi", "--name", "greet", "--timeout", "5", "--retries", "1")
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    sent = api.requests[-1]
    assert (sent.method, sent.url.path) == ("POST", "/api/v1/tasks")
    assert sent.headers["X-API-Key"] == KEY
    assert json.loads(sent.content) == {
        "taskName": "greet",
        "taskType": "SHELL",
        "payload": "echo hi",
        "executionTimeout": 5,
        "retryCount": 1,
    }
    assert api.tasks.get(task_id).task_name == "greet"


def test_submit_with_a_request_id_says_created_then_returns_the_same_task(api):
    first = cli("submit", "echo once", "--request-id", "r-1", "--json")
    second = cli("submit", "echo once", "--request-id", "r-1", "--json")
    assert json.loads(first.stdout)["created"] is True
    assert json.loads(second.stdout)["created"] is False
    assert json.loads(first.stdout)["taskId"] == json.loads(second.stdout)["taskId"]
    assert json.loads(api.requests[-1].content)["requestId"] == "r-1"
    assert "taskName" not in json.loads(api.requests[-1].content)  # empty: the API names it


def test_submit_wait_asks_the_api_to_wait_and_exits_0_on_success(api):
    result = cli("submit", "echo done", "--wait", "--wait-timeout", "12.5")
    assert result.exit_code == 0, result.output
    assert api.requests[-1].url.params["wait"] == "13"
    assert "status:   SUCCESS" in result.stdout
    assert "  done" in result.stdout  # the result, indented as over Redis


def test_submit_wait_exits_1_on_failure_and_on_a_task_still_running(api):
    failed = cli("submit", "exit 9", "--wait")
    assert failed.exit_code == 1
    assert "status:   FAILED" in failed.stdout
    assert "exitCode: 9" in failed.stdout
    running = cli("submit", "sleep 100", "--wait", "--wait-timeout", "1")
    assert running.exit_code == 1
    assert "status:   PENDING" in running.stdout
    assert running.stderr.strip() == "still PENDING after 1s"


def test_a_wait_longer_than_the_apis_limit_waits_the_rest_by_reading_the_task(api):
    # Given an API that waits at most 300 s and answers 202 with the task still running
    task, _ = api.tasks.submit({"taskType": "SHELL", "payload": "sleep 400"}, actor="cli")
    polls = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert request.url.params["wait"] == "300"
            return httpx.Response(202, json=api.view(api.tasks.get(task.task_id)))
        polls.append(request)
        if len(polls) == 2:  # the task finishes between the first and the second read
            api.run(task.task_id, ["done"])
        return api.handle(request)

    client = ApiTaskClient(URL, api_key=KEY, transport=httpx.MockTransport(handle))
    # When the CLI is asked to wait longer than that
    final, _ = client.submit({"taskType": "SHELL", "payload": "sleep 400"}, wait=400)
    # Then it reads the task until it is final, within its own deadline
    assert final.status == TaskStatus.SUCCESS
    assert [p.url.path for p in polls] == [f"/api/v1/tasks/{task.task_id}"] * 2


def test_submit_wait_json_carries_the_final_task_and_its_timeline(api):
    result = cli("submit", "echo j", "--wait", "--json")
    data = json.loads(result.stdout)
    assert data["status"] == "SUCCESS"
    assert [e["state"] for e in data["timeline"]] == ["PENDING", "RUNNING", "SUCCESS"]
    assert data["timeline"][1]["from"] == "PENDING"


def test_a_validation_problem_is_one_line_with_every_field_and_exit_code_2(api):
    result = cli("submit", "   ", "--timeout", "0")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert line.startswith("error: Validation failed: the task is invalid; ")
    assert "payload: " in line and "executionTimeout: " in line


# -- reading ----------------------------------------------------------------------------------
def test_status_prints_the_same_lines_through_the_api_as_through_redis(api, monkeypatch):
    task, _ = api.tasks.submit({"taskType": "SHELL", "payload": "echo a; exit 3"}, actor="cli")
    api.run(task.task_id, ["a"], exit_code=3)
    over_api = cli("status", task.task_id)
    monkeypatch.setattr(main, "tasks", lambda: RedisBackend(api.tasks))
    over_redis = cli("status", task.task_id)
    assert over_api.exit_code == over_redis.exit_code == 0
    assert over_api.stdout == over_redis.stdout
    assert "  RUNNING    attempt 1  epoch 0  by agent-1" in over_api.stdout


def test_status_json_has_the_task_its_logs_and_its_timeline(api):
    task, _ = api.tasks.submit({"taskType": "SHELL", "payload": "echo b"}, actor="cli")
    api.run(task.task_id, ["b1", "b2"])
    data = json.loads(cli("status", task.task_id, "--json").stdout)
    assert data["taskId"] == task.task_id
    assert data["logs"] == ["b1", "b2"]
    assert data["exitCode"] == 0
    assert abs(data["createdAt"] - task.created_at) < 0.001  # RFC 3339 back to epoch seconds


def test_an_unknown_task_is_a_one_line_404_problem_with_exit_code_1(api):
    result = cli("status", "no-such-task")
    assert result.exit_code == 1
    assert one_line_error(result) == "error: Task not found: no task no-such-task"


def test_a_task_id_cannot_address_another_url(api):
    cli("status", "../agents")
    assert api.requests[-1].url.raw_path == b"/api/v1/tasks/..%2Fagents"


def test_list_follows_the_cursor_past_the_offset_and_sends_the_status_filter(api):
    ids = [
        api.tasks.submit({"taskType": "SHELL", "payload": f"echo {n}"})[0].task_id for n in "12345"
    ]
    result = cli("list", "--offset", "1", "--limit", "3", "--json")
    listed = [t["taskId"] for t in json.loads(result.stdout)]
    assert listed == list(reversed(ids))[1:4]  # newest first, across two pages
    assert len([r for r in api.requests if r.url.path == "/api/v1/tasks"]) == 2
    api.run(ids[0], ["x"])
    table = cli("list", "--status", "success")
    assert api.requests[-1].url.params["status"] == "SUCCESS"
    assert table.stdout.splitlines()[0].startswith("TASK ID")
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == [ids[0]]


def test_logs_prints_the_lines_and_follow_reads_the_event_stream_to_its_end(api):
    task, _ = api.tasks.submit({"taskType": "SHELL", "payload": "echo c"}, actor="cli")
    api.run(task.task_id, ["one", "two", "three"])
    assert cli("logs", task.task_id).stdout == "one\ntwo\nthree\n"
    followed = cli("logs", task.task_id, "--follow")
    assert followed.exit_code == 0
    assert followed.stdout == "one\ntwo\nthree\n"
    sent = api.requests[-1]
    assert sent.url.params["follow"] == "true"
    assert sent.headers["Accept"] == "text/event-stream"


def test_a_follow_whose_stream_breaks_resumes_after_the_last_line_it_printed():
    # Given a stream that dies after two lines, then one that serves the rest from fromLog
    asked: list[dict] = []

    def broken_then_whole(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))

        def first() -> Iterator[bytes]:
            yield b"event: log\nid: 0\ndata: l0\n\nevent: log\nid: 1\ndata: l1\n\n"
            raise httpx.RemoteProtocolError("peer closed connection mid-stream")

        if len(asked) == 1:
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=first()
            )
        body = "event: log\nid: 2\ndata: l2\n\nevent: end\ndata: {}\n\n"
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body.encode()
        )

    client = ApiTaskClient(URL, transport=httpx.MockTransport(broken_then_whole))
    # When it is followed, Then every line comes once, in order, and the second ask resumes
    assert list(client.follow_logs("t1")) == ["l0", "l1", "l2"]
    assert asked == [{"follow": "true"}, {"follow": "true", "fromLog": "2"}]


def test_a_stream_that_ends_with_an_error_event_is_a_one_line_error_not_a_reconnect():
    asked: list[httpx.Request] = []

    def no_provider(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        problem_json = json.dumps(
            {
                "type": "/problems/service-unavailable",
                "title": "Service unavailable",
                "status": 503,
                "detail": "no TaskService provider answered",
            }
        )
        body = f"event: log\nid: 0\ndata: l0\n\nevent: error\ndata: {problem_json}\n\n"
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body.encode()
        )

    lines = ApiTaskClient(URL, transport=httpx.MockTransport(no_provider)).follow_logs("t")
    assert next(lines) == "l0"
    with pytest.raises(CliError) as caught:
        next(lines)
    assert str(caught.value) == "Service unavailable: no TaskService provider answered"
    assert len(asked) == 1


def test_agents_prints_the_same_columns_as_over_redis(api):
    result = cli("agents")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "ALIVE", "PROCESSING", "LAST", "HEARTBEAT"]
    assert lines[1].split()[:3] == ["agent-1", "true", "1"]
    assert lines[1].split()[3].endswith(".123")
    assert lines[2].split() == ["agent-2", "false", "0", "-"]
    rows = json.loads(cli("agents", "--json").stdout)
    assert set(rows[0]) == {"agentId", "alive", "lastHeartbeat", "processing"}
    assert rows[0]["lastHeartbeat"] == epoch("2026-11-29T21:40:00.123Z")


# -- commands ---------------------------------------------------------------------------------
def test_cancel_is_accepted_and_a_finished_task_is_a_one_line_409(api):
    task, _ = api.tasks.submit({"taskType": "SHELL", "payload": "sleep 9"}, actor="cli")
    result = cli("cancel", task.task_id)
    assert (result.exit_code, result.stdout) == (0, "Cancel request accepted.\n")
    assert api.requests[-1].method == "DELETE"
    done, _ = api.tasks.submit({"taskType": "SHELL", "payload": "echo d"}, actor="cli")
    api.run(done.task_id, ["d"])
    refused = cli("cancel", done.task_id)
    assert refused.exit_code == 1
    assert one_line_error(refused).startswith("error: Illegal transition: task ")


def test_retry_prints_the_new_task_id_and_only_a_failed_or_cancelled_task_may_be_retried(api):
    task, _ = api.tasks.submit({"taskType": "SHELL", "payload": "exit 1"}, actor="cli")
    api.run(task.task_id, [], exit_code=1)
    result = cli("retry", task.task_id)
    assert result.exit_code == 0
    new_id = result.stdout.strip()
    assert api.tasks.get(new_id).retry_of == task.task_id
    refused = cli("retry", new_id)
    assert refused.exit_code == 1
    assert "only a FAILED or CANCELLED task can be retried" in one_line_error(refused)


# -- the wire's failures ----------------------------------------------------------------------
def test_a_missing_key_is_a_one_line_401_that_says_the_key_is_not_set(api, monkeypatch):
    monkeypatch.delenv("TASKLAB_API_KEY")
    result = cli("list")
    assert result.exit_code == 1
    assert one_line_error(result) == (
        "error: Unauthenticated: an API key (X-API-Key) or a bearer token is required "
        "(TASKLAB_API_KEY is not set)"
    )


def test_rate_limited_and_unavailable_problems_say_when_to_retry():
    def busy(request: httpx.Request) -> httpx.Response:
        return problem(
            429,
            "rate-limited",
            "Too many requests",
            "key k-123: 10/s",
            headers={"Retry-After": "2"},
        )

    with pytest.raises(CliError) as caught:
        ApiTaskClient(URL, transport=httpx.MockTransport(busy)).logs("t")
    assert str(caught.value) == "Too many requests: key k-123: 10/s; retry after 2s"
    assert caught.value.code == 1


def test_an_answer_that_is_not_a_problem_still_makes_one_line():
    def proxy_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>\n<b>Bad gateway</b>\n</html>")

    with pytest.raises(CliError) as caught:
        ApiTaskClient(URL, transport=httpx.MockTransport(proxy_page)).info("t")
    assert str(caught.value) == (
        f"HTTP 502 from {URL}/api/v1/tasks/t: <html> <b>Bad gateway</b> </html>"
    )


def test_a_refused_connection_is_one_line_naming_the_url(monkeypatch):
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    monkeypatch.setenv("TASKLAB_API_URL", URL)
    monkeypatch.setattr(
        remote, "ApiTaskClient", partial(ApiTaskClient, transport=httpx.MockTransport(refused))
    )
    for args in (["status", "t"], ["logs", "t", "--follow"], ["submit", "true"]):
        result = cli(*args)
        assert result.exit_code == 1
        assert one_line_error(result) == (
            f"error: cannot reach the API at {URL} ([Errno 111] Connection refused); "
            "is it running? (`tasklab run api --stage 4` serves it)"
        )


# -- the pieces -------------------------------------------------------------------------------
def test_sse_events_joins_data_lines_skips_comments_and_ends_an_event_at_a_blank_line():
    lines = [": ping", "event: log", "id: 7", "data: a", "data:b", "", "data: plain", "", ""]
    events = list(sse_events(lines))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("log", "a\nb", "7"),
        ("message", "plain", None),
    ]


def test_a_task_view_becomes_the_domain_task_with_epoch_times():
    view = {
        "taskId": "t",
        "taskName": "n",
        "taskType": "SHELL",
        "payload": "true",
        "executionTimeout": 60,
        "retryCount": 0,
        "requestId": None,
        "status": "RUNNING",
        "attempt": 2,
        "epoch": 3,
        "agentId": None,
        "result": None,
        "error": None,
        "exitCode": None,
        "createdAt": "2026-11-29T21:40:00.123Z",
        "updatedAt": "2026-11-29T21:40:01Z",
        "retryOf": None,
        "logs": ["ignored"],
    }
    task = task_of(view)
    assert (task.status, task.attempt, task.epoch) == (TaskStatus.RUNNING, 2, 3)
    assert task.created_at == datetime(2026, 11, 29, 21, 40, 0, 123000, UTC).timestamp()
    assert task.updated_at - task.created_at == pytest.approx(0.877)
    assert epoch(None) == 0.0
