"""Liveness, readiness, what this API is, and what each problem type means.

`/health` says the process answers (a liveness probe restarts it otherwise), and touches
nothing behind it: a Redis outage must not get every API replica restarted. `/ready` says
whether requests can be served now: Redis, ZooKeeper, Kafka and at least one TaskService
provider, checked side by side within a couple of seconds; a load balancer sends traffic
elsewhere while it answers 503.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import APIRouter, Path, Request

from common.api import catalog, dto
from common.api.backends import CheckResult
from common.api.problems import TYPE_PREFIX

router = APIRouter(tags=["system"])


def _version() -> str:
    try:
        return version("tasklab")
    except PackageNotFoundError:
        return "0+unknown"


def _checks(results: dict[str, CheckResult]) -> dict[str, dto.Check]:
    return {name: dto.Check(**asdict(result)) for name, result in results.items()}


@router.get("/health", response_model=dto.Liveness, summary="Liveness: the process answers")
async def health() -> dto.Liveness:
    # async: answered on the event loop, even when every worker thread is busy waiting.
    return dto.Liveness(status="ok")


@router.get(
    "/ready",
    response_model=dto.Readiness,
    summary="Readiness: Redis, ZooKeeper, Kafka and a provider answer",
    responses=dto.problem_responses(503),
)
def ready(request: Request) -> dto.Readiness:
    results = request.app.state.backends.check_all()
    down = {name: r for name, r in results.items() if not r.ok}
    if down:
        raise catalog.unavailable(
            "down: " + "; ".join(f"{name} ({r.detail})" for name, r in down.items()),
            retry_after=2,
            down=sorted(down),
            checks={name: asdict(r) for name, r in results.items()},
        )
    return dto.Readiness(status="ready", checks=_checks(results))


@router.get(
    "/api/v1/system/info",
    response_model=dto.SystemInfo,
    summary="Version, stage and the TaskService providers in use",
)
def system_info(request: Request) -> dto.SystemInfo:
    return dto.SystemInfo(
        name="tasklab",
        version=_version(),
        stage=4,
        api_version="v1",
        providers=request.app.state.backends.providers(),
    )


@router.get(
    "/api/v1/system/health/detailed",
    response_model=dto.DetailedHealth,
    summary="Every backing service's state, as a report (200 even when one is down)",
)
def detailed_health(request: Request) -> dto.DetailedHealth:
    backends = request.app.state.backends
    results = backends.check_all()
    ok = all(r.ok for r in results.values())
    return dto.DetailedHealth(
        status="ok" if ok else "degraded",
        checks=_checks(results),
        providers=backends.providers(),
    )


@router.get(
    "/problems/{slug}",
    response_model=dto.ProblemDoc,
    summary="What a problem type means",
    responses=dto.problem_responses(404),
)
def problem_type(slug: Annotated[str, Path(max_length=100)]) -> dto.ProblemDoc:
    kind = catalog.CATALOG.get(slug)
    if kind is None:
        raise catalog.problem("not-found", f"no problem type {slug!r}")
    return dto.ProblemDoc(
        type=TYPE_PREFIX + kind.slug,
        title=kind.title,
        status=kind.status,
        description=kind.description,
    )
