"""`/api/v1/schedules...`: cron schedules with Kubernetes CronJob semantics.

Like the task routes, each is a call of the TaskService stub with the caller's credentials
(the providers store schedules; the scheduler leader fires them). A document is checked here
first by the same `validate_schedule` the provider runs, so a 422 lists every problem at once
(`schedule: minute: 61 is out of range 0-59`, `task.payload: must not be blank`), each with a
JSON pointer into the body.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from common.api import catalog, commands, dto, views
from common.api.links import forwarded_credentials, require
from common.api.problems import field_error
from common.domain.schedule import validate_schedule
from common.domain.task import TaskValidationError
from common.rpc import convert
from common.rpc.gen import task_service_pb2 as pb
from common.security import Principal, Role

router = APIRouter(prefix="/api/v1", tags=["schedules"])

Name = Annotated[str, Path(min_length=1, max_length=200)]
Reader = Annotated[Principal, Depends(require(Role.TASK_READ))]
Writer = Annotated[Principal, Depends(require(Role.TASK_WRITE))]

_READ_ERRORS = dto.problem_responses(401, 403, 404, 422, 429, 503)
_WRITE_ERRORS = dto.problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)

EXAMPLE = {
    "name": "nightly-report",
    "schedule": "30 2 * * 1-5",
    "timeZone": "Europe/Berlin",
    "concurrencyPolicy": "Forbid",
    "startingDeadlineSeconds": 300,
    "task": {"taskType": "SHELL", "payload": "echo report", "executionTimeout": 600},
}


class _View(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True)


class RunRef(_View):
    task_id: str
    scheduled_for: str


class ScheduleStatus(_View):
    uid: str
    created_at: str
    updated_at: str
    last_schedule_time: str | None = None
    last_run_id: str | None = None
    last_missed: int = 0
    last_skip: str | None = None
    next_check: str | None = None
    active: list[RunRef] = []
    succeeded: list[RunRef] = []
    failed: list[RunRef] = []


class ScheduleView(_View):
    """A schedule: its document as created (with `suspend` as it is now), its status, and its
    next fire times from now."""

    name: str
    schedule: str
    time_zone: str
    concurrency_policy: str
    starting_deadline_seconds: int | None = None
    successful_jobs_history_limit: int
    failed_jobs_history_limit: int
    suspend: bool
    task: dict[str, Any]
    status: ScheduleStatus
    next_fire_times: list[str]


class ScheduleList(_View):
    items: list[ScheduleView]


class FireTimes(_View):
    fire_times: list[str]


_POLICY_NAMES = {1: "Allow", 2: "Forbid", 3: "Replace"}


def _time(ts) -> str | None:
    return views.rfc3339(ts) if ts.seconds or ts.nanos else None


def _runs(runs) -> list[RunRef]:
    return [RunRef(task_id=r.task_id, scheduled_for=views.rfc3339(r.scheduled_for)) for r in runs]


def schedule_view(s: pb.Schedule) -> ScheduleView:
    spec = s.spec
    return ScheduleView(
        name=spec.name,
        schedule=spec.schedule,
        time_zone=spec.time_zone or "UTC",
        concurrency_policy=_POLICY_NAMES.get(spec.concurrency_policy, "Allow"),
        starting_deadline_seconds=(
            spec.starting_deadline_seconds if spec.HasField("starting_deadline_seconds") else None
        ),
        successful_jobs_history_limit=spec.successful_jobs_history_limit,
        failed_jobs_history_limit=spec.failed_jobs_history_limit,
        suspend=spec.suspend,
        task={
            "taskName": spec.task.task_name,
            "taskType": pb.TaskType.Name(spec.task.task_type),
            "payload": spec.task.payload,
            "executionTimeout": spec.task.execution_timeout,
            "retryCount": spec.task.retry_count,
        },
        status=ScheduleStatus(
            uid=s.uid,
            created_at=views.rfc3339(s.created_at),
            updated_at=views.rfc3339(s.updated_at),
            last_schedule_time=_time(s.last_schedule_time),
            last_run_id=s.last_run_id or None,
            last_missed=s.last_missed,
            last_skip=s.last_skip or None,
            next_check=_time(s.next_check),
            active=_runs(s.active),
            succeeded=_runs(s.succeeded),
            failed=_runs(s.failed),
        ),
        next_fire_times=[views.rfc3339(t) for t in s.next_fire_times],
    )


def _json(view: BaseModel, status: int = 200, headers: dict | None = None) -> JSONResponse:
    body = view.model_dump(by_alias=True, mode="json")
    return JSONResponse(body, status_code=status, headers=headers)


def _invalid(exc: TaskValidationError):
    errors = []
    for problem in exc.problems:
        field, sep, detail = problem.partition(": ")
        errors.append(field_error(field, detail) if sep else field_error("", problem))
    if exc.too_large:
        return catalog.problem("payload-too-large", str(exc), errors=errors)
    return catalog.validation(errors)


def checked_spec(body: Any) -> pb.ScheduleSpec:
    """A schedule document checked and converted, or the 422 (413) problem listing every
    violation by field: the REST route's and the console form's one check."""
    try:
        validate_schedule(body)
        return convert.schedule_spec(body)
    except TaskValidationError as exc:
        raise _invalid(exc) from None


@router.post(
    "/schedules",
    status_code=201,
    response_model=ScheduleView,
    summary="Create a cron schedule",
    description="A five-field cron expression (or @hourly, @daily, ...) in an IANA time zone, "
    "with Kubernetes CronJob semantics: concurrencyPolicy Allow, Forbid or Replace, "
    "startingDeadlineSeconds, successfulJobsHistoryLimit (3), failedJobsHistoryLimit (1), "
    "suspend. Each fire creates an ordinary task from `task`, with `scheduleId` and "
    "`scheduledFor`. 201 with Location; 409 schedule-exists if the name is taken; 422 "
    "lists every problem of the document.",
    responses=_WRITE_ERRORS,
)
def create_schedule(
    request: Request,
    _: Writer,
    body: Annotated[Any, Body(openapi_examples={"weekdays": {"value": EXAMPLE}})],
) -> JSONResponse:
    spec = checked_spec(body)
    answer = _tasks(request).create_schedule(
        spec, timeout=commands.CALL_TIMEOUT, metadata=forwarded_credentials(request.scope)
    )
    location = f"/api/v1/schedules/{answer.spec.name}"
    return _json(schedule_view(answer), 201, {"Location": location})


@router.get(
    "/schedules",
    response_model=ScheduleList,
    summary="List cron schedules, by name (each with its next fire time)",
    responses=dto.problem_responses(401, 403, 429, 503),
)
def list_schedules(request: Request, _: Reader) -> JSONResponse:
    answer = _tasks(request).list_schedules(
        timeout=commands.CALL_TIMEOUT, metadata=forwarded_credentials(request.scope)
    )
    return _json(ScheduleList(items=[schedule_view(s) for s in answer.schedules]))


@router.get(
    "/schedules/{name}",
    response_model=ScheduleView,
    summary="A cron schedule, its runs, and its next fire times",
    responses=_READ_ERRORS,
)
def get_schedule(
    name: Name,
    request: Request,
    _: Reader,
    preview: Annotated[int, Query(ge=1, le=100, description="How many next fire times.")] = 5,
) -> JSONResponse:
    answer = _tasks(request).get_schedule(
        name, preview, timeout=commands.CALL_TIMEOUT, metadata=forwarded_credentials(request.scope)
    )
    return _json(schedule_view(answer))


def _suspend(name: str, request: Request, suspend: bool) -> JSONResponse:
    answer = _tasks(request).set_schedule_suspended(
        name, suspend, timeout=commands.CALL_TIMEOUT, metadata=forwarded_credentials(request.scope)
    )
    return _json(schedule_view(answer))


@router.post(
    "/schedules/{name}/pause",
    response_model=ScheduleView,
    summary="Pause a schedule (suspend: true): nothing fires until it is resumed",
    responses=_WRITE_ERRORS,
)
def pause_schedule(name: Name, request: Request, _: Writer) -> JSONResponse:
    return _suspend(name, request, True)


@router.post(
    "/schedules/{name}/resume",
    response_model=ScheduleView,
    summary="Resume a schedule: the latest time missed while paused runs if within the "
    "starting deadline (always, with none)",
    responses=_WRITE_ERRORS,
)
def resume_schedule(name: Name, request: Request, _: Writer) -> JSONResponse:
    return _suspend(name, request, False)


@router.delete(
    "/schedules/{name}",
    status_code=204,
    summary="Delete a schedule (the runs it made stay tasks)",
    responses=_WRITE_ERRORS,
)
def delete_schedule(name: Name, request: Request, _: Writer) -> Response:
    _tasks(request).delete_schedule(
        name, timeout=commands.CALL_TIMEOUT, metadata=forwarded_credentials(request.scope)
    )
    return Response(status_code=204)


@router.get(
    "/schedule-preview",
    response_model=FireTimes,
    summary="The next fire times of a cron expression in a time zone, creating nothing",
    responses=dto.problem_responses(401, 403, 422, 429, 503),
)
def preview_schedule(
    request: Request,
    _: Reader,
    schedule: Annotated[str, Query(min_length=1, max_length=200, examples=["*/15 9-17 * * 1-5"])],
    time_zone: Annotated[str, Query(alias="timeZone", max_length=100)] = "UTC",
    count: Annotated[int, Query(ge=1, le=100)] = 5,
) -> JSONResponse:
    answer = _tasks(request).preview_schedule(
        schedule,
        time_zone,
        count,
        timeout=commands.CALL_TIMEOUT,
        metadata=forwarded_credentials(request.scope),
    )
    return _json(FireTimes(fire_times=[views.rfc3339(t) for t in answer.fire_times]))


def _tasks(request: Request):
    return request.app.state.backends.tasks
