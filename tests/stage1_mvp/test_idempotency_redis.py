"""Idempotency keys on real Redis: one key is one task, and a different request under a used
key is refused inside submit.lua, atomically with the create."""

import threading

import pytest

from common import keys
from common.client import IdempotencyConflict
from common.domain.transitions import TaskStatus

BODY = {"taskType": "SHELL", "payload": "echo same", "requestId": "k-1"}


def task_count(redis_client) -> int:
    return redis_client.zcard(keys.TASK_INDEX)


def test_the_same_key_and_body_return_the_first_task_without_a_second(redis_client, client):
    first, created = client.submit(BODY)
    # The same request spelled differently: defaults written out, the type in lower case
    again, again_created = client.submit(
        {**BODY, "taskType": "shell", "executionTimeout": 60, "retryCount": 0}
    )
    assert created and not again_created and again.task_id == first.task_id
    assert task_count(redis_client) == 1 and redis_client.llen(keys.PENDING_QUEUE) == 1


def test_a_different_body_under_a_used_key_is_refused_naming_the_first_task(redis_client, client):
    first, _ = client.submit(BODY)
    with pytest.raises(IdempotencyConflict) as err:
        client.submit({**BODY, "payload": "echo other"})
    assert err.value.task_id == first.task_id and err.value.request_id == "k-1"
    # Nothing was created or queued by the refused submit
    assert task_count(redis_client) == 1 and redis_client.llen(keys.PENDING_QUEUE) == 1
    assert redis_client.hget(keys.request_fingerprint("k-1"), "taskId").decode() == first.task_id


def test_a_key_stored_before_fingerprints_existed_still_returns_its_task(redis_client, client):
    # Given a key as a submit wrote it before this change: request:{id} and no fingerprint
    first, _ = client.submit(BODY)
    redis_client.delete(keys.request_fingerprint("k-1"))
    # When another body comes with that key, Then it is the key's task, as it always was
    again, created = client.submit({**BODY, "payload": "echo other"})
    assert not created and again.task_id == first.task_id


def test_a_fingerprint_left_from_an_older_owner_of_the_key_is_not_compared(redis_client, client):
    # Given a key re-pointed by hand at another task, its fingerprint still naming the first
    first, _ = client.submit(BODY)
    other, _ = client.submit({"taskType": "SHELL", "payload": "echo other"})
    redis_client.set(keys.request("k-1"), other.task_id)
    # Then the stale fingerprint decides nothing: the key's task is returned
    again, created = client.submit({**BODY, "payload": "echo third"})
    assert not created and again.task_id == other.task_id


def test_a_retry_key_returns_the_same_new_task_and_refuses_another_retried_task(
    redis_client, client
):
    failed = []
    for _ in range(2):
        task, _ = client.submit({"taskType": "SHELL", "payload": "exit 1"})
        client.store.transition(task.task_id, TaskStatus.RUNNING, attempt=1, actor="t")
        client.store.transition(task.task_id, TaskStatus.FAILED, attempt=1, actor="t")
        failed.append(task.task_id)
    new, created = client.retry(failed[0], request_id="retry-1")
    again, again_created = client.retry(failed[0], request_id="retry-1")
    assert created and not again_created and again.task_id == new.task_id
    with pytest.raises(IdempotencyConflict) as err:
        client.retry(failed[1], request_id="retry-1")
    assert err.value.task_id == new.task_id
    # A key used for a submit cannot retry a task either: it names a different request
    client.submit(BODY)
    with pytest.raises(IdempotencyConflict):
        client.retry(failed[1], request_id="k-1")
    assert task_count(redis_client) == 4


def test_racing_submits_with_one_key_and_two_bodies_make_one_task_and_agree_on_it(
    redis_client, client
):
    # Given 40 threads released together, half with one body and half with another
    start = threading.Barrier(40)
    answers: list[tuple[str, str, str]] = []

    def submit(i: int) -> None:
        body = {**BODY, "payload": f"echo {i % 2}"}
        start.wait(10)
        try:
            task, _ = client.submit(body)
            answers.append(("ok", body["payload"], task.task_id))
        except IdempotencyConflict as exc:
            answers.append(("conflict", body["payload"], exc.task_id))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then there is one task; every caller was told its id; the winner's body got it,
    # the other body was refused every time
    assert len(answers) == 40 and task_count(redis_client) == 1
    (task_id,) = {tid for _, _, tid in answers}
    winner = client.get(task_id).payload
    assert {(kind, payload) for kind, payload, _ in answers} == {
        ("ok", winner),
        ("conflict", "echo 1" if winner == "echo 0" else "echo 0"),
    }
