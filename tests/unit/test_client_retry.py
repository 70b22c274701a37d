"""TaskClient.retry: only a FAILED or CANCELLED task is retried, into a new task that records
what it retries; a requestId makes the retry itself idempotent. (In-memory store: the same
contract as Redis, tests/stage4_rpc runs it there.)"""

import pytest

from common.adapters.memory_store import InMemoryTaskStore
from common.client import NotRetryable, TaskClient
from common.domain.transitions import TaskStatus


@pytest.fixture
def client() -> TaskClient:
    return TaskClient(InMemoryTaskStore())


def _finished(client: TaskClient, status: TaskStatus) -> str:
    task, _ = client.submit({"taskType": "SHELL", "payload": "exit 1"})
    store = client.store
    assert store.transition(task.task_id, TaskStatus.RUNNING, attempt=1, actor="t").accepted
    if status == TaskStatus.CANCELLED:
        assert client.cancel(task.task_id).accepted
    else:
        assert store.transition(task.task_id, status, attempt=1, actor="t").accepted
    return task.task_id


@pytest.mark.parametrize("status", [TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_a_failed_or_cancelled_task_retries_into_a_new_task_that_names_it(client, status):
    old = _finished(client, status)
    new, created = client.retry(old)
    assert created and new.task_id != old and new.retry_of == old
    assert new.status == TaskStatus.PENDING and new.payload == "exit 1"
    assert client.get(old).status == status, "the finished task stays final"
    assert client.get(new.task_id).retry_of == old


@pytest.mark.parametrize("status", [TaskStatus.SUCCESS, TaskStatus.RUNNING, TaskStatus.PENDING])
def test_any_other_task_is_not_retryable(client, status):
    if status == TaskStatus.PENDING:
        task_id = client.submit({"taskType": "SHELL", "payload": "true"})[0].task_id
    elif status == TaskStatus.RUNNING:
        task_id = client.submit({"taskType": "SHELL", "payload": "true"})[0].task_id
        client.store.transition(task_id, TaskStatus.RUNNING, attempt=1, actor="t")
    else:
        task_id = _finished(client, status)
    with pytest.raises(NotRetryable) as err:
        client.retry(task_id)
    assert err.value.status == status.value and "FAILED or CANCELLED" in str(err.value)


def test_the_same_request_id_retries_once(client):
    old = _finished(client, TaskStatus.FAILED)
    first, created = client.retry(old, request_id="r-1")
    again, created_again = client.retry(old, request_id="r-1")
    assert created and not created_again and again.task_id == first.task_id
