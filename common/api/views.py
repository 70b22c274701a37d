"""The providers' protobuf messages -> the REST DTOs (and the few REST values -> protobuf).

The one place that knows both shapes on the API's side, as common/rpc/convert.py is on the
provider's: "" in a proto string field is "not set" and becomes null; an unset optional is
null; timestamps become RFC 3339 UTC strings with milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from common.api import dto
from common.ports.archive import ArchivedTask
from common.rpc.gen import task_service_pb2 as pb


def rfc3339(ts: Timestamp) -> str:
    moment = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _at(seconds: float) -> str:
    """Seconds since the epoch (the archive's times) as the same RFC 3339 string."""
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return rfc3339(ts)


def to_timestamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without a zone is read as UTC
    ts.FromDatetime(moment.astimezone(UTC))
    return ts


def status(value: int) -> dto.TaskStatus | None:
    return dto.TaskStatus(pb.TaskStatus.Name(value)) if value else None


def _optional(message, name: str):
    return getattr(message, name) if message.HasField(name) else None


# --8<-- [start:task-view]
def task_view(task: pb.Task, tree: bool = False) -> dto.TaskView:
    """`tree`: the provider filled in a composite parent's children (GetTaskInfo,
    SubmitComposite), so a parent with none yet (a broadcast before it expands) shows an empty
    list rather than null, which a listing's parents show."""
    return dto.TaskView(**_task_fields(task, tree))


def _task_fields(task: pb.Task, tree: bool = False) -> dict:
    return {
        "task_id": task.task_id,
        "task_name": task.task_name,
        "task_type": dto.TaskType(pb.TaskType.Name(task.task_type)),
        "payload": task.payload,
        "execution_timeout": task.execution_timeout,
        "retry_count": task.retry_count,
        "request_id": task.request_id or None,
        "status": status(task.status),
        "attempt": task.attempt,
        "epoch": task.epoch,
        "agent_id": task.agent_id or None,
        "result": _optional(task, "result"),
        "error": _optional(task, "error"),
        "exit_code": _optional(task, "exit_code"),
        "created_at": rfc3339(task.created_at),
        "updated_at": rfc3339(task.updated_at),
        "retry_of": task.retry_of or None,
        "schedule_id": task.schedule_id or None,
        "scheduled_for": rfc3339(task.scheduled_for) if task.HasField("scheduled_for") else None,
        "trace_id": task.trace_id or None,
        **_composite_fields(task, tree),
    }


# --8<-- [end:task-view]


def _composite_fields(task: pb.Task, tree: bool) -> dict:
    """Where a child stands in its parent; a parent's children, edges and progress."""
    out: dict = {
        "parent_id": task.parent_id or None,
        "role": task.role or None,
        "shard_index": _optional(task, "shard_index"),
        "shard_total": _optional(task, "shard_total"),
        "node": task.node or None,
        "pinned_agent": task.pinned_agent or None,
    }
    if task.task_type == pb.COMPOSITE and (tree or task.children):
        out["children"] = [
            dto.ChildRef(
                task_id=c.task_id,
                task_name=c.task_name,
                role=c.role,
                shard_index=_optional(c, "shard_index"),
                node=c.node or None,
                status=status(c.status),
                agent_id=c.agent_id or None,
            )
            for c in task.children
        ]
        out["edges"] = [dto.Edge(from_=e.from_task_id, to=e.to_task_id) for e in task.edges]
        out["progress"] = dict(task.progress)
    return out


def timeline_entry(entry: pb.TimelineEntry) -> dto.TimelineEntry:
    return dto.TimelineEntry(
        state=status(entry.state),
        from_state=status(entry.from_state),
        at=rfc3339(entry.at),
        actor=entry.actor,
        epoch=entry.epoch,
        attempt=entry.attempt,
        reason=entry.reason,
    )


def task_detail(info: pb.TaskInfo) -> dto.TaskDetail:
    return dto.TaskDetail(
        **_task_fields(info.task, tree=True),
        logs=list(info.logs),
        timeline=[timeline_entry(e) for e in info.timeline],
    )


def archived_detail(found: ArchivedTask) -> dto.TaskDetail | None:
    """A task read from the archive, marked `archived`; None if its rows carry no spec."""
    task = found.task()
    if task is None:
        return None
    return dto.TaskDetail(
        task_id=task.task_id,
        task_name=task.task_name,
        task_type=dto.TaskType(task.task_type.value),
        payload=task.payload,
        execution_timeout=task.execution_timeout,
        retry_count=task.retry_count,
        request_id=task.request_id,
        status=dto.TaskStatus(task.status.value),
        attempt=task.attempt,
        epoch=found.last.epoch,
        agent_id=task.agent_id,
        result=task.result,
        error=task.error,
        exit_code=task.exit_code,
        created_at=_at(task.created_at),
        updated_at=_at(found.last.finished_at),
        retry_of=task.retry_of,
        schedule_id=task.schedule_id,
        scheduled_for=_at(task.scheduled_for) if task.scheduled_for is not None else None,
        trace_id=task.trace_id,
        parent_id=task.parent_id,
        role=task.role,
        shard_index=task.shard_index,
        shard_total=task.shard_total,
        node=task.node,
        pinned_agent=task.pinned_agent,
        logs=[],
        timeline=[
            dto.TimelineEntry(
                state=dto.TaskStatus(e["state"]),
                from_state=None,
                at=_at(e["at"]),
                actor=e["actor"],
                epoch=e["epoch"],
                attempt=e["attempt"],
                reason=e["reason"],
            )
            for e in found.timeline()
        ],
        archived=True,
    )


def cancel_result(answer: pb.CancelResponse) -> dto.CancelResult:
    return dto.CancelResult(
        message=answer.message or "Cancel request accepted.",
        task_id=answer.task_id,
        status=status(answer.status) or dto.TaskStatus.CANCELLED,
        cancelled_from=status(answer.cancelled_from),
        already_cancelled=answer.already_cancelled,
    )


def retry_result(answer: pb.RetryResponse) -> dto.RetryResult:
    return dto.RetryResult(
        new_task_id=answer.new_task_id,
        status=status(answer.status) or dto.TaskStatus.PENDING,
        retry_of=answer.retry_of,
    )


def agent(item: pb.Agent) -> dto.Agent:
    return dto.Agent(
        agent_id=item.agent_id,
        alive=item.alive,
        load=item.load,
        capacity=_optional(item, "capacity"),
        last_heartbeat=rfc3339(item.last_heartbeat) if item.HasField("last_heartbeat") else None,
    )


def submit_request(body: dto.SubmitTask, request_id: str | None) -> pb.SubmitRequest:
    return pb.SubmitRequest(
        task_name=body.task_name or "",
        task_type=pb.TaskType.Value(body.task_type.value),
        payload=body.payload,
        execution_timeout=body.execution_timeout,
        retry_count=body.retry_count,
        request_id=request_id or "",
    )


def _child_task(body: dto.ChildTask) -> pb.TaskSpec:
    return pb.TaskSpec(
        task_name=body.task_name or "",
        task_type=pb.TaskType.Value(body.task_type.value),
        payload=body.payload,
        execution_timeout=body.execution_timeout,
        retry_count=body.retry_count,
    )


def composite_request(
    body: dto.SubmitComposite, request_id: str | None
) -> pb.SubmitCompositeRequest:
    spec = pb.CompositeSpec(
        kind=pb.CompositeKind.Value(body.kind.value),
        task_name=body.task_name or "",
        children=[_child_task(c) for c in body.children or []],
        nodes=[
            pb.DagNode(
                name=n.name,
                task=_child_task(n.task),
                depends_on=n.depends_on,
                trigger=pb.TriggerRule.Value(n.trigger.value),
            )
            for n in body.nodes or []
        ],
    )
    if body.parallelism is not None:
        spec.parallelism = body.parallelism
    if body.completions is not None:
        spec.completions = body.completions
    if body.failure_policy is not None:
        spec.failure_policy.CopyFrom(
            pb.FailurePolicy(
                mode=pb.FailureMode.Value(body.failure_policy.mode.value),
                max_failed=body.failure_policy.max_failed,
            )
        )
    for name in ("template", "map", "reduce"):
        task = getattr(body, name)
        if task is not None:
            getattr(spec, name).CopyFrom(_child_task(task))
    return pb.SubmitCompositeRequest(spec=spec, request_id=request_id or "")
