"""The web console in a real browser (Debian's chromium, driven by Playwright) against a real
stage 4 platform: scheduler, agent, manager, a TaskService provider and two REST APIs (auth off,
and auth on with keys), as `tasklab run` processes on the session's Redis, ZooKeeper and Kafka.

Real clicks and key presses; the page's own htmx polling and Server-Sent Events carry every
live update. Each page is photographed: into this run's temporary folder, or, with
TASKLAB_CONSOLE_SCREENSHOTS=1, into docs/assets/console/ (the docs show them), so an ordinary
run never changes the tree. Chromium is the Debian package (`make system-deps`); browsers
cannot be downloaded here, so `playwright install` is never needed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import playwright.sync_api as playwright
import pytest
from confluent_kafka import Producer

from common.adapters.redis_client import redis_client
from common.messaging.clients import Bus
from common.messaging.topics import STATUS
from common.testing import eventually
from common.testing.platforms import RolePlatform, stage4_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
DOCS_SHOTS = ROOT / "docs" / "assets" / "console"
CONSOLE_DB = 6  # a Redis database of its own: other suites flush database 0 per test
KEYS = {"console-writer-key": ["TaskWrite"], "console-reader-key": ["TaskRead"]}
WAIT_MS = 30_000  # what a live update may take on two busy cores


@pytest.fixture(scope="module")
def platform(redis_service, zookeeper_service, kafka_service, tmp_path_factory):
    url = redis_service.env["TASKLAB_REDIS_URL"].rsplit("/", 1)[0] + f"/{CONSOLE_DB}"
    redis_client(url).flushdb()
    env, zk = stage4_environment(url, zookeeper_service, kafka_service, "ui")
    running = RolePlatform(env, tmp_path_factory.mktemp("console-roles"), zk)
    try:
        running.start("scheduler", "scheduler-1")
        # Room for the sleeps the tests leave running (a filter's, a guarded one's) beside
        # the task a test waits to see RUNNING: one agent, whatever order the tests run in.
        running.start("agent", "agent-1", TASKLAB_AGENT_CAPACITY="8")
        running.start("manager", "manager-1")
        running.start_provider("rpc-1")
        yield running
    finally:
        running.stop_all(tail=2000)
        zk.stop()
        zk.close()


@pytest.fixture(scope="module")
def console(platform) -> str:
    """The console of an API with auth off: its base URL."""
    return platform.start_api("api-open")


@pytest.fixture(scope="module")
def secured(platform) -> str:
    """The console of an API with auth on (API keys with roles)."""
    return platform.start_api("api-keys", TASKLAB_API_KEYS=json.dumps(KEYS))


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    with playwright.sync_playwright() as driver:
        # --no-sandbox: the tests may run as root in a container, where chromium's sandbox
        # cannot start; the pages are the test's own.
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser) -> Iterator:
    # A fresh context per test (no cookie carried over), a fixed size and clock zone so the
    # screenshots are alike run after run.
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, timezone_id="UTC", locale="en-GB"
    )
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: docs/assets/console/ when asked for, else this run's tmp dir."""
    if os.environ.get("TASKLAB_CONSOLE_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SHOTS
    return tmp_path_factory.mktemp("console-screenshots")


def expect(locator):
    return playwright.expect(locator)


playwright.expect.set_options(timeout=WAIT_MS)


def submit_rest(base: str, payload: str, name: str, **headers: str) -> str:
    answer = httpx.post(
        base + "/api/v1/tasks",
        json={"taskName": name, "taskType": "SHELL", "payload": payload},
        headers=headers,
        timeout=20,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["taskId"]


# -- tasks ------------------------------------------------------------------------------------


def test_a_task_submitted_from_the_form_reaches_success_on_its_page(console, page, shots):
    # Given the submit form
    page.goto(console + "/ui/submit")
    # When the operator fills it in and clicks Submit
    page.get_by_label("Name").fill("hello-console")
    page.get_by_label("Type").select_option("SHELL")
    page.get_by_label("Payload").fill("echo hello from the console")
    page.get_by_role("button", name="Submit task").click()
    # Then the task's page follows it live to SUCCESS, with its log line and its timeline
    page.wait_for_url("**/ui/tasks/*")
    expect(page.locator("#task-status")).to_contain_text("SUCCESS")
    expect(page.locator("#logs")).to_contain_text("hello from the console")
    expect(page.locator("#result")).to_contain_text("hello from the console")
    states = page.locator("#timeline tr td:nth-child(3)").all_inner_texts()
    assert states[0] == "PENDING" and states[-1] == "SUCCESS", states
    assert "RUNNING" in states
    epochs = page.locator("#timeline tr td:nth-child(7)").all_inner_texts()
    assert any(int(e) > 0 for e in epochs), "the scheduler's writes carry its epoch"
    page.screenshot(path=shots / "task.png", full_page=True)
    # ...and the list shows it, a link to its page
    page.goto(console + "/ui/tasks")
    expect(page.get_by_role("link", name="hello-console").first).to_be_visible()
    page.screenshot(path=shots / "tasks.png", full_page=True)


def test_a_validation_error_is_shown_next_to_its_field_as_the_rest_api_words_it(
    console, page, shots
):
    rest = httpx.post(
        console + "/api/v1/tasks",
        json={"taskType": "SHELL", "payload": "", "executionTimeout": 0},
        timeout=20,
    )
    words = {e["field"]: e["detail"] for e in rest.json()["errors"]}
    page.goto(console + "/ui/submit")
    page.get_by_label("Timeout (seconds)").fill("0")
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#executionTimeout-error")).to_have_text(words["executionTimeout"])
    expect(page.locator("#payload-error")).to_have_text(words["payload"])
    expect(page.get_by_label("Timeout (seconds)")).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=shots / "submit-errors.png", full_page=True)


def test_the_lists_filters_survive_a_reload_and_its_own_refresh(console, page):
    marker = uuid.uuid4().hex[:6]
    done = submit_rest(console, "true", f"filter-{marker}-done")
    running = submit_rest(console, "sleep 20", f"filter-{marker}-slow")
    eventually(
        lambda: httpx.get(f"{console}/api/v1/tasks/{done}").json()["status"] == "SUCCESS",
        30,
        message="the quick task finished",
    )
    page.goto(console + "/ui/tasks")
    page.get_by_label("Status").select_option("SUCCESS")
    page.get_by_label("Name contains").fill(f"filter-{marker}")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(f"**/ui/tasks?status=SUCCESS&*name=filter-{marker}*")
    page.reload()
    expect(page.get_by_label("Status")).to_have_value("SUCCESS")
    expect(page.get_by_label("Name contains")).to_have_value(f"filter-{marker}")
    # The table refreshes itself (htmx polling of the same URL): still filtered after it.
    with page.expect_response(lambda r: "status=SUCCESS" in r.url and r.status == 200):
        pass
    rows = page.locator("#task-rows")
    expect(rows).to_contain_text(f"filter-{marker}-done")
    expect(rows).not_to_contain_text(f"filter-{marker}-slow")
    httpx.delete(f"{console}/api/v1/tasks/{running}", timeout=20)


def test_a_running_task_is_cancelled_from_its_page(console, page):
    task_id = submit_rest(console, "sleep 60", "cancel-me")
    page.goto(f"{console}/ui/tasks/{task_id}")
    expect(page.locator("#task-status")).to_contain_text("RUNNING")
    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator("#task-status")).to_contain_text("CANCELLED")
    expect(page.get_by_role("button", name="Retry task")).to_be_visible()
    assert httpx.get(f"{console}/api/v1/tasks/{task_id}").json()["status"] == "CANCELLED"


def test_a_selection_is_cancelled_at_once_with_a_result_per_task(console, page):
    marker = uuid.uuid4().hex[:6]
    ids = [submit_rest(console, "sleep 60", f"bulk-{marker}-{n}") for n in range(2)]
    page.goto(f"{console}/ui/tasks?name=bulk-{marker}")
    for task_id in ids:
        page.locator(f"#sel-{task_id}").check()
    page.get_by_role("button", name="Cancel selected").click()
    results = page.locator("tbody[role=status] tr")
    expect(results).to_have_count(2)
    expect(results.first).to_contain_text("ok: cancelled")


def test_the_submit_form_works_with_the_keyboard_alone(console, page):
    page.goto(console + "/ui/submit")
    # Tab from the top: the skip link, the navigation, then the form's fields in order.
    visited = []
    for _ in range(20):
        page.keyboard.press("Tab")
        visited.append(page.evaluate("document.activeElement.id || document.activeElement.text"))
        if visited[-1] == "taskName":
            break
    assert visited[0].strip() == "Skip to content", visited
    assert visited[-1] == "taskName", visited
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused field shows its focus"
    page.keyboard.type("keyboard-only")
    page.keyboard.press("Tab")  # the type: SHELL already
    page.keyboard.press("Tab")
    page.keyboard.type("echo typed without a mouse")
    for field in ("executionTimeout", "retryCount", "requestId"):
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == field
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Submit task"
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/tasks/*")
    expect(page.locator("#task-status")).to_contain_text("SUCCESS")
    expect(page.locator("#logs")).to_contain_text("typed without a mouse")


# -- agents, dead letters ----------------------------------------------------------------------


def test_the_agents_page_shows_the_agent_and_the_leader_with_its_epoch(console, page, shots):
    page.goto(console + "/ui/agents")
    expect(page.locator("#leader")).to_contain_text("scheduler-1")
    leader = page.locator("#leader").inner_text()
    assert "epoch unknown" not in leader, leader
    row = page.get_by_role("row").filter(has_text="agent-1")
    expect(row).to_contain_text("yes")
    page.screenshot(path=shots / "agents.png", full_page=True)


def test_a_dead_letter_is_shown_with_its_reason_and_requeued_from_the_page(
    console, platform, page, shots
):
    # Given a message no agent can run, pushed by hand and dead-lettered by the scheduler
    client = redis_client(platform.env["TASKLAB_REDIS_URL"])
    client.lpush("queue:pending", "this is not a task")
    eventually(lambda: client.llen("queue:dead-letter") >= 1, 30, message="dead-lettered")
    # ...and a status message the manager cannot parse, dead-lettered on the bus's topic
    bus = Bus(platform.env["TASKLAB_KAFKA_BOOTSTRAP"], platform.env["TASKLAB_KAFKA_NAMESPACE"])
    producer = Producer({"bootstrap.servers": bus.bootstrap})
    producer.produce(bus.topic(STATUS), key=b"no-task", value=b"this is not a status event")
    assert producer.flush(10) == 0

    def on_the_bus() -> bool:
        answer = httpx.get(console + "/api/v1/dead-letters", params={"box": "bus"}, timeout=10)
        return answer.json()["total"] >= 1

    eventually(on_the_bus, 30, interval=0.5, message="dead-lettered on the bus")
    page.goto(console + "/ui/dead-letters")
    expect(page.locator("tbody")).to_contain_text("this is not a task")
    bus_row = page.locator("tbody tr", has_text="this is not a status event")
    expect(bus_row).to_contain_text(bus.topic(STATUS))
    expect(bus_row.get_by_role("button")).to_have_count(0)
    page.screenshot(path=shots / "dead-letters.png", full_page=True)
    # When the operator requeues it
    page.get_by_role("button", name="Requeue").first.click()
    # Then the page says so, and the message went back to the queue (to be refused again)
    expect(page.get_by_role("status")).to_contain_text("requeued onto queue:pending")


# -- schedules ----------------------------------------------------------------------------------


def test_a_schedule_created_from_the_form_is_listed_with_its_next_fire_and_paused(
    console, page, shots
):
    name = f"every-minute-{uuid.uuid4().hex[:6]}"
    # Given the schedules page, reached from the navigation
    page.goto(console + "/ui/tasks")
    page.get_by_role("link", name="Schedules").click()
    page.wait_for_url("**/ui/schedules")
    # When the operator fills in the form and creates the schedule
    page.get_by_label("Name").fill(name)
    page.get_by_label("Cron").fill("* * * * *")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Payload").fill("echo from a console schedule")
    page.get_by_role("button", name="Create schedule").click()
    # Then it is listed, not paused, with its next fire time (a whole minute, in UTC)
    expect(page.get_by_role("status")).to_contain_text(f"created {name}")
    row = page.locator(f"#schedule-{name}")
    expect(row).to_contain_text("* * * * *")
    expect(row).to_contain_text("Europe/Berlin")
    expect(row.locator(".suspend")).to_have_text("no")
    expect(row.locator(".next-fire")).to_contain_text(":00.000Z")
    page.screenshot(path=shots / "schedules.png", full_page=True)
    # When it is paused, the list says so and offers Resume; the REST API agrees
    row.get_by_role("button", name=f"Pause {name}").click()
    expect(page.locator(f"#schedule-{name} .suspend")).to_have_text("paused")
    expect(page.get_by_role("button", name=f"Resume {name}")).to_be_visible()
    view = httpx.get(f"{console}/api/v1/schedules/{name}", timeout=20).json()
    assert view["suspend"] is True
    httpx.delete(f"{console}/api/v1/schedules/{name}", timeout=20)


# -- login --------------------------------------------------------------------------------------


def test_login_with_an_api_key_and_what_a_read_only_key_may_do(secured, page, shots):
    task_id = submit_rest(secured, "sleep 30", "guarded", **{"X-API-Key": "console-writer-key"})
    # A visitor without a key is sent to the login form, and comes back where it was going
    page.goto(f"{secured}/ui/tasks/{task_id}")
    page.wait_for_url("**/ui/login?next=*")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#apiKey-error")).to_contain_text("unknown API key")
    page.screenshot(path=shots / "login.png", full_page=True)
    page.get_by_label("API key").fill("console-reader-key")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**/ui/tasks/{task_id}")
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    # A read-only key sees the task but no button that would change it
    expect(page.locator("#task-status")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    # ...and a POST made anyway (the form's request, replayed) is refused
    refused = page.request.post(f"{secured}/ui/tasks/{task_id}/cancel", headers={"Origin": secured})
    assert refused.status == 403
    # Log out: the key is forgotten
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/ui/login")
    assert page.context.cookies() == []
    httpx.delete(f"{secured}/api/v1/tasks/{task_id}", headers={"X-API-Key": "console-writer-key"})
