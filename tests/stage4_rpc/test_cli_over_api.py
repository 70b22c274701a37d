"""`tasklab` through the REST API, end to end: the CLI's task verbs with TASKLAB_API_URL set,
against a real `tasklab run api --stage 4` (a gRPC client of a real provider) over the stage 3
platform of this module's fixtures, with auth on (TASKLAB_API_KEYS).

The CLI is given a Redis URL where nothing listens, so a verb that still went to Redis would
fail: everything here went through the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from rpc_support import free_port

from common.domain.transitions import TaskStatus
from common.testing import eventually

pytestmark = pytest.mark.integration

KEY = "cli-key"
NOWHERE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def api_url(stage4) -> str:
    stage4.start_provider("rpc-1")
    address = f"127.0.0.1:{free_port()}"
    stage4.start(
        "api",
        "api-1",
        TASKLAB_API_ADDRESS=address,
        TASKLAB_API_KEYS=json.dumps({KEY: ["Admin"]}),
    )
    url = f"http://{address}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    eventually(ready, 30, interval=0.2, message=f"the API at {url} is ready")
    return url


def tasklab(url: str, *args: str, key: str | None = KEY, timeout: float = 60):
    env = {"TASKLAB_API_URL": url, "TASKLAB_REDIS_URL": NOWHERE_REDIS, "TASKLAB_ENV": "test"}
    if key:
        env["TASKLAB_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        env={k: v for k, v in os.environ.items() if k != "TASKLAB_API_KEY"} | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_submit_wait_then_status_logs_and_list_answer_through_the_api(api_url, stage4):
    done = tasklab(
        api_url, "submit", "echo hello-through-the-api", "--wait", "--wait-timeout", "30"
    )
    assert done.returncode == 0, done.stderr
    assert "status:   SUCCESS" in done.stdout
    task_id = done.stdout.splitlines()[0].split()[1]
    # The task is the platform's: stored in Redis by the provider, not by the CLI.
    assert stage4.tasks.get(task_id).status == TaskStatus.SUCCESS

    status = tasklab(api_url, "status", task_id)
    assert status.returncode == 0, status.stderr
    assert "timeline:" in status.stdout and " SUCCESS " in status.stdout
    logs = tasklab(api_url, "logs", task_id)
    assert logs.stdout == "hello-through-the-api\n"
    listed = tasklab(api_url, "list", "--status", "SUCCESS", "--limit", "50", "--json")
    assert task_id in [t["taskId"] for t in json.loads(listed.stdout)]


def test_a_submit_repeated_with_its_request_id_returns_the_first_task(api_url):
    first = tasklab(api_url, "submit", "true", "--request-id", "cli-over-api-1", "--json")
    second = tasklab(api_url, "submit", "true", "--request-id", "cli-over-api-1", "--json")
    assert json.loads(first.stdout)["created"] is True, first.stderr
    assert json.loads(second.stdout)["created"] is False, second.stderr
    assert json.loads(first.stdout)["taskId"] == json.loads(second.stdout)["taskId"]


def test_logs_follow_streams_a_running_tasks_lines_until_it_ends(api_url):
    script = "for i in 1 2 3 4; do echo line-$i; sleep 0.3; done"
    task_id = tasklab(api_url, "submit", script).stdout.strip()
    followed = tasklab(api_url, "logs", task_id, "--follow")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "line-1\nline-2\nline-3\nline-4\n"


def test_cancel_a_running_task_then_retry_it_through_the_api(api_url, stage4):
    task_id = tasklab(api_url, "submit", "sleep 60").stdout.strip()
    eventually(
        lambda: stage4.tasks.get(task_id).status == TaskStatus.RUNNING,
        30,
        message="the task runs",
    )
    cancelled = tasklab(api_url, "cancel", task_id)
    assert (cancelled.returncode, cancelled.stdout) == (0, "Cancel request accepted.\n")
    assert stage4.tasks.get(task_id).status == TaskStatus.CANCELLED

    retried = tasklab(api_url, "retry", task_id)
    assert retried.returncode == 0, retried.stderr
    new_id = retried.stdout.strip()
    assert stage4.tasks.get(new_id).retry_of == task_id
    tasklab(api_url, "cancel", new_id)


def test_a_finished_task_cannot_be_cancelled_and_says_so_in_one_line(api_url):
    done = tasklab(api_url, "submit", "true", "--wait", "--json")
    task_id = json.loads(done.stdout)["taskId"]
    refused = tasklab(api_url, "cancel", task_id)
    assert refused.returncode == 1
    assert len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("error: ")


def test_agents_lists_the_platforms_agents_through_the_api(api_url):
    result = tasklab(api_url, "agents", "--json")
    assert result.returncode == 0, result.stderr
    alive = {row["agentId"] for row in json.loads(result.stdout) if row["alive"]}
    assert {"agent-1", "agent-2"} <= alive


def test_problems_from_the_api_are_one_line_errors_with_the_clis_exit_codes(api_url):
    unknown = tasklab(api_url, "status", "no-such-task")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: ") and len(unknown.stderr.splitlines()) == 1
    invalid = tasklab(api_url, "submit", "", "--timeout", "0")
    assert invalid.returncode == 2
    assert "payload" in invalid.stderr and "executionTimeout" in invalid.stderr
    keyless = tasklab(api_url, "list", key=None)
    assert keyless.returncode == 1
    assert keyless.stderr.rstrip().endswith("(TASKLAB_API_KEY is not set)")


def test_an_api_that_is_not_there_is_one_line_naming_its_url():
    url = f"http://127.0.0.1:{free_port()}"
    result = tasklab(url, "list")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach the API at {url} ")
    assert len(result.stderr.splitlines()) == 1
