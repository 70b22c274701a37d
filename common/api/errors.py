"""Every failure becomes a problem (RFC 9457): the exception handlers and the last-resort guard.

- `Problem`, raised anywhere in handling: answered as it is.
- Validation (FastAPI's RequestValidationError): 422 `validation` listing every problem with
  its field (400 when the body is not JSON at all).
- Starlette's HTTP errors (no such route, wrong method): their own problem types.
- A gRPC error from the TaskService stub: common.api.rpc_problems' table.
- Anything else: `ProblemGuard`, the outermost middleware, logs it with its traceback and
  answers 503 `unexpected-error`. Never 500: a 500 tells the client "the server broke, the
  request may be half-applied"; here every change is one atomic call on a provider, so what a
  client can honestly be told is "not done, you may try again" - a 503. The log keeps the bug
  visible to the people who must fix it.
"""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.api import catalog
from common.api.problems import Problem
from common.api.rpc_problems import problem_from_rpc
from common.observability import get_logger

log = get_logger("tasklab.api")

_HTTP_SLUGS = {
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            # Its loc is a character position, not a field: the body as a whole is wrong.
            reason = (err.get("ctx") or {}).get("error", "")
            detail = f"not valid JSON ({reason})" if reason else "not valid JSON"
            out.append({"field": "body", "detail": detail, "pointer": "#"})
            continue
        where, *path = [str(part) for part in err.get("loc", ())] or ["body"]
        entry: dict[str, Any] = {"field": ".".join(path) or where, "detail": err.get("msg", "")}
        if where == "body":
            entry["pointer"] = "#/" + "/".join(path) if path else "#"
        else:
            entry["in"] = where  # a query parameter, a header or a path segment
        out.append(entry)
    return out


async def _on_problem(request: Request, exc: Problem) -> Response:
    return exc.response(request.url.path)


async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
    not_json = any(err.get("type") == "json_invalid" for err in exc.errors())
    problem = catalog.validation(validation_errors(exc), status=400 if not_json else 422)
    return problem.response(request.url.path)


async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
    slug = _HTTP_SLUGS.get(exc.status_code)
    if slug is None:
        problem = Problem(exc.status_code, "http-error", str(exc.detail), headers=exc.headers)
    else:
        problem = catalog.problem(slug, str(exc.detail), headers=dict(exc.headers or {}))
    return problem.response(request.url.path)


async def _on_rpc(request: Request, exc: grpc.RpcError) -> Response:
    return problem_from_rpc(exc).response(request.url.path)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(grpc.RpcError, _on_rpc)


class ProblemGuard:
    """Outermost ASGI middleware: no exception reaches the server as a 500.

    Before the response has started, an exception is answered as a problem; after (a stream
    that broke midway), the body is ended cleanly, since a status already sent cannot change.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "ended": False}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["ended"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the point of this class
            path = scope.get("path", "")
            if isinstance(exc, Problem):
                problem = exc
            elif isinstance(exc, grpc.RpcError):
                problem = problem_from_rpc(exc)
            else:
                log.exception("unexpected error answering %s %s", scope.get("method"), path)
                problem = catalog.problem("unexpected-error", type(exc).__name__)
            if not state["started"]:
                await problem.response(path)(scope, receive, send)
            elif not state["ended"]:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
