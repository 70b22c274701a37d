"""gRPC status (with its rich details) -> the Problem the REST API answers.

The providers say what went wrong with a status code and google.rpc details
(common/rpc/errors.py); this is the one table that turns them into HTTP, so every route maps
a failure the same way:

    INVALID_ARGUMENT -> 422 validation (BadRequest field violations -> `errors`)
    RESOURCE_EXHAUSTED -> 413, NOT_FOUND -> 404 (task-not-found, or schedule-not-found by its
    ResourceInfo), FAILED_PRECONDITION -> 409 illegal-transition, ALREADY_EXISTS -> 409
    idempotency-conflict (or schedule-exists by its ErrorInfo), UNAUTHENTICATED -> 401,
    PERMISSION_DENIED -> 403, UNAVAILABLE -> 503 (+ Retry-After from RetryInfo),
    DEADLINE_EXCEEDED -> 503.

Anything else (INTERNAL, UNKNOWN, ...) is a provider's bug: 503 unexpected-error, logged, and
never a 500 (nothing was half-done: each command is one atomic script on the provider).
"""

from __future__ import annotations

import math

import grpc
from google.rpc import error_details_pb2

from common.api import catalog
from common.api.problems import Problem, field_error
from common.observability import get_logger
from common.rpc.errors import SCHEDULE_EXISTS, SCHEDULE_RESOURCE, details_of

log = get_logger("tasklab.api")

Code = grpc.StatusCode


def _retry_after(details: list) -> int:
    for detail in details:
        if isinstance(detail, error_details_pb2.RetryInfo):
            delay = detail.retry_delay.ToMilliseconds() / 1000
            return max(1, math.ceil(delay))
    return 1


def _field_errors(details: list) -> list[dict[str, str]]:
    return [
        field_error(v.field, v.description)
        for detail in details
        if isinstance(detail, error_details_pb2.BadRequest)
        for v in detail.field_violations
    ]


def problem_from_rpc(error: grpc.RpcError) -> Problem:
    code = error.code() if hasattr(error, "code") else None
    message = error.details() if hasattr(error, "details") else str(error)
    details = details_of(error) if isinstance(error, grpc.Call) else []
    if code == Code.INVALID_ARGUMENT:
        return catalog.validation(_field_errors(details) or [field_error("", message or "")])
    if code == Code.RESOURCE_EXHAUSTED:
        return catalog.problem("payload-too-large", message, errors=_field_errors(details))
    if code == Code.NOT_FOUND:
        if any(
            isinstance(d, error_details_pb2.ResourceInfo) and d.resource_type == SCHEDULE_RESOURCE
            for d in details
        ):
            return catalog.problem("schedule-not-found", message)
        return catalog.problem("task-not-found", message)
    if code == Code.FAILED_PRECONDITION:
        return catalog.problem("illegal-transition", message)
    if code == Code.ALREADY_EXISTS:
        if any(
            isinstance(d, error_details_pb2.ErrorInfo) and d.reason == SCHEDULE_EXISTS
            for d in details
        ):
            return catalog.problem("schedule-exists", message)
        return catalog.problem("idempotency-conflict", message)
    if code == Code.UNAUTHENTICATED:
        return catalog.problem(
            "unauthenticated",
            message,
            headers={"WWW-Authenticate": 'ApiKey, Bearer realm="tasklab"'},
        )
    if code == Code.PERMISSION_DENIED:
        return catalog.problem("forbidden", message)
    if code == Code.UNAVAILABLE:
        return catalog.unavailable(message, _retry_after(details))
    if code == Code.DEADLINE_EXCEEDED:
        return catalog.problem("deadline-exceeded", message, headers={"Retry-After": "1"})
    log.error("TaskService answered %s: %s", code, message)
    return catalog.problem(
        "unexpected-error", f"the TaskService answered {code.name if code else 'an error'}"
    )
