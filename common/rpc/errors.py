"""Domain errors -> gRPC status codes, with google.rpc rich error details.

One table for every method, so a client (the proxy, the REST API, the Java client) can rely on
the code alone: INVALID_ARGUMENT is "fix the request", UNAVAILABLE is "try again, elsewhere",
FAILED_PRECONDITION is "the task is not in a state for that", and so on. The details travel as
a google.rpc.Status in the `grpc-status-details-bin` trailer (grpcio-status), which every gRPC
language reads.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from redis.exceptions import RedisError

from common.client import IdempotencyConflict, NotRetryable, TaskNotFound
from common.domain.task import TaskValidationError
from common.ports.schedule import ScheduleExists, ScheduleNotFound

DOMAIN = "tasklab.dev"


def field_violations(problems: list[str]) -> error_details_pb2.BadRequest:
    """Each problem "field: what is wrong" as one BadRequest field violation."""
    bad = error_details_pb2.BadRequest()
    for problem in problems:
        field, sep, description = problem.partition(": ")
        if not sep:
            field, description = "task", problem
        bad.field_violations.add(field=field, description=description)
    return bad


def _status(code: int, message: str, *details) -> status_pb2.Status:
    packed = []
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)
        packed.append(wrapped)
    return status_pb2.Status(code=code, message=message, details=packed)


def precondition(task_id: str, status: str, message: str) -> status_pb2.Status:
    failure = error_details_pb2.PreconditionFailure()
    failure.violations.add(type="TASK_STATE", subject=f"tasks/{task_id}", description=status)
    return _status(code_pb2.FAILED_PRECONDITION, message, failure)


def not_found(task_id: str) -> status_pb2.Status:
    info = error_details_pb2.ResourceInfo(
        resource_type="tasklab.v1.Task", resource_name=f"tasks/{task_id}"
    )
    return _status(code_pb2.NOT_FOUND, f"no task {task_id}", info)


IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
SCHEDULE_EXISTS = "SCHEDULE_EXISTS"
SCHEDULE_RESOURCE = "tasklab.v1.Schedule"


def schedule_not_found(name: str) -> status_pb2.Status:
    info = error_details_pb2.ResourceInfo(
        resource_type=SCHEDULE_RESOURCE, resource_name=f"schedules/{name}"
    )
    return _status(code_pb2.NOT_FOUND, f"no schedule {name}", info)


def schedule_exists(exc: ScheduleExists) -> status_pb2.Status:
    """ALREADY_EXISTS: a schedule of that name exists (ErrorInfo SCHEDULE_EXISTS)."""
    info = error_details_pb2.ErrorInfo(
        reason=SCHEDULE_EXISTS, domain=DOMAIN, metadata={"name": exc.name}
    )
    return _status(code_pb2.ALREADY_EXISTS, str(exc), info)


def idempotency_conflict(exc: IdempotencyConflict) -> status_pb2.Status:
    """ALREADY_EXISTS: the request id names a task made from a different request.

    ErrorInfo carries the task that owns the key, so a client can fetch it (or see its own
    mistake) without parsing the message; the REST API turns it into a 409 problem."""
    info = error_details_pb2.ErrorInfo(
        reason=IDEMPOTENCY_CONFLICT,
        domain=DOMAIN,
        metadata={"taskId": exc.task_id, "requestId": exc.request_id},
    )
    return _status(code_pb2.ALREADY_EXISTS, str(exc), info)


class Failure(Exception):
    """Raised inside a servicer method to end the call with this status."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


def deadline_exceeded(message: str) -> status_pb2.Status:
    return _status(code_pb2.DEADLINE_EXCEEDED, message)


# --8<-- [start:status-of]
def status_of(exc: BaseException) -> status_pb2.Status | None:
    """The status a domain or backing-service error maps to; None if it is not one of ours."""
    if isinstance(exc, Failure):
        return exc.status
    if isinstance(exc, TaskValidationError):
        code = code_pb2.RESOURCE_EXHAUSTED if exc.too_large else code_pb2.INVALID_ARGUMENT
        return _status(code, str(exc), field_violations(exc.problems))
    if isinstance(exc, TaskNotFound):
        return not_found(exc.task_id)
    if isinstance(exc, NotRetryable):
        return precondition(exc.task_id, exc.status, str(exc))
    if isinstance(exc, IdempotencyConflict):
        return idempotency_conflict(exc)
    if isinstance(exc, ScheduleExists):
        return schedule_exists(exc)
    if isinstance(exc, ScheduleNotFound):
        return schedule_not_found(exc.name)
    if isinstance(exc, RedisError):
        # Redis down or not answering: nothing was half-done (every write is one script), and
        # the call may succeed on retry. RetryInfo tells clients how soon.
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(500)
        return _status(code_pb2.UNAVAILABLE, f"the task store is unavailable: {exc}", retry)
    return None


# --8<-- [end:status-of]


def abort(context: grpc.ServicerContext, status: status_pb2.Status) -> None:
    """End the call with `status` and its details (raises, as context.abort does)."""
    context.abort_with_status(rpc_status.to_status(status))


def details_of(error: grpc.RpcError) -> list:
    """The rich details of a failed call, unpacked (BadRequest, PreconditionFailure, ...)."""
    status = rpc_status.from_call(error)
    if status is None:
        return []
    out = []
    for detail in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.ResourceInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.ErrorInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                msg = kind()
                detail.Unpack(msg)
                out.append(msg)
    return out
