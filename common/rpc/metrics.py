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


# The labelled children, found once per method (and code), not per call: `labels()` takes the
# metric's lock and builds its key every time it is asked.
_requests: dict[tuple[str, str], Any] = {}
_durations: dict[str, Any] = {}


def _record(method: str, started: float, code: str) -> None:
    counter = _requests.get((method, code))
    if counter is None:
        counter = _requests.setdefault((method, code), metrics.GRPC_REQUESTS.labels(method, code))
    counter.inc()
    histogram = _durations.get(method)
    if histogram is None:
        histogram = _durations.setdefault(method, metrics.GRPC_DURATION.labels(method))
    histogram.observe(time.perf_counter() - started)


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
    def __init__(self) -> None:
        # method -> (the handler it wrapped, the measuring handler): the handler the service
        # answers for a method is one object for the server's life, so its measured twin is
        # built once, not per call. A handler made per call (the auth interceptor's refusal)
        # is not the cached one and is wrapped afresh; one entry per method, bounded.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        measured = self._measured(handler_call_details.method.lstrip("/"), handler)
        self._wrapped[handler_call_details.method] = (handler, measured)
        return measured

    @staticmethod
    def _measured(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
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
