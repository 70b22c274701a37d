"""`/api/v1/tasks...`: the task endpoints (docs/reference/rest.md).

Each route is the same short chain after the ASGI links (auth, rate limit, size): FastAPI
validates the input (422 with every problem), `Idempotency` resolves the key, and a command
(common.api.commands) or a read goes to the TaskService stub with the caller's credentials.
Submit, the hot path, is an `async def` awaiting the grpc.aio proxy (common.rpc.aio_proxy) on
the event loop: no hop to a worker thread and back per request. The other routes are plain
`def`s on the blocking stub, which FastAPI runs on its thread pool.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import grpc
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from common.api import commands, dto, sse, views
from common.api.commands import Outcome
from common.api.idempotency import Idempotency, idempotency
from common.api.links import forwarded_credentials, require
from common.observability import tracing
from common.rpc.gen import task_service_pb2 as pb
from common.security import Principal, Role

router = APIRouter(prefix="/api/v1", tags=["tasks"])

TaskId = Annotated[str, Path(alias="taskId", min_length=1, max_length=200)]
Reader = Annotated[Principal, Depends(require(Role.TASK_READ))]
Writer = Annotated[Principal, Depends(require(Role.TASK_WRITE))]

_READ_ERRORS = dto.problem_responses(401, 403, 404, 422, 429, 503)
_WRITE_ERRORS = dto.problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)


def credentials(request: Request) -> list[tuple[str, str]]:
    """The caller's credential, passed on to the providers as gRPC metadata: the one the
    auth link authenticated (or, with auth off, whatever gRPC can carry of it)."""
    return forwarded_credentials(request.scope)


def answer(outcome: Outcome) -> Response:
    # JSON bytes in one pass in pydantic-core: not a dict of Python objects first, which
    # JSONResponse would walk again with json.dumps. The same compact JSON, the same type.
    body = outcome.body.model_dump_json(by_alias=True)
    return Response(
        body, status_code=outcome.status, headers=outcome.headers, media_type="application/json"
    )


# --8<-- [start:submit]
@router.post(
    "/tasks",
    status_code=201,
    response_model=dto.TaskView,
    summary="Submit a task",
    responses={
        200: {"model": dto.TaskView, "description": "Replayed (same key), or final (wait)."},
        202: {"model": dto.TaskView, "description": "wait ran out: the task as it is now."},
        **_WRITE_ERRORS,
    },
)
async def submit_task(
    body: dto.SubmitTask,
    request: Request,
    _: Writer,
    key: Annotated[Idempotency, Depends(idempotency)],
    wait: Annotated[
        float | None,
        Query(gt=0, le=300, description="Answer when the task is final, waiting this long."),
    ] = None,
) -> Response:
    command = commands.SubmitTask(body, key.key(body.request_id), wait)
    tasks = await request.app.state.backends.async_tasks()
    # The trace of the task's first attempt starts here, or continues the caller's own
    # `traceparent` header; the provider gets this span as gRPC metadata.
    with tracing.span(
        "POST /api/v1/tasks",
        parent=request.headers.get(tracing.TRACEPARENT),
        kind="server",
        attributes={"http.request.method": "POST", "http.route": "/api/v1/tasks"},
    ) as sp:
        outcome = await command.execute_async(tasks, tracing.grpc_metadata(credentials(request)))
        tracing.set_attributes(sp, **{"http.response.status_code": outcome.status})
    return answer(outcome)


# --8<-- [end:submit]


# --8<-- [start:submit-composite]
@router.post(
    "/composites",
    status_code=201,
    response_model=dto.TaskView,
    summary="Submit a composite task (GROUP, SHARDS, MAP_REDUCE, BROADCAST or DAG)",
    description="Creates the parent (taskType COMPOSITE) and its children in one step; the "
    "answer is the parent's view with its children. Watch it, cancel it and retry it at "
    "/tasks/{taskId} as any task: cancel stops every child not finished, retry runs again only "
    "the children that did not succeed. 422 lists every problem of the document by its path "
    "(`nodes.1.dependsOn.0`), a DAG's cycles and unknown references included; 413 when it, or "
    "a task in it, is over its size limit.",
    responses={
        200: {"model": dto.TaskView, "description": "Replayed (same key): the first parent."},
        **_WRITE_ERRORS,
    },
)
def submit_composite(
    body: Annotated[dto.SubmitComposite, Body(openapi_examples=dto.COMPOSITE_EXAMPLES)],
    request: Request,
    _: Writer,
    idempotency: Annotated[Idempotency, Depends()],
) -> Response:
    command = commands.SubmitComposite(body, idempotency.key(body.request_id))
    return answer(command.execute(_tasks(request), credentials(request)))


# --8<-- [end:submit-composite]


@router.get(
    "/tasks",
    response_model=dto.TaskPage,
    summary="List tasks, newest first",
    responses=dto.problem_responses(401, 403, 422, 429, 503),
)
def list_tasks(
    request: Request,
    _: Reader,
    status: dto.TaskStatus | None = None,
    task_type: Annotated[dto.TaskType | None, Query(alias="type")] = None,
    agent: Annotated[str | None, Query(max_length=200)] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    created_after: Annotated[datetime | None, Query(alias="createdAfter")] = None,
    created_before: Annotated[datetime | None, Query(alias="createdBefore")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    schedule_id: Annotated[
        str | None,
        Query(
            alias="scheduleId",
            max_length=200,
            description="Only the runs of this cron schedule (by its name).",
        ),
    ] = None,
) -> dto.TaskPage:
    query = list_request(
        status, task_type, agent, name, limit, cursor, created_after, created_before, schedule_id
    )
    return task_page(_tasks(request), query, credentials(request))


def list_request(
    status: dto.TaskStatus | None = None,
    task_type: dto.TaskType | None = None,
    agent: str | None = None,
    name: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    schedule_id: str | None = None,
) -> pb.ListRequest:
    """A listing's filters as the providers' ListRequest (the REST route's and the console's)."""
    query = pb.ListRequest(
        status=pb.TaskStatus.Value(status.value) if status else 0,
        task_type=pb.TaskType.Value(task_type.value) if task_type else 0,
        agent_id=agent or "",
        name=name or "",
        schedule_id=schedule_id or "",
        page_size=limit,
        cursor=cursor or "",
    )
    if created_after is not None:
        query.created_after.CopyFrom(views.to_timestamp(created_after))
    if created_before is not None:
        query.created_before.CopyFrom(views.to_timestamp(created_before))
    return query


def task_page(tasks, query: pb.ListRequest, metadata) -> dto.TaskPage:
    page = tasks.list(query, timeout=commands.CALL_TIMEOUT, metadata=metadata)
    return dto.TaskPage(
        items=[views.task_view(t) for t in page.tasks], next_cursor=page.next_cursor or None
    )


@router.get(
    "/tasks/{taskId}",
    response_model=dto.TaskDetail,
    summary="A task with its logs and timeline",
    responses=_READ_ERRORS,
)
def get_task(task_id: TaskId, request: Request, _: Reader) -> dto.TaskDetail:
    try:
        info = _tasks(request).get_task_info(
            task_id, timeout=commands.CALL_TIMEOUT, metadata=credentials(request)
        )
    except grpc.RpcError as exc:
        # Gone from Redis (retention deleted it): the archive may still have how it ended.
        if not hasattr(exc, "code") or exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        archived = request.app.state.backends.archived(task_id)
        if archived is None:
            raise
        return archived
    return views.task_detail(info)


@router.delete(
    "/tasks/{taskId}",
    response_model=dto.CancelResult,
    summary="Cancel a task (a composite: with every child not finished)",
    responses=_WRITE_ERRORS,
)
def cancel_task(task_id: TaskId, request: Request, _: Writer) -> Response:
    return answer(commands.CancelTask(task_id).execute(_tasks(request), credentials(request)))


@router.post(
    "/tasks/{taskId}/retry",
    status_code=201,
    response_model=dto.RetryResult,
    summary="Retry a FAILED or CANCELLED task as a new task (a composite: its failed children)",
    responses={
        200: {"model": dto.RetryResult, "description": "Replayed (same Idempotency-Key)."},
        **_WRITE_ERRORS,
    },
)
def retry_task(
    task_id: TaskId,
    request: Request,
    _: Writer,
    idempotency: Annotated[Idempotency, Depends()],
) -> Response:
    command = commands.RetryTask(task_id, idempotency.key())
    return answer(command.execute(_tasks(request), credentials(request)))


@router.get(
    "/tasks/{taskId}/logs",
    response_model=dto.TaskLogs,
    summary="A task's log lines; follow=true streams them (Server-Sent Events)",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "The lines; with follow, a stream of log, transition and end events.",
        },
        **_READ_ERRORS,
    },
)
def task_logs(
    task_id: TaskId,
    request: Request,
    _: Reader,
    follow: bool = False,
    from_log: Annotated[int, Query(alias="fromLog", ge=0, le=2**31)] = 0,
    from_transition: Annotated[int, Query(alias="fromTransition", ge=0, le=2**31)] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
):
    tasks, metadata = _tasks(request), credentials(request)
    # 404 (or 503) before a stream starts: once it has, the status is already 200.
    info = tasks.get_task_info(task_id, timeout=commands.CALL_TIMEOUT, metadata=metadata)
    streaming = follow or "text/event-stream" in request.headers.get("accept", "")
    if not streaming:
        return dto.TaskLogs(task_id=info.task.task_id, lines=list(info.logs))
    if last_event_id is not None and last_event_id.strip().isdigit():
        from_log = max(from_log, int(last_event_id) + 1)
    stream = sse.follow(tasks, task_id, from_transition, from_log, metadata)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        # No buffering by a proxy in between (nginx honours X-Accel-Buffering), no caching.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/agents",
    response_model=dto.AgentList,
    summary="The agents the platform has heard from",
    tags=["agents"],
    responses=dto.problem_responses(401, 403, 429, 503),
)
def list_agents(request: Request, _: Reader) -> dto.AgentList:
    answer = _tasks(request).list_agents(
        timeout=commands.CALL_TIMEOUT, metadata=credentials(request)
    )
    return dto.AgentList(items=[views.agent(a) for a in answer.agents])


def _tasks(request: Request):
    return request.app.state.backends.tasks
