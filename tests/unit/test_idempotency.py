"""What "the same request" means for an idempotency key: the normalised spec, fingerprinted.

Two bodies that would create the same task share a fingerprint (defaults spelled out or left
out, the type in any case); any change to what would run, or how, changes it. The in-memory
store applies the rule as submit.lua does (tests/stage1_mvp/test_idempotency_redis.py runs it
on Redis)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.adapters.memory_store import InMemoryTaskStore
from common.client import IdempotencyConflict, TaskClient
from common.domain.idempotency import (
    normalised,
    request_fingerprint,
    retry_fingerprint,
    spec_fingerprint,
)
from common.domain.task import validate_spec
from common.domain.transitions import TaskStatus

payloads = st.text(min_size=1, max_size=50).filter(lambda s: s.strip() and "\x00" not in s)
names = st.text(max_size=30).filter(lambda s: "\x00" not in s)
bodies = st.fixed_dictionaries(
    {
        "taskType": st.sampled_from(["SHELL", "PYTHON_SCRIPT"]),
        "payload": payloads,
        "executionTimeout": st.integers(1, 86400),
        "retryCount": st.integers(0, 10),
        "taskName": names,
    }
)


def spec(body: dict):
    try:
        return validate_spec(body)
    except ValueError:
        return None


@given(bodies, st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s))
def test_the_request_id_and_the_spelling_of_defaults_do_not_change_the_fingerprint(body, rid):
    first = spec(body)
    if first is None:
        return  # a body the validator refuses never reaches a store
    spelled = {**body, "taskType": body["taskType"].lower(), "requestId": rid}
    if not body["taskName"]:
        spelled.pop("taskName")
    if body["executionTimeout"] == 60:
        spelled.pop("executionTimeout")
    if body["retryCount"] == 0:
        spelled.pop("retryCount")
    assert spec_fingerprint(spec(spelled)) == spec_fingerprint(first)


@given(bodies, bodies)
def test_bodies_share_a_fingerprint_exactly_when_they_would_create_the_same_task(a, b):
    sa, sb = spec(a), spec(b)
    if sa is None or sb is None:
        return
    same_task = normalised(sa) == normalised(sb)
    assert (spec_fingerprint(sa) == spec_fingerprint(sb)) == same_task


@pytest.mark.parametrize(
    "change",
    [
        {"payload": "echo hi "},  # whitespace is part of a shell command
        {"taskType": "PYTHON_SCRIPT"},
        {"executionTimeout": 61},
        {"retryCount": 1},
        {"taskName": "another name"},
    ],
)
def test_each_field_of_the_spec_is_part_of_the_fingerprint(change):
    body = {"taskType": "SHELL", "payload": "echo hi"}
    assert spec_fingerprint(spec({**body, **change})) != spec_fingerprint(spec(body))


def test_a_default_name_equals_the_same_name_given():
    given_name = spec({"taskType": "SHELL", "payload": "echo hi\nexit 0", "taskName": "echo hi"})
    derived = spec({"taskType": "SHELL", "payload": "echo hi\nexit 0"})
    assert spec_fingerprint(given_name) == spec_fingerprint(derived)


@given(st.uuids(), st.uuids())
def test_a_retry_fingerprint_names_the_retried_task_and_is_never_a_submits(a, b):
    assert (retry_fingerprint(str(a)) == retry_fingerprint(str(b))) == (a == b)
    body = spec({"taskType": "SHELL", "payload": str(a)})
    assert request_fingerprint(body, retry_of=str(a)) == retry_fingerprint(str(a))
    assert request_fingerprint(body) != retry_fingerprint(str(a))


# -- the rule, on the in-memory store -------------------------------------------------------
@pytest.fixture
def client() -> TaskClient:
    return TaskClient(InMemoryTaskStore())


def test_the_same_key_and_body_return_the_first_task_and_another_body_conflicts(client):
    first, created = client.submit({"taskType": "SHELL", "payload": "true", "requestId": "k"})
    again, again_created = client.submit(
        {"taskType": "shell", "payload": "true", "requestId": "k", "executionTimeout": 60}
    )
    assert created and not again_created and again.task_id == first.task_id
    with pytest.raises(IdempotencyConflict) as err:
        client.submit({"taskType": "SHELL", "payload": "false", "requestId": "k"})
    assert err.value.task_id == first.task_id and err.value.request_id == "k"
    assert len(client.store.tasks) == 1


def test_a_retry_key_names_one_retried_task(client):
    store = client.store
    failed = []
    for _ in range(2):
        task, _ = client.submit({"taskType": "SHELL", "payload": "exit 1"})
        store.transition(task.task_id, TaskStatus.RUNNING, attempt=1, actor="t")
        store.transition(task.task_id, TaskStatus.FAILED, attempt=1, actor="t")
        failed.append(task.task_id)
    new, created = client.retry(failed[0], request_id="r")
    again, again_created = client.retry(failed[0], request_id="r")
    assert created and not again_created and again.task_id == new.task_id
    with pytest.raises(IdempotencyConflict) as err:
        client.retry(failed[1], request_id="r")
    assert err.value.task_id == new.task_id
