"""The task contract: validation that names every problem, defaults, the queue message."""

import json

import pytest

from common.domain.task import (
    Task,
    TaskSpec,
    TaskType,
    TaskValidationError,
    parse_task_message,
    validate_spec,
)
from common.domain.transitions import TaskStatus


def test_a_hand_pushed_message_with_only_type_and_payload_gets_the_rest_filled_in():
    task_id, spec = parse_task_message('{"taskType":"SHELL","payload":"echo hello"}')
    assert task_id is None
    assert spec.task_type == TaskType.SHELL
    assert spec.execution_timeout == 60
    assert spec.retry_count == 0
    assert spec.task_name == "echo hello"


def test_validation_lists_every_problem_at_once():
    with pytest.raises(TaskValidationError) as err:
        validate_spec(
            {
                "taskType": "BASH",
                "payload": "",
                "executionTimeout": 0,
                "retryCount": 11,
                "taskName": "x" * 201,
                "colour": "blue",
            }
        )
    text = str(err.value)
    for field in ("taskType", "payload", "executionTimeout", "retryCount", "taskName", "colour"):
        assert field in text
    assert len(err.value.problems) == 6
    assert "SHELL, PYTHON_SCRIPT" in text


def test_an_oversized_payload_is_rejected_and_flagged_as_too_large():
    with pytest.raises(TaskValidationError) as err:
        validate_spec({"taskType": "SHELL", "payload": "x" * 70_000})
    assert err.value.too_large
    assert "70000 bytes is over the 65536-byte limit" in str(err.value)


def test_a_message_that_is_not_json_or_not_an_object_is_a_validation_error():
    for raw in ("not json", "[1, 2]", '"text"', b"\xff\xfe"):
        with pytest.raises(TaskValidationError):
            parse_task_message(raw)


def test_a_message_taskid_must_be_a_uuid():
    with pytest.raises(TaskValidationError, match="taskId: must be a UUID"):
        parse_task_message('{"taskId":"nope","taskType":"SHELL","payload":"true"}')


def test_platform_fields_on_a_requeued_message_are_ignored_not_rejected():
    task_id, spec = parse_task_message(
        json.dumps(
            {
                "taskId": "5a3b0c0e-6f5e-4b5e-9d2a-0c5a3b0c0e6f",
                "taskType": "SHELL",
                "payload": "true",
                "status": "RUNNING",
                "agentId": "a1",
            }
        )
    )
    assert task_id == "5a3b0c0e-6f5e-4b5e-9d2a-0c5a3b0c0e6f"
    assert spec.payload == "true"


def test_task_type_is_case_insensitive_on_input():
    assert validate_spec({"taskType": "python_script", "payload": "pass"}).task_type == (
        TaskType.PYTHON_SCRIPT
    )


def test_a_task_round_trips_through_its_redis_hash_and_its_queue_message():
    task = Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi", retry_count=2))
    assert Task.from_hash(task.to_hash()) == task
    task_id, spec = parse_task_message(task.to_message())
    assert task_id == task.task_id
    assert spec == task.spec


def test_a_composites_child_round_trips_through_its_hash_with_its_numbers_and_absent_fields():
    child = Task(
        task_id="5f83ad7c-cc6f-5db9-8254-c11cf4346eb5",
        task_name="count [3/8]",
        task_type=TaskType.SHELL,
        payload="wc -w",
        status=TaskStatus.WAITING,
        parent_id="303ee43e-784f-45a9-be21-30ed2d27d29c",
        role="item",
        shard_index=3,
        shard_total=8,
        input='{"text": "a b\\nc ✓"}',
    )
    stored = child.to_hash()
    # A hash holds text only; an absent field (node, pinnedAgent) is no field at all.
    assert (stored["shardIndex"], stored["shardTotal"], stored["status"]) == ("3", "8", "WAITING")
    assert "node" not in stored and "pinnedAgent" not in stored
    back = Task.from_hash(stored)
    assert back == child
    assert (back.shard_index, back.node, back.pinned_agent) == (3, None, None)
    # Its queue message is a plain task's: the scheduler and the claim scripts read the rest
    # from the hash.
    assert set(json.loads(child.to_message())) == {
        "taskName",
        "taskType",
        "payload",
        "executionTimeout",
        "retryCount",
        "taskId",
    }
