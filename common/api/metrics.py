"""The REST API's metrics: requests by route template, method and status, and their duration;
its `/metrics` route; and its readiness on the operator port.

`HttpMetricsLink` is a pure-ASGI link like those in common.api.links, installed outermost: it
sees every answer, the links' 401/413/429 and the ProblemGuard's 503 included. The route label
is the route's template (`/api/v1/tasks/{task_id}`), never the path a caller typed: a path
carries a task id, and one series per task would grow without bound. A path no route matches
is counted as `unmatched`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.routing import BaseRoute, compile_path

from common.adapters.redis_metrics import observe_redis
from common.api.links import ASGIApp, Message, Receive, Scope, Send
from common.observability import metrics
from common.observability.health import CHECKS

UNMATCHED = "unmatched"

router = APIRouter()


# Not in the OpenAPI document: it is for Prometheus, not for API clients (and public, like
# /health and /ready: common.api.links.PUBLIC_PATHS).
@router.get("/metrics", include_in_schema=False)
def prometheus_metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def route_templates(routes: Iterable[BaseRoute], prefix: str = "") -> list[RouteTemplate]:
    """Every route's template with its pattern, routers included by the app walked into.

    (FastAPI keeps an included router as one entry of the app's routes, whose own routes carry
    their paths without the include's prefix: the prefix is added here.)"""
    out: list[RouteTemplate] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            out += route_templates(included.routes, prefix + getattr(context, "prefix", ""))
            continue
        path = getattr(route, "path", None)
        if isinstance(path, str):
            template = prefix + path
            out.append(RouteTemplate(template, compile_path(template)[0]))
    return out


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    pattern: re.Pattern[str]


def route_template(scope: Scope, templates: Sequence[RouteTemplate]) -> str:
    """The template of the route that served (or would serve) this request."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    # Answered before routing (a link refused it): the route it was meant for, by its path.
    path = scope.get("path", "")
    for candidate in templates:
        if candidate.pattern.match(path):
            return candidate.template
    return UNMATCHED


class HttpMetricsLink:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self._templates: list[RouteTemplate] | None = None

    @property
    def templates(self) -> list[RouteTemplate]:
        # Built on first use: the app has all its routes by then (docs routes come last).
        if self._templates is None:
            self._templates = route_templates(self.routes)
        return self._templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]  # what a client sees if the app ends without answering

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route, method = route_template(scope, self.templates), scope.get("method", "")
            metrics.HTTP_REQUESTS.labels(route, method, str(status[0])).inc()
            metrics.HTTP_DURATION.labels(route, method).observe(time.perf_counter() - started)


def observe_api(app: Any, redis_url: str) -> None:
    """The API process's operator port: the queues' state, and /ready's checks (the same the
    API's own /ready runs)."""
    observe_redis(redis_url)
    backends = app.state.backends
    for name, check in (
        ("redis", backends._check_redis),
        ("zookeeper", backends._check_zookeeper),
        ("kafka", backends._check_kafka),
        ("providers", backends._check_providers),
    ):
        CHECKS.add(name, check)
