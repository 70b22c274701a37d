"""Who may call the TaskService: the REST API's keys and tokens, checked on the gRPC path too.

A caller sends the same credentials as metadata (`x-api-key: KEY`, `authorization: Bearer
JWT`; the REST API passes its caller's on), and the same Authenticator decides. Each method
needs a role: reads TaskRead, commands TaskWrite (Admin implies both). A TaskService method not
listed needs Admin, so a method added to the .proto is closed until someone decides who may
call it. Health checking and reflection stay open: load balancers and `grpcurl list` carry no
credentials, and neither reveals a task.

Pattern: Interceptor, the gRPC form of the REST side's chain of links (introduced in stage 4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from common.rpc.gen import task_service_pb2 as pb
from common.security import Principal, Role
from common.security.authenticator import Authenticator, Unauthenticated

TASK_SERVICE_PREFIX = "/" + pb.DESCRIPTOR.services_by_name["TaskService"].full_name + "/"

METHOD_ROLES: dict[str, Role] = {
    "GetTaskInfo": Role.TASK_READ,
    "List": Role.TASK_READ,
    "Watch": Role.TASK_READ,
    "ListAgents": Role.TASK_READ,
    "Submit": Role.TASK_WRITE,
    "SubmitComposite": Role.TASK_WRITE,
    "Cancel": Role.TASK_WRITE,
    "Retry": Role.TASK_WRITE,
    "GetSchedule": Role.TASK_READ,
    "ListSchedules": Role.TASK_READ,
    "PreviewSchedule": Role.TASK_READ,
    "CreateSchedule": Role.TASK_WRITE,
    "SetScheduleSuspended": Role.TASK_WRITE,
    "DeleteSchedule": Role.TASK_WRITE,
}


def required_role(method: str) -> Role | None:
    """The role `method` (a full gRPC method name) needs, or None if it is open."""
    if not method.startswith(TASK_SERVICE_PREFIX):
        return None  # grpc.health.v1.Health, grpc.reflection.*: open
    return METHOD_ROLES.get(method.removeprefix(TASK_SERVICE_PREFIX), Role.ADMIN)


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, detail: str):
    """A handler of the same shape as `handler` that ends the call with `code`."""

    def refuse(_request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, detail)

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        refuse, handler.request_deserializer, handler.response_serializer
    )


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        role = required_role(handler_call_details.method)
        if handler is None or role is None or not self.authenticator.enabled:
            return handler
        metadata = {
            key: value
            for key, value in (handler_call_details.invocation_metadata or ())
            if isinstance(value, str)  # `-bin` metadata is bytes; no credential is binary
        }
        try:
            principal: Principal = self.authenticator.authenticate(metadata)
        except Unauthenticated as exc:
            return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, exc.reason)
        if not principal.may(role):
            held = ", ".join(sorted(principal.roles)) or "no roles"
            detail = f"{handler_call_details.method} needs the {role.value} role; "
            detail += f"{principal.name} has {held}"
            return _refusing(handler, grpc.StatusCode.PERMISSION_DENIED, detail)
        return handler
