"""The REST API's composition: `create_app(settings)` builds it, connecting to nothing.

Pattern: Facade (stage 4). The API is a facade over the TaskService providers, which are a
facade over the task store: one HTTP call, one gRPC call through the discovering stub.

Request handling, outermost first (a chain of responsibility; each link answers or passes on):
    ProblemGuard (last resort: never a 500)
    -> the links: auth -> rate limit -> size (common.api.links)
    -> FastAPI: routing, validation (422 with every problem)
    -> Idempotency (common.api.idempotency) -> a command (common.api.commands) -> the stub
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from common.api import (
    errors,
    links,
    metrics,
    openapi,
    routes_dead_letters,
    routes_schedules,
    routes_system,
    routes_tasks,
)
from common.api.backends import Backends
from common.api.console.pages import install as install_console
from common.api.console.session import ConsoleLink
from common.config import Settings

WORKER_THREADS = 256

DESCRIPTION = """\
The tasklab REST API (stage 4): submit, watch, cancel and retry tasks.

It is a client of the gRPC TaskService: every call goes to a provider found in ZooKeeper.
Errors are `application/problem+json` (RFC 9457); each `type` is described at its own URL.
"""


# --8<-- [start:create-app]
def create_app(
    settings: Settings,
    tasks: Any = None,
    dead_letters: Any = None,
    cluster: Any = None,
    bus_dead_letters: Any = None,
) -> FastAPI:
    """The app; `tasks` is a TaskService stub to use instead of discovering providers, and
    `dead_letters` (a DeadLetterBox), `cluster` (a function answering a Cluster) and
    `bus_dead_letters` (a BusDeadLetters) replace their Redis, ZooKeeper and Kafka readers
    (unit tests)."""
    backends = Backends(settings, tasks, dead_letters, cluster, bus_dead_letters)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Routes but submit block on the stub in worker threads, and a log follow holds one for
        # as long as it waits: more threads than anyio's default 40, so forty waiting clients
        # cannot starve every other request. (/health and submit, awaited on the loop, need
        # none.)
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        yield
        # The grpc.aio channels belong to this loop: closed on it, before the loop ends.
        await backends.aclose()
        backends.close()

    app = FastAPI(
        title="tasklab",
        version="v1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.backends = backends
    errors.install_handlers(app)
    app.include_router(routes_tasks.router)
    app.include_router(routes_schedules.router)
    app.include_router(routes_system.router)
    app.include_router(routes_dead_letters.router)
    install_console(app)
    app.include_router(metrics.router)
    # Added last = outermost: the links see a request before the app does; the guard sees
    # every exception, the links' included.
    links.install_links(app, settings, backends.redis)
    # The console (/ui/) in front of the links: its key cookie becomes the header the auth
    # link reads, its POSTs must come from its own origin, and no key means its login page.
    app.add_middleware(ConsoleLink, authenticator=app.state.tasklab_authenticator)
    app.add_middleware(errors.ProblemGuard)
    # Outermost of all: counts every answer, the guard's and the links' included.
    app.add_middleware(metrics.HttpMetricsLink, routes=app.router.routes)
    openapi.install(app)
    return app


# --8<-- [end:create-app]


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, built without connecting to anything (for the docs)."""
    return create_app(Settings()).openapi()
