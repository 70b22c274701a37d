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
