"""The web console's pages without a server: a real TaskService (gRPC, on a loopback port) over
the in-memory task store, the dead-letter list in memory, and FastAPI's TestClient.

What a browser does with these pages (clicks, live updates, keyboard use) is tested against a
real platform in tests/stage5_observability/test_console_browser.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from fastapi.testclient import TestClient
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import ConnectionError as RedisConnectionError

from common.adapters.clock import ManualClock
from common.adapters.memory_composite import InMemoryCompositeStore
from common.adapters.memory_dead_letter import InMemoryDeadLetterBox
from common.adapters.memory_schedule import InMemoryScheduleStore
from common.adapters.memory_store import InMemoryTaskStore
from common.api import dto
from common.api.app import create_app
from common.api.cluster import Cluster
from common.api.console import pages, session
from common.api.views import rfc3339 as convert_rfc3339
from common.client import TaskClient
from common.config import Settings
from common.coordination.agent_info import AgentInfo
from common.domain.dead_letter import Requeue, entry_id, read_entry
from common.domain.schedule import validate_schedule
from common.domain.task import TaskSpec, TaskType
from common.domain.transitions import TaskStatus
from common.ports.bus_dead_letters import (
    BusDeadLetter,
    BusDeadLetters,
    BusUnavailable,
    NoBusDeadLetters,
)
from common.rpc import convert
from common.rpc.gen import task_service_pb2 as pb
from common.rpc.gen import task_service_pb2_grpc as pb_grpc
from common.rpc.service import TaskServicer
from common.scheduling.schedules import ScheduleFirer

# Nothing listens on port 1: a page that reached a real service would fail, not pass.
OFFLINE = Settings(
    redis_url="redis://127.0.0.1:1/0", zk_hosts="127.0.0.1:1", kafka_bootstrap="127.0.0.1:1"
)
KEYS = {"reader-key-for-tests": ["TaskRead"], "writer-key-for-tests": ["TaskWrite"],
        "admin-key-for-tests": ["Admin"]}  # fmt: skip
SECURED = OFFLINE.model_copy(update={"api_keys": KEYS})
BASE = "http://console.test"
SAME_ORIGIN = {"Origin": BASE}


class StubTasks:
    """The TaskServiceProxy's interface over one stub (what the pages call)."""

    def __init__(self, stub: pb_grpc.TaskServiceStub, store: InMemoryTaskStore) -> None:
        self.stub = stub
        self.store = store

    def submit(self, request, timeout=None, metadata=None):
        return self.stub.Submit(request, timeout=timeout, metadata=metadata)

    def list(self, request, timeout=None, metadata=None):
        # The providers' List reads Redis's index, which this platform has not: the same
        # filters over the in-memory store, the cursor an offset (opaque to the console).
        status = TaskStatus(pb.TaskStatus.Name(request.status)) if request.status else None
        found = [
            t
            for t in self.store.list_tasks(status, 0, 10_000)
            if request.name in t.task_name
            and (not request.agent_id or t.agent_id == request.agent_id)
            and (not request.schedule_id or t.schedule_id == request.schedule_id)
        ]
        start = int(request.cursor or 0)
        end = start + request.page_size
        return pb.ListResponse(
            tasks=[convert.task(t) for t in found[start:end]],
            next_cursor=str(end) if end < len(found) else "",
        )

    def get_task_info(self, task_id, timeout=None, metadata=None):
        request = pb.GetTaskInfoRequest(task_id=task_id)
        return self.stub.GetTaskInfo(request, timeout=timeout, metadata=metadata)

    def cancel(self, task_id, timeout=None, metadata=None):
        return self.stub.Cancel(pb.CancelRequest(task_id=task_id), timeout=timeout)

    def retry(self, task_id, request_id="", timeout=None, metadata=None):
        request = pb.RetryRequest(task_id=task_id, request_id=request_id)
        return self.stub.Retry(request, timeout=timeout, metadata=metadata)

    def watch(self, task_id, from_transition=0, from_log=0, timeout=None, metadata=None):
        request = pb.WatchRequest(task_id=task_id, from_transition=from_transition)
        request.from_log = from_log
        return self.stub.Watch(request, timeout=timeout, metadata=metadata)

    def create_schedule(self, spec, timeout=None, metadata=None):
        request = pb.CreateScheduleRequest(spec=spec)
        return self.stub.CreateSchedule(request, timeout=timeout, metadata=metadata)

    def get_schedule(self, name, preview=0, timeout=None, metadata=None):
        request = pb.GetScheduleRequest(name=name, preview=preview)
        return self.stub.GetSchedule(request, timeout=timeout, metadata=metadata)

    def list_schedules(self, timeout=None, metadata=None):
        request = pb.ListSchedulesRequest()
        return self.stub.ListSchedules(request, timeout=timeout, metadata=metadata)

    def set_schedule_suspended(self, name, suspend, timeout=None, metadata=None):
        request = pb.SetScheduleSuspendedRequest(name=name, suspend=suspend)
        return self.stub.SetScheduleSuspended(request, timeout=timeout, metadata=metadata)

    def delete_schedule(self, name, timeout=None, metadata=None):
        request = pb.DeleteScheduleRequest(name=name)
        return self.stub.DeleteSchedule(request, timeout=timeout, metadata=metadata)

    def list_agents(self, timeout=None, metadata=None):
        # ListAgents reads Redis, which this in-memory platform has not: two canned agents.
        beat = Timestamp()
        beat.GetCurrentTime()
        return pb.ListAgentsResponse(
            agents=[
                pb.Agent(agent_id="agent-1", alive=True, load=1, capacity=4, last_heartbeat=beat),
                pb.Agent(agent_id="agent-2", alive=False, load=0),
            ]
        )


class BusDeadLettersInMemory(BusDeadLetters):
    """The dead-letter topic's reader over a list (the Kafka one is tested on a real broker
    in tests/stage5_observability/test_bus_dead_letters.py); `down` makes it not answer."""

    def __init__(self) -> None:
        self.entries: list[BusDeadLetter] = []
        self.down = False

    @property
    def configured(self) -> bool:
        return True

    @property
    def topic(self) -> str:
        return "tasklab-dead-letter-topic"

    def list(self, limit):
        if self.down:
            raise BusUnavailable("Local: Broker transport failure")
        return sorted(self.entries, key=lambda d: -(d.at or 0))[:limit], len(self.entries)


class Platform:
    def __init__(self) -> None:
        self.store = InMemoryTaskStore()
        self.client = TaskClient(self.store, 64 * 1024, InMemoryCompositeStore(self.store))
        self.schedules = InMemoryScheduleStore(self.store)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_TaskServiceServicer_to_server(
            TaskServicer(self.client, redis=None, actor="rpc:test", schedules=self.schedules),
            self.server,
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.tasks = StubTasks(pb_grpc.TaskServiceStub(self.channel), self.store)
        self.dead_letters = InMemoryDeadLetterBox()
        self.bus = BusDeadLettersInMemory()
        self.cluster = Cluster(
            leader="scheduler-2",
            epoch=4295,
            agents={"agent-1": AgentInfo("agent-1", 4, ["SHELL"], draining=True)},
        )

    def composites_children(self, parent_id: str) -> list[str]:
        return [t.task_id for t in self.store.list_tasks(None, 0, 1000) if t.parent_id == parent_id]

    def app(self, settings: Settings = OFFLINE):
        return create_app(settings, self.tasks, self.dead_letters, lambda: self.cluster, self.bus)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0).wait(5)


@pytest.fixture
def platform() -> Iterator[Platform]:
    running = Platform()
    yield running
    running.close()


@pytest.fixture
def console(platform) -> Iterator[TestClient]:
    with TestClient(platform.app(), base_url=BASE) as client:
        yield client


def submit(console: TestClient, **fields: str):
    form = {"taskType": "SHELL", "payload": "echo hi", "executionTimeout": "60", **fields}
    return console.post("/ui/submit", data=form, headers=SAME_ORIGIN, follow_redirects=False)


# -- tasks ------------------------------------------------------------------------------------


def test_a_task_submitted_from_the_form_redirects_to_its_page_which_shows_its_timeline(console):
    answer = submit(console, taskName="greet")
    assert answer.status_code == 303
    task_page = answer.headers["location"]
    assert task_page.startswith("/ui/tasks/")
    page = console.get(task_page)
    assert page.status_code == 200
    assert "greet" in page.text and "PENDING" in page.text
    assert 'id="timeline"' in page.text
    assert "Cancel task" in page.text, "a task not final offers its cancel"
    assert 'data-events="/ui/tasks/' in page.text, "the page follows its task over SSE"


def test_the_forms_errors_are_the_rest_apis_own_shown_next_to_their_fields(console):
    # Given the same bad input sent to the REST API
    rest = console.post(
        "/api/v1/tasks", json={"taskType": "COBOL", "payload": "", "executionTimeout": 0}
    )
    assert rest.status_code == 422
    expected = {e["field"]: e["detail"] for e in rest.json()["errors"]}
    # When it is typed into the form
    page = submit(console, taskType="COBOL", payload="", executionTimeout="0")
    # Then each message is the REST one, right under its own input, which is marked invalid
    assert page.status_code == 422
    for field in ("taskType", "payload", "executionTimeout"):
        assert f'id="{field}-error">{expected[field]}' in page.text.replace("&#39;", "'")
        assert f'aria-describedby="{field}-error"' in page.text


def test_a_number_field_with_letters_is_refused_with_the_dtos_message(console):
    page = submit(console, retryCount="three")
    assert page.status_code == 422
    assert 'id="retryCount-error">Input should be a valid integer' in page.text


def test_the_list_keeps_its_filters_in_the_refresh_and_in_the_next_page_link(console, platform):
    for n in range(30):
        assert submit(console, taskName=f"batch-{n}").status_code == 303
    page = console.get("/ui/tasks?status=PENDING&name=batch")
    assert page.status_code == 200
    assert 'hx-get="/ui/tasks?status=PENDING&amp;name=batch"' in page.text
    assert "/ui/tasks?status=PENDING&amp;name=batch&amp;cursor=" in page.text, "a next page"
    assert page.text.count('name="taskId"') == pages.PAGE_SIZE
    refresh = console.get("/ui/tasks?status=PENDING&name=batch", headers={"HX-Request": "true"})
    assert refresh.text.lstrip().startswith("<tbody"), "a refresh answers the rows only"
    assert 'hx-swap-oob="true"' in refresh.text


def test_a_filter_value_the_api_does_not_know_is_named_next_to_its_filter(console):
    page = console.get("/ui/tasks?status=DONE")
    assert page.status_code == 200
    assert 'id="f-status-error">no status &#39;DONE&#39;' in page.text


def test_cancelling_a_selection_answers_for_each_task(console, platform):
    first = submit(console).headers["location"].rsplit("/", 1)[1]
    second = submit(console).headers["location"].rsplit("/", 1)[1]
    missing = "00000000-0000-4000-8000-000000000000"
    page = console.post(
        "/ui/tasks/bulk",
        data={"action": "cancel", "taskId": [first, second, missing]},
        headers=SAME_ORIGIN,
    )
    assert page.status_code == 200
    assert page.text.count("ok: cancelled (was PENDING)") == 2
    assert f"no task {missing}" in page.text
    assert platform.store.get(first).status == TaskStatus.CANCELLED


def test_cancel_then_retry_from_the_task_page(console, platform):
    task_page = submit(console).headers["location"]
    cancelled = console.post(task_page + "/cancel", headers=SAME_ORIGIN, follow_redirects=False)
    assert cancelled.status_code == 303
    page = console.get(task_page)
    assert "Retry task" in page.text and "Cancel task" not in page.text
    retried = console.post(task_page + "/retry", headers=SAME_ORIGIN, follow_redirects=False)
    assert retried.status_code == 303 and retried.headers["location"] != task_page


def test_a_composite_parents_page_lists_its_children_each_linked_to_its_page(console, platform):
    document = {
        "kind": "GROUP",
        "taskName": "nightly",
        "children": [
            {"taskName": "disk", "taskType": "SHELL", "payload": "echo disk"},
            {"taskName": "backup", "taskType": "SHELL", "payload": "echo backup"},
        ],
    }
    parent, _ = platform.client.submit_composite(document)
    page = console.get(f"/ui/tasks/{parent.task_id}")
    assert page.status_code == 200
    assert 'id="children-heading"' in page.text
    children = platform.composites_children(parent.task_id)
    assert len(children) == 2
    for child in children:
        assert f'href="/ui/tasks/{child}"' in page.text


def test_the_timeline_shows_each_steps_latency():
    entries = [
        dto.TimelineEntry(state="PENDING", from_state=None, at="2026-11-30T01:00:00.000Z",
                          actor="rpc", epoch=0, attempt=0, reason=""),
        dto.TimelineEntry(state="SCHEDULED", from_state="PENDING", at="2026-11-30T01:00:00.250Z",
                          actor="scheduler:s1", epoch=7, attempt=1, reason=""),
    ]  # fmt: skip
    rows = pages.timeline_rows(entries)
    assert [r["step_ms"] for r in rows] == [None, 250]


# -- agents, dead letters, navigation ----------------------------------------------------------


def test_the_agents_page_shows_load_capacity_heartbeat_draining_and_the_leader(console):
    page = console.get("/ui/agents")
    assert page.status_code == 200
    text = page.text
    assert "scheduler-2" in text and "4295" in text
    assert "agent-1" in text and "agent-2" in text
    assert ">expired<" in text, "an agent without a heartbeat says so"
    assert ">yes<" in text, "agent-1 is draining"


def test_a_dead_letter_is_requeued_once_however_often_it_is_asked(console, platform):
    wanted = platform.dead_letters.add('{"taskType":"RUBY"}', "unknown taskType 'RUBY'")
    page = console.get("/ui/dead-letters")
    assert "unknown taskType" in page.text and f"/ui/dead-letters/{wanted}/requeue" in page.text
    for _ in range(2):
        answer = console.post(f"/ui/dead-letters/{wanted}/requeue", headers=SAME_ORIGIN)
        assert answer.status_code == 200
    assert platform.dead_letters.pending == ['{"taskType":"RUBY"}'], "pushed once"
    assert "already requeued" in answer.text
    rest = console.post(f"/api/v1/dead-letters/{wanted}/requeue")
    assert rest.json()["outcome"] == Requeue.ALREADY_REQUEUED
    assert console.post("/api/v1/dead-letters/0123456789abcdef/requeue").status_code == 404


def test_a_dead_letter_entry_is_named_by_its_exact_text():
    raw = '{"message": "x", "reason": "bad", "actor": "a", "at": 1.5, "source": "s"}'
    entry = read_entry(raw)
    assert entry.entry_id == entry_id(raw) and entry.reason == "bad" and entry.at == 1.5
    hand_written = read_entry("not json")
    assert hand_written.message == "not json" and hand_written.reason


def schedule_form(**fields: str) -> dict[str, str]:
    return {
        "name": "nightly",
        "schedule": "30 2 * * *",
        "timeZone": "Europe/Berlin",
        "concurrencyPolicy": "Forbid",
        "task.taskType": "SHELL",
        "task.payload": "echo report",
        "task.executionTimeout": "60",
        **fields,
    }


def test_the_nav_links_the_schedules_page_which_lists_nothing_at_first(console):
    assert 'href="/ui/schedules"' in console.get("/ui/tasks").text
    page = console.get("/ui/schedules")
    assert page.status_code == 200
    assert "No schedules." in page.text and 'aria-current="page"' in page.text


def test_a_schedule_created_from_the_form_is_listed_with_its_cron_zone_and_next_fire(
    console, platform
):
    answer = console.post(
        "/ui/schedules", data=schedule_form(), headers=SAME_ORIGIN, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/schedules?done=created+nightly"
    assert platform.schedules.get("nightly").spec.time_zone == "Europe/Berlin"
    page = console.get(answer.headers["location"]).text
    row = page[page.index('id="schedule-nightly"') :].split("</tr>")[0]
    assert "30 2 * * *" in row and "Europe/Berlin" in row and "never" in row
    # 02:30 in Berlin is 00:30 or 01:30 UTC, by the season.
    assert ":30:00.000Z" in row.split('class="next-fire">')[1].split("</td>")[0]
    assert 'action="/ui/schedules/nightly/pause"' in row
    assert 'action="/ui/schedules/nightly/delete"' in row
    detail = console.get("/ui/schedules/nightly").text
    assert detail.count(":30:00.000Z</li>") == 10, "the schedule's page previews ten fires"


def test_the_forms_errors_are_the_schedule_routes_own_shown_next_to_their_fields(console):
    bad = {
        "name": "Bad Name",
        "schedule": "*/0 * * * *",
        "timeZone": "Nowhere/City",
        "concurrencyPolicy": "Never",
        "task": {"taskType": "SHELL", "payload": ""},
    }
    rest = console.post("/api/v1/schedules", json=bad)
    assert rest.status_code == 422
    expected = {e["field"]: e["detail"] for e in rest.json()["errors"]}
    page = console.post(
        "/ui/schedules",
        data=schedule_form(
            name="Bad Name",
            schedule="*/0 * * * *",
            timeZone="Nowhere/City",
            concurrencyPolicy="Never",
            **{"task.payload": "", "task.executionTimeout": ""},
        ),
        headers=SAME_ORIGIN,
    )
    assert page.status_code == 422
    text = page.text.replace("&#39;", "'").replace("&#34;", '"').replace("&quot;", '"')
    for field in ("name", "schedule", "timeZone", "concurrencyPolicy", "task.payload"):
        assert f'id="{field}-error">{expected[field]}' in text, field
        assert f'aria-describedby="{field}-error"' in text
    assert 'value="Nowhere/City"' in text, "the form keeps what was typed"


def test_a_taken_name_is_named_next_to_the_name_field(console):
    form = schedule_form()
    assert console.post("/ui/schedules", data=form, headers=SAME_ORIGIN).status_code == 200
    again = console.post("/ui/schedules", data=form, headers=SAME_ORIGIN)
    assert again.status_code == 409
    assert 'id="name-error">' in again.text and "exists already" in again.text


def test_pause_resume_and_delete_from_the_list(console, platform):
    console.post("/ui/schedules", data=schedule_form(), headers=SAME_ORIGIN)
    paused = console.post("/ui/schedules/nightly/pause", headers=SAME_ORIGIN)
    assert paused.status_code == 200 and "Schedule paused nightly." in paused.text
    assert platform.schedules.get("nightly").spec.suspend is True
    assert 'action="/ui/schedules/nightly/resume"' in paused.text
    console.post("/ui/schedules/nightly/resume", headers=SAME_ORIGIN)
    assert platform.schedules.get("nightly").spec.suspend is False
    console.post("/ui/schedules/nightly/delete", headers=SAME_ORIGIN)
    assert platform.schedules.get("nightly") is None
    missing = console.post("/ui/schedules/nightly/pause", headers=SAME_ORIGIN)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")


def test_a_schedules_runs_link_to_their_task_pages(console, platform):
    console.post("/ui/schedules", data=schedule_form(), headers=SAME_ORIGIN)
    clock = ManualClock(time.time() + 2 * 86400)  # two days on: a fire time is due
    firer = ScheduleFirer(platform.schedules, platform.store, "scheduler:test", clock)
    firer.tick(epoch=1)
    (run,) = platform.schedules.get("nightly").active
    for page in (console.get("/ui/schedules").text, console.get("/ui/schedules/nightly").text):
        assert f'href="/ui/tasks/{run.run_id}"' in page
    assert console.get(f"/ui/tasks/{run.run_id}").status_code == 200


# -- session, CSRF, roles -----------------------------------------------------------------------


def test_a_post_from_another_origin_is_refused_before_it_acts(console, platform):
    answer = console.post(
        "/ui/submit",
        data={"taskType": "SHELL", "payload": "echo forged"},
        headers={"Origin": "http://evil.test"},
    )
    assert answer.status_code == 403
    no_origin = console.post("/ui/submit", data={"taskType": "SHELL", "payload": "echo x"})
    assert no_origin.status_code == 403
    assert platform.store.tasks == {}, "nothing was submitted"


def test_with_auth_on_a_page_sends_a_visitor_without_a_key_to_the_login_form(platform):
    with TestClient(platform.app(SECURED), base_url=BASE) as client:
        answer = client.get("/ui/tasks?status=PENDING", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/login?next=%2Fui%2Ftasks%3Fstatus%3DPENDING"
        htmx = client.get("/ui/tasks", headers={"HX-Request": "true"}, follow_redirects=False)
        assert htmx.headers["HX-Redirect"].startswith("/ui/login")


def test_login_keeps_the_key_in_an_httponly_samesite_strict_cookie_for_the_console_only(
    platform,
):
    with TestClient(platform.app(SECURED), base_url=BASE) as client:
        wrong = client.post("/ui/login", data={"apiKey": "nope"}, headers=SAME_ORIGIN)
        assert wrong.status_code == 401 and 'id="apiKey-error"' in wrong.text
        answer = client.post(
            "/ui/login",
            data={"apiKey": "writer-key-for-tests", "next": "/ui/agents"},
            headers=SAME_ORIGIN,
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/agents"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{session.COOKIE}=")
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui"):
            assert attribute.lower() in cookie.lower()
        assert client.get("/ui/tasks").status_code == 200
        assert client.get("/api/v1/tasks").status_code == 401, "the REST API takes no cookie"
        client.post("/ui/logout", headers=SAME_ORIGIN)
        assert client.get("/ui/tasks", follow_redirects=False).status_code == 303


def test_login_never_redirects_to_another_site():
    assert session.safe_next("https://evil.test/") == "/ui/tasks"
    assert session.safe_next("//evil.test/ui/") == "/ui/tasks"
    assert session.safe_next("/ui/tasks?status=FAILED") == "/ui/tasks?status=FAILED"


def test_a_read_only_key_sees_no_action_buttons_and_its_posts_are_refused(platform):
    task = platform.client.submit({"taskType": "SHELL", "payload": "echo hi"})[0]
    platform.dead_letters.add("{}", "empty")
    with TestClient(platform.app(SECURED), base_url=BASE) as client:
        client.post("/ui/login", data={"apiKey": "reader-key-for-tests"}, headers=SAME_ORIGIN)
        listing = client.get("/ui/tasks").text
        assert task.task_id in listing
        assert "Cancel selected" not in listing and 'name="taskId"' not in listing
        page = client.get(f"/ui/tasks/{task.task_id}").text
        assert "Cancel task" not in page
        assert "/requeue" not in client.get("/ui/dead-letters").text
        platform.schedules.create(
            validate_schedule(
                {
                    "name": "nightly",
                    "schedule": "30 2 * * *",
                    "task": {"taskType": "SHELL", "payload": "echo"},
                }
            ),
            0.0,
            0.0,
        )
        schedules = client.get("/ui/schedules").text
        assert "nightly" in schedules
        assert "/pause" not in schedules and "Create schedule" not in schedules
        forbidden = client.post("/ui/schedules/nightly/delete", headers=SAME_ORIGIN)
        assert forbidden.status_code == 403 and platform.schedules.get("nightly") is not None
        refused = client.post(f"/ui/tasks/{task.task_id}/cancel", headers=SAME_ORIGIN)
        assert refused.status_code == 403 and "TaskWrite" in refused.text
        assert platform.store.get(task.task_id).status == TaskStatus.PENDING


def test_a_task_that_does_not_exist_is_a_404_page_and_its_event_stream_never_starts(console):
    missing = "00000000-0000-4000-8000-000000000000"
    page = console.get(f"/ui/tasks/{missing}")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert f"no task {missing}" in page.text
    assert console.get(f"/ui/tasks/{missing}/events").status_code == 404


def test_with_redis_away_the_dead_letters_are_a_503_not_an_error(platform):
    class Away(InMemoryDeadLetterBox):
        def list(self, limit):
            raise RedisConnectionError("Connection refused")

    app = create_app(OFFLINE, platform.tasks, Away(), lambda: platform.cluster)
    with TestClient(app, base_url=BASE) as client:
        rest = client.get("/api/v1/dead-letters")
        assert rest.status_code == 503 and rest.json()["type"] == "/problems/service-unavailable"
        page = client.get("/ui/dead-letters")
        assert page.status_code == 503 and "Redis: Connection refused" in page.text


def test_the_same_rendered_form_posted_twice_makes_one_task(console, platform):
    # Given one rendering of the form (its hidden key), posted twice: a double click
    form = console.get("/ui/submit").text
    key = form.split('name="formKey" value="', 1)[1].split('"', 1)[0]
    first = submit(console, formKey=key)
    again = submit(console, formKey=key)
    # Then both lead to the same task, and only one exists
    assert first.headers["location"] == again.headers["location"]
    assert len(platform.store.tasks) == 1
    # ...while a new rendering of the form is a new task
    fresh = console.get("/ui/submit").text.split('name="formKey" value="', 1)[1][:32]
    assert submit(console, formKey=fresh).headers["location"] != first.headers["location"]


# -- a schedule's run, a traced task ------------------------------------------------------------

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def fire_nightly(console, platform) -> str:
    """Create the `nightly` schedule and fire it once (the leader's firer, a clock two days on);
    the run's task id."""
    console.post("/ui/schedules", data=schedule_form(), headers=SAME_ORIGIN)
    clock = ManualClock(time.time() + 2 * 86400)
    ScheduleFirer(platform.schedules, platform.store, "scheduler:test", clock).tick(epoch=1)
    (run,) = platform.schedules.get("nightly").active
    return run.run_id


def test_a_schedules_run_names_its_schedule_and_fire_time_over_grpc_rest_and_its_page(
    console, platform
):
    # Given a run the schedule fired
    run_id = fire_nightly(console, platform)
    fired_for = platform.store.get(run_id).scheduled_for
    # Then gRPC carries the schedule and the fire time...
    task = platform.tasks.get_task_info(run_id).task
    assert task.schedule_id == "nightly" and task.HasField("scheduled_for")
    assert convert.seconds(task.scheduled_for) == fired_for
    # ...REST shows them, the fire time in RFC 3339...
    view = console.get(f"/api/v1/tasks/{run_id}").json()
    assert view["scheduleId"] == "nightly"
    assert view["scheduledFor"] == views_rfc3339(fired_for)
    assert view["traceId"] is None
    # ...the listing finds the schedule's runs by its name...
    listed = console.get("/api/v1/tasks", params={"scheduleId": "nightly"}).json()["items"]
    assert [t["taskId"] for t in listed] == [run_id]
    assert console.get("/api/v1/tasks", params={"scheduleId": "other"}).json()["items"] == []
    # ...and the task page links the schedule's page and its other runs, which list it
    page = console.get(f"/ui/tasks/{run_id}").text
    assert 'href="/ui/schedules/nightly"' in page and 'href="/ui/tasks?schedule=nightly"' in page
    assert 'href="/ui/tasks?schedule=nightly"' in console.get("/ui/schedules/nightly").text
    runs = console.get("/ui/tasks?schedule=nightly").text
    assert run_id in runs and 'value="nightly"' in runs


def views_rfc3339(seconds: float) -> str:
    return convert_rfc3339(convert.timestamp(seconds))


def test_a_traced_task_shows_its_trace_id_and_a_plain_one_shows_none(console, platform):
    spec = TaskSpec(task_type=TaskType.SHELL, payload="echo traced")
    traced, _ = platform.store.submit(spec, traceparent=TRACEPARENT)
    plain, _ = platform.store.submit(TaskSpec(task_type=TaskType.SHELL, payload="echo plain"))
    trace_id = TRACEPARENT.split("-")[1]
    assert platform.tasks.get_task_info(traced.task_id).task.trace_id == trace_id
    assert console.get(f"/api/v1/tasks/{traced.task_id}").json()["traceId"] == trace_id
    assert (
        f'<code id="task-trace">{trace_id}</code>'
        in console.get(f"/ui/tasks/{traced.task_id}").text
    )
    # A task neither fired nor traced: null in REST, absent in gRPC, nothing on its page
    grpc_plain = platform.tasks.get_task_info(plain.task_id).task
    assert grpc_plain.trace_id == "" and not grpc_plain.HasField("scheduled_for")
    view = console.get(f"/api/v1/tasks/{plain.task_id}").json()
    assert (view["scheduleId"], view["scheduledFor"], view["traceId"]) == (None, None, None)
    page = console.get(f"/ui/tasks/{plain.task_id}").text
    assert "task-trace" not in page and "task-schedule" not in page


# -- the bus's dead letters ------------------------------------------------------------------------


def bus_letter(offset: int, at: float) -> BusDeadLetter:
    return BusDeadLetter(
        partition=0,
        offset=offset,
        key="3f1c9a52",
        message='{"taskId":"3f1c9a52","status":"SUCCES"}',
        reason="not a status event: status: unknown 'SUCCES'",
        group="tasklab-manager",
        original_topic="task-status-update-topic",
        original_partition=3,
        original_offset=1042,
        at=at,
    )


def test_the_buss_dead_letters_are_listed_beside_the_redis_ones_without_a_requeue(
    console, platform
):
    # Given one dead letter on the Redis list and one on the bus's topic, newer
    redis_entry = platform.dead_letters.add('{"taskType":"RUBY"}', "unknown taskType 'RUBY'")
    platform.bus.entries.append(bus_letter(17, time.time() + 60))
    # Then the page shows both, the bus's first, with where it was refused and no requeue
    page = console.get("/ui/dead-letters").text
    assert page.index('id="dl-bus-0-17"') < page.index(f'id="dl-redis-{redis_entry}"')
    bus_row = page[page.index('id="dl-bus-0-17"') :].split("</tr>")[0]
    assert "task-status-update-topic [3]@1042" in bus_row and "unknown &#39;SUCCES&#39;" in bus_row
    assert "tasklab-manager" in bus_row and "/requeue" not in bus_row
    assert f"/ui/dead-letters/{redis_entry}/requeue" in page
    # ...and REST lists the bus's with ?box=bus, the Redis list's by default
    bus = console.get("/api/v1/dead-letters", params={"box": "bus"}).json()
    assert bus["box"] == "bus" and bus["total"] == 1 and bus["note"] is None
    (item,) = bus["items"]
    assert (item["entryId"], item["topic"], item["partition"], item["offset"]) == (
        "0@17",
        "task-status-update-topic",
        3,
        1042,
    )
    assert item["box"] == "bus" and item["actor"] == "tasklab-manager" and item["key"] == "3f1c9a52"
    redis = console.get("/api/v1/dead-letters").json()
    assert redis["box"] == "redis" and [i["entryId"] for i in redis["items"]] == [redis_entry]
    assert console.get("/api/v1/dead-letters", params={"box": "kafka"}).status_code == 422


def test_a_bus_that_does_not_answer_is_a_note_on_the_page_and_a_503_over_rest(console, platform):
    platform.dead_letters.add('{"taskType":"RUBY"}', "unknown taskType 'RUBY'")
    platform.bus.down = True
    page = console.get("/ui/dead-letters")
    assert page.status_code == 200 and "unknown taskType" in page.text, "the list still shows"
    assert "The event bus did not answer: Kafka: Local: Broker transport failure" in page.text
    rest = console.get("/api/v1/dead-letters", params={"box": "bus"})
    assert rest.status_code == 503 and rest.headers["retry-after"] == "2"


def test_with_no_bus_configured_the_page_and_rest_say_so_instead_of_failing(platform):
    app = create_app(
        OFFLINE.model_copy(update={"kafka_bootstrap": ""}),
        platform.tasks,
        platform.dead_letters,
        lambda: platform.cluster,
    )
    with TestClient(app, base_url=BASE) as client:
        assert isinstance(app.state.backends.bus_dead_letters, NoBusDeadLetters)
        page = client.get("/ui/dead-letters")
        assert page.status_code == 200
        assert "no Kafka event bus is configured" in page.text
        rest = client.get("/api/v1/dead-letters", params={"box": "bus"}).json()
        assert rest["items"] == [] and "no Kafka event bus is configured" in rest["note"]
