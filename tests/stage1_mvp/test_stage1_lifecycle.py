"""Stage 1 on real Redis: tasks submitted by the client and pushed by hand run to the end."""

import json
import subprocess
import sys

from common import keys
from common.domain.transitions import TaskStatus
from common.testing import eventually, process_alive


def terminal(client, task_id):
    return eventually(
        lambda: (t := client.get(task_id)).is_terminal and t,
        timeout=20,
        message=f"task {task_id} terminal",
    )


def test_a_task_pushed_by_hand_with_redis_cli_runs_to_success(
    redis_url, redis_client, client, agent
):
    # Given an agent, when a learner types the brief's redis-cli command
    agent()
    port = redis_client.connection_pool.connection_kwargs["port"]
    subprocess.run(
        [
            "redis-cli",
            "-p",
            str(port),
            "LPUSH",
            "queue:pending",
            '{"taskType":"SHELL","payload":"echo hello"}',
        ],
        check=True,
        capture_output=True,
        timeout=10,
    )
    # Then a task is created for the message and runs to SUCCESS
    task_id = eventually(lambda: client.store.list_tasks(limit=1), message="task created")[
        0
    ].task_id
    task = terminal(client, task_id)
    assert task.status == TaskStatus.SUCCESS
    assert task.result == "hello\n"
    assert [h["state"] for h in client.store.history(task_id)] == ["PENDING", "RUNNING", "SUCCESS"]
    assert redis_client.llen(keys.processing("agent-1")) == 0


def test_a_failing_command_ends_failed_with_exit_code_and_error(client, agent):
    agent()
    task, _ = client.submit({"taskType": "SHELL", "payload": "echo partial; ls /nope; exit 3"})
    done = terminal(client, task.task_id)
    assert done.status == TaskStatus.FAILED
    assert done.exit_code == 3
    assert done.result == "partial\n"
    assert done.error.startswith("exit code 3: ls: cannot access")
    assert client.store.logs(task.task_id)[0] == "partial"


def test_a_timeout_kills_the_shell_and_its_children(client, agent, tmp_path):
    agent()
    pidfile = tmp_path / "child.pid"
    task, _ = client.submit(
        {
            "taskType": "SHELL",
            "executionTimeout": 1,
            "payload": f"sleep 120 & echo $! > {pidfile}; sleep 120",
        }
    )
    done = terminal(client, task.task_id)
    assert done.status == TaskStatus.FAILED
    assert "timed out after 1s" in done.error
    child = int(pidfile.read_text())

    eventually(
        lambda: not process_alive(child),
        timeout=5,
        message="the shell's background child was killed",
    )


def test_a_failing_task_is_retried_with_backoff_until_it_succeeds(client, agent, tmp_path):
    agent()
    counter = tmp_path / "runs"
    # Fails on the first two runs, succeeds on the third.
    payload = f"echo x >> {counter}; [ $(wc -l < {counter}) -ge 3 ]"
    task, _ = client.submit({"taskType": "SHELL", "payload": payload, "retryCount": 3})
    done = terminal(client, task.task_id)
    assert done.status == TaskStatus.SUCCESS
    assert done.attempt == 3
    assert counter.read_text().count("x") == 3
    retries = [
        h for h in client.store.history(task.task_id) if h.get("reason", "").startswith("retry")
    ]
    assert [h["attempt"] for h in retries] == [2, 3]


def test_retries_stop_at_retry_count(client, agent):
    agent()
    task, _ = client.submit({"taskType": "SHELL", "payload": "exit 1", "retryCount": 2})
    done = terminal(client, task.task_id)
    assert (done.status, done.attempt) == (TaskStatus.FAILED, 3)


def test_a_poisoned_message_is_dead_lettered_and_the_agent_keeps_running(
    redis_client, client, agent
):
    proc = agent()
    redis_client.lpush(keys.PENDING_QUEUE, "{not json")
    redis_client.lpush(keys.PENDING_QUEUE, '{"taskType":"COBOL","payload":"DISPLAY 1"}')
    task, _ = client.submit({"taskType": "SHELL", "payload": "echo still alive"})
    assert terminal(client, task.task_id).status == TaskStatus.SUCCESS
    dead = [json.loads(x) for x in redis_client.lrange(keys.DEAD_LETTER, 0, -1)]
    assert {d["message"] for d in dead} == {
        "{not json",
        '{"taskType":"COBOL","payload":"DISPLAY 1"}',
    }
    reasons = " | ".join(d["reason"] for d in dead)
    assert (
        "not valid JSON" in reasons and "taskType: must be one of SHELL, PYTHON_SCRIPT" in reasons
    )
    assert proc.alive()
    assert redis_client.llen(keys.processing("agent-1")) == 0


def test_an_oversized_payload_is_rejected_by_the_client_and_dead_lettered_if_pushed(
    redis_client, client, agent
):
    import pytest

    from common.domain.task import TaskValidationError

    with pytest.raises(TaskValidationError) as err:
        client.submit({"taskType": "SHELL", "payload": "echo " + "x" * 70_000})
    assert err.value.too_large
    assert redis_client.llen(keys.PENDING_QUEUE) == 0 and not client.store.list_tasks()
    agent()
    redis_client.lpush(
        keys.PENDING_QUEUE, json.dumps({"taskType": "SHELL", "payload": "echo " + "x" * 70_000})
    )
    entry = eventually(lambda: redis_client.lindex(keys.DEAD_LETTER, 0), message="dead-lettered")
    assert "over the 65536-byte limit" in json.loads(entry)["reason"]


def test_the_same_request_id_returns_the_same_task(client):
    spec = {"taskType": "SHELL", "payload": "true", "requestId": "order-42"}
    first, created_first = client.submit(spec)
    again, created_again = client.submit(spec)
    assert (created_first, created_again) == (True, False)
    assert first.task_id == again.task_id
    assert client.store.client.llen(keys.PENDING_QUEUE) == 1


def test_cancelling_a_running_task_kills_it(client, agent):
    agent()
    task, _ = client.submit({"taskType": "SHELL", "payload": "echo started; sleep 60"})
    eventually(lambda: client.get(task.task_id).status == TaskStatus.RUNNING, message="running")
    assert client.cancel(task.task_id).accepted
    eventually(
        lambda: client.store.client.llen(keys.processing("agent-1")) == 0,
        timeout=5,
        message="agent dropped the cancelled task",
    )
    assert client.get(task.task_id).status == TaskStatus.CANCELLED
    follow, _ = client.submit({"taskType": "SHELL", "payload": "echo next"})
    assert terminal(client, follow.task_id).status == TaskStatus.SUCCESS


def test_the_cli_submits_and_waits_for_the_final_state(redis_url, agent):
    agent()
    env = {"TASKLAB_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "submit", "--type", "SHELL", "echo hi", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "status:   SUCCESS" in ok.stdout and "  hi" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "submit", "--type", "SHELL", "exit 9", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "status:   FAILED" in bad.stdout
    invalid = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "submit", "--timeout", "0", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert invalid.returncode == 2
    assert invalid.stderr.strip() == (
        "error: invalid task: executionTimeout: Input should be greater than or equal to 1"
    )
