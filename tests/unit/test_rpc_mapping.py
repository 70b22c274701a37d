"""gRPC <-> domain mapping without a server: requests to the validator's dict, domain errors
to status codes with their rich details, and the List cursor."""

import pytest

pytest.importorskip("grpc", reason="the stage4 extra is not installed")

from google.rpc import code_pb2, error_details_pb2  # noqa: E402
from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: E402

from common.client import IdempotencyConflict, NotRetryable, TaskNotFound  # noqa: E402
from common.domain.task import Task, TaskSpec, TaskType, TaskValidationError  # noqa: E402
from common.rpc import convert, errors  # noqa: E402
from common.rpc.gen import task_service_pb2 as pb  # noqa: E402
from common.rpc.listing import BadCursor, decode_cursor, encode_cursor  # noqa: E402


def test_unset_optional_fields_are_left_to_the_domain_defaults():
    data = convert.submit_data(pb.SubmitRequest(task_type=pb.SHELL, payload="true"))
    assert data == {"taskName": "", "taskType": "SHELL", "payload": "true"}


def test_an_explicit_zero_timeout_reaches_the_validator():
    data = convert.submit_data(
        pb.SubmitRequest(task_type=pb.SHELL, payload="x", execution_timeout=0, retry_count=0)
    )
    assert data["executionTimeout"] == 0 and data["retryCount"] == 0


def test_an_unknown_enum_number_is_passed_on_for_the_validator_to_name():
    assert convert.submit_data(pb.SubmitRequest(task_type=42, payload="x"))["taskType"] == 42


def test_a_task_round_trips_its_fields_and_retry_of():
    task = Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi"), retry_of="old-id")
    wire = convert.task(task)
    assert wire.task_id == task.task_id and wire.retry_of == "old-id"
    assert wire.status == pb.PENDING and not wire.HasField("exit_code")
    assert abs(convert.seconds(wire.created_at) - task.created_at) < 1e-6
    assert Task.from_hash(task.to_hash()).retry_of == "old-id"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (TaskValidationError(["payload: must not be blank"]), code_pb2.INVALID_ARGUMENT),
        (TaskValidationError(["payload: too big"], too_large=True), code_pb2.RESOURCE_EXHAUSTED),
        (TaskNotFound("t1"), code_pb2.NOT_FOUND),
        (NotRetryable("t1", "RUNNING"), code_pb2.FAILED_PRECONDITION),
        (RedisConnectionError("refused"), code_pb2.UNAVAILABLE),
        (IdempotencyConflict("k", "t1"), code_pb2.ALREADY_EXISTS),
    ],
)
def test_each_domain_error_has_its_status_code(error, code):
    assert errors.status_of(error).code == code


def test_an_idempotency_conflict_names_the_task_that_owns_the_key_in_error_info():
    status = errors.status_of(IdempotencyConflict("k-1", "t-1"))
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert (info.reason, info.domain) == ("IDEMPOTENCY_CONFLICT", "tasklab.dev")
    assert dict(info.metadata) == {"taskId": "t-1", "requestId": "k-1"}


def test_an_unexpected_error_is_not_mapped():
    assert errors.status_of(KeyError("bug")) is None


def test_every_problem_becomes_one_field_violation():
    bad = errors.field_violations(["taskType: is required", "payload: must not be blank", "odd"])
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("taskType", "is required"),
        ("payload", "must not be blank"),
        ("task", "odd"),
    ]
    status = errors.status_of(TaskValidationError(["a: b"]))
    assert status.details[0].Is(error_details_pb2.BadRequest.DESCRIPTOR)


def test_a_cursor_round_trips_and_a_forged_one_is_refused():
    assert decode_cursor(encode_cursor(1795981634.4259286, "abc")) == (1795981634.4259286, "abc")
    with pytest.raises(BadCursor):
        decode_cursor("not-a-cursor")
