"""The task lifecycle contract every stage honours, whatever carries the tasks.

Every test here only submits tasks and reads them back, so one platform per stage serves the
whole module (`shared_platform`): each test finds its tasks by its own ids and request ids, and
reads counters as what changed during the test.
"""

import json

import pytest

from common import keys
from common.client import IdempotencyConflict
from common.domain.task import Task
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.testing import eventually, process_alive


@pytest.fixture
def platform(shared_platform):
    """The module's platform of the test's stage; what its roles logged during this test is
    printed when the test ends, so a failure shows its own part of the logs."""
    marks = shared_platform.log_marks()
    yield shared_platform
    shared_platform.print_logs_since(marks)


def task_ids(platform) -> set[bytes]:
    return set(platform.client.store.client.zrange(keys.TASK_INDEX, 0, -1))


def created_after(platform, before: set[bytes], message: str) -> Task:
    """The newest task that was not there before (a hand-pushed message's task): the platform
    has run the module's earlier tests' tasks too."""
    return eventually(
        lambda: [
            t
            for t in platform.client.store.list_tasks(limit=len(before) + 1)
            if t.task_id.encode() not in before
        ],
        message=message,
    )[0]


def finished(platform, task_id, timeout=30):
    return eventually(
        lambda: (t := platform.client.get(task_id)).is_terminal and t,
        timeout=timeout,
        message=f"task {task_id} finished",
    )


def test_a_submitted_task_runs_to_success_with_its_output_and_timeline(platform):
    task, created = platform.client.submit({"taskType": "SHELL", "payload": "echo one; echo two"})
    assert created and task.status == TaskStatus.PENDING
    done = finished(platform, task.task_id)
    assert done.status == TaskStatus.SUCCESS and done.exit_code == 0
    assert done.result == "one\ntwo\n"
    eventually(
        lambda: platform.client.store.logs(task.task_id) == ["one", "two"],
        message="log lines stored in order",
    )
    states = [h["state"] for h in platform.client.store.history(task.task_id)]
    assert states[0] == "PENDING" and states[-2:] == ["RUNNING", "SUCCESS"]


def test_a_python_script_task_runs_to_success(platform):
    task, _ = platform.client.submit({"taskType": "PYTHON_SCRIPT", "payload": "print(6 * 7)"})
    done = finished(platform, task.task_id)
    assert (done.status, done.result) == (TaskStatus.SUCCESS, "42\n")


def test_a_handler_task_runs_to_success_with_the_functions_return_value(platform):
    # The test profile registers the example handlers with every stage's agents.
    payload = {"handler": "common.examples.handlers:add", "args": {"a": 40, "b": 2}}
    task, _ = platform.client.submit({"taskType": "HANDLER", "payload": json.dumps(payload)})
    done = finished(platform, task.task_id)
    assert (done.status, json.loads(done.result)) == (TaskStatus.SUCCESS, {"sum": 42})


def test_a_failing_task_ends_failed_after_its_retries(platform):
    task, _ = platform.client.submit({"taskType": "SHELL", "payload": "exit 5", "retryCount": 1})
    done = finished(platform, task.task_id)
    assert (done.status, done.exit_code, done.attempt) == (TaskStatus.FAILED, 5, 2)


def test_a_hand_pushed_message_runs_to_success(platform):
    before = task_ids(platform)
    platform.client.store.client.lpush(
        keys.PENDING_QUEUE, json.dumps({"taskType": "SHELL", "payload": "echo by hand"})
    )
    task = created_after(platform, before, message="task created")
    done = finished(platform, task.task_id)
    assert (done.status, done.result) == (TaskStatus.SUCCESS, "by hand\n")


def test_a_running_task_can_be_cancelled_and_is_really_killed(platform, tmp_path):
    pidfile = tmp_path / "task.pid"
    task, _ = platform.client.submit(
        {"taskType": "SHELL", "payload": f"echo $$ > {pidfile}; sleep 60"}
    )
    eventually(
        lambda: (
            platform.client.get(task.task_id).status == TaskStatus.RUNNING
            and pidfile.exists()
            and pidfile.read_text().strip()
        ),
        timeout=30,
        message="running",
    )
    pid = int(pidfile.read_text())
    assert platform.client.cancel(task.task_id).accepted
    assert platform.client.get(task.task_id).status == TaskStatus.CANCELLED
    eventually(lambda: not process_alive(pid), timeout=10, message="the task's process killed")


def test_a_burst_of_tasks_all_finish_exactly_once(platform):
    ids = [
        platform.client.submit({"taskType": "SHELL", "payload": f"echo {n}"})[0].task_id
        for n in range(60)
    ]
    for task_id in ids:
        done = finished(platform, task_id, timeout=60)
        assert done.status == TaskStatus.SUCCESS
        runs = [h for h in platform.client.store.history(task_id) if h["state"] == "RUNNING"]
        assert len(runs) == 1
    assert all(platform.client.get(t).status in TERMINAL_STATES for t in ids)


def test_one_request_id_is_one_task_on_every_entry_path(platform):
    # Given a task submitted with a requestId, and the same requestId pushed by hand twice
    duplicates_before = platform.client.store.stats().get("duplicate_request", 0)
    request = {"taskType": "SHELL", "payload": "echo once", "requestId": "order-42"}
    task, created = platform.client.submit(request)
    again, created_again = platform.client.submit(request)
    for _ in range(2):
        platform.client.store.client.lpush(keys.PENDING_QUEUE, json.dumps(request))
    other = {**request, "requestId": "order-43"}
    platform.client.store.client.lpush(keys.PENDING_QUEUE, json.dumps(other))
    # Then the submit was idempotent, the hand-pushed copies made no second task, and a
    # different requestId did make one
    assert created and not created_again and again.task_id == task.task_id
    done = finished(platform, task.task_id)
    assert (done.status, done.result) == (TaskStatus.SUCCESS, "once\n")
    second = eventually(
        lambda: next(
            (t for t in platform.client.store.list_tasks(limit=10) if t.request_id == "order-43"),
            None,
        ),
        message="order-43 created",
    )
    assert finished(platform, second.task_id).status == TaskStatus.SUCCESS
    eventually(
        lambda: platform.client.store.stats().get("duplicate_request", 0) - duplicates_before == 2,
        message="both hand-pushed copies recognised as duplicates",
    )
    mine = [t for t in platform.client.store.list_tasks(limit=10) if t.request_id == "order-42"]
    assert [t.task_id for t in mine] == [task.task_id]


def test_a_request_id_is_one_request_whether_submitted_or_pushed_by_hand(platform):
    store = platform.client.store
    conflicts_before = store.stats().get("idempotency_conflict", 0)
    # Given a task created from a hand-pushed message with a requestId (no name: it is derived)
    by_hand = {"taskType": "SHELL", "payload": "echo by hand", "requestId": "hand-1"}
    store.client.lpush(keys.PENDING_QUEUE, json.dumps(by_hand))
    task = eventually(
        lambda: next((t for t in store.list_tasks(limit=10) if t.request_id == "hand-1"), None),
        message="hand-1 created",
    )
    # Then a submit of the same request is that task, and of another request a conflict
    again, created = platform.client.submit({**by_hand, "taskName": "echo by hand"})
    assert not created and again.task_id == task.task_id
    with pytest.raises(IdempotencyConflict) as err:
        platform.client.submit({**by_hand, "payload": "echo other"})
    assert err.value.task_id == task.task_id
    # And a message pushed by hand with a submitted task's requestId but another command is
    # dead-lettered with the reason, never run and never dropped silently
    submitted, _ = platform.client.submit(
        {"taskType": "SHELL", "payload": "true", "requestId": "api-1"}
    )
    wrong = {"taskType": "SHELL", "payload": "echo not this", "requestId": "api-1"}
    store.client.lpush(keys.PENDING_QUEUE, json.dumps(wrong))

    def dead_letter() -> dict:
        entries = [json.loads(e) for e in store.client.lrange(keys.DEAD_LETTER, 0, -1)]
        mine = [e for e in entries if json.loads(e["message"]) == wrong]
        assert mine, entries
        return mine[0]

    reason = eventually(dead_letter, message="the conflicting message dead-lettered")["reason"]
    assert "api-1" in reason and submitted.task_id in reason and "different request" in reason
    assert store.stats().get("idempotency_conflict", 0) - conflicts_before == 1
    assert finished(platform, task.task_id).status == TaskStatus.SUCCESS
    assert [t.task_id for t in store.list_tasks(limit=10) if t.request_id == "api-1"] == [
        submitted.task_id
    ]


def test_a_hand_pushed_message_carrying_platform_fields_still_runs(platform):
    # Given a message that carries fields only the platform sets (an attempt, an epoch, a
    # status): a client cannot set them, so they are ignored, never trusted or fatal
    message = {
        "taskType": "SHELL",
        "payload": "echo mine",
        "attempt": 3,
        "epoch": 7,
        "status": "SUCCESS",
    }
    before = task_ids(platform)
    platform.client.store.client.lpush(keys.PENDING_QUEUE, json.dumps(message))
    # Then it runs, as attempt 1 of a new task
    task = created_after(platform, before, message="created")
    done = finished(platform, task.task_id)
    assert (done.status, done.attempt, done.result) == (TaskStatus.SUCCESS, 1, "mine\n")


def test_a_payload_the_compiler_refuses_fails_its_attempt_and_the_next_task_runs(platform):
    # Given Python payloads that cannot compile: a syntax error, and nesting deeper than the
    # compiler's recursion limit
    broken = [
        platform.client.submit({"taskType": "PYTHON_SCRIPT", "payload": source})[0]
        for source in ("def (:\n", "x = " + "(" * 5000 + "1" + ")" * 5000 + "\n")
    ]
    # Then each attempt ends FAILED with the compiler's reason, never stuck RUNNING
    for task in broken:
        done = finished(platform, task.task_id)
        assert (done.status, done.attempt) == (TaskStatus.FAILED, 1)
        assert done.error
    # And the warm workers that refused them still run the next task
    ok, _ = platform.client.submit({"taskType": "PYTHON_SCRIPT", "payload": "print('still here')"})
    assert finished(platform, ok.task_id).result == "still here\n"
