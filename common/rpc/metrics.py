"""gRPC server metrics: calls by method and status code, and how long each took.

Pattern: Interceptor (introduced in stage 4 for auth; stage 5 adds this one). Installed first,
so it wraps the auth interceptor: a call refused as UNAUTHENTICATED is counted with that code,
as a caller saw it. The method label is the full method name the server knows (a method the
server does not have never reaches an interceptor's handler, so the label set stays bounded).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from common.observability import metrics


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()
    if code is None:
        # A handler that raised without setting a code ends the call UNKNOWN, as gRPC does.
        return "UNKNOWN" if failed else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def _record(method: str, started: float, code: str) -> None:
    metrics.GRPC_REQUESTS.labels(method, code).inc()
    metrics.GRPC_DURATION.labels(method).observe(time.perf_counter() - started)


def _unary(method: str, behavior: Callable) -> Callable:
    def measured(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        failed = False
        try:
            return behavior(request_or_iterator, context)
        except BaseException:
            failed = True
            raise
        finally:
            _record(method, started, _code(context, failed))

    return measured


def _streaming(method: str, behavior: Callable) -> Callable:
    def measured(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        code = None
        try:
            yield from behavior(request_or_iterator, context)
        except GeneratorExit:
            code = "CANCELLED"  # the client went away mid-stream
            raise
        except BaseException:
            code = _code(context, True)
            raise
        finally:
            _record(method, started, code or _code(context, False))

    return measured


class MetricsInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.lstrip("/")
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _unary(method, handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _unary(method, handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(method, handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _streaming(method, handler.stream_stream),
            handler.request_deserializer,
            handler.response_serializer,
        )
