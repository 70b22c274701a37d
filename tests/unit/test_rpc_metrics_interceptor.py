"""The gRPC metrics interceptor builds its measuring handler once per method, and still counts
every call, a refused one included, with its own code."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest

from common.observability import metrics
from common.rpc.metrics import MetricsInterceptor

METHOD = "/tasklab.v1.TaskService/Submit"


class Context:
    def __init__(self, code=None) -> None:
        self._code = code

    def code(self):
        return self._code


def count(method: str, code: str) -> float:
    return metrics.GRPC_REQUESTS.labels(method, code)._value.get()


def test_the_same_handler_is_measured_by_one_wrapper_built_once():
    interceptor = MetricsInterceptor()
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: "answer")
    details = SimpleNamespace(method=METHOD)
    first = interceptor.intercept_service(lambda _: handler, details)
    again = interceptor.intercept_service(lambda _: handler, details)
    assert first is again, "built once for the method, not per call"

    before = count(METHOD.lstrip("/"), "OK")
    assert first.unary_unary("request", Context()) == "answer"
    assert again.unary_unary("request", Context()) == "answer"
    assert count(METHOD.lstrip("/"), "OK") == before + 2, "every call is still counted"


def test_a_handler_made_for_one_call_is_measured_with_its_own_code():
    interceptor = MetricsInterceptor()
    usual = grpc.unary_unary_rpc_method_handler(lambda request, context: "answer")
    details = SimpleNamespace(method=METHOD)
    interceptor.intercept_service(lambda _: usual, details)

    # As the auth interceptor answers a refused call: a handler of its own for this call
    def refuse(request, context):
        raise RuntimeError("refused")

    refusing = grpc.unary_unary_rpc_method_handler(refuse)
    measured = interceptor.intercept_service(lambda _: refusing, details)
    before = count(METHOD.lstrip("/"), "PERMISSION_DENIED")
    # The refusing handler runs, not the cached one
    with pytest.raises(RuntimeError, match="refused"):
        measured.unary_unary("request", Context(grpc.StatusCode.PERMISSION_DENIED))
    assert count(METHOD.lstrip("/"), "PERMISSION_DENIED") == before + 1
