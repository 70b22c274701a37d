"""Domain <-> protobuf: the one place that knows both shapes (DTOs on the wire)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from common.domain.task import Task
from common.rpc.gen import task_service_pb2 as pb


def timestamp(seconds: float | str | None) -> Timestamp:
    ts = Timestamp()
    if seconds not in (None, ""):
        value = float(seconds)
        ts.seconds = int(value)
        ts.nanos = int(round((value - int(value)) * 1e9)) % 1_000_000_000
    return ts


def seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def status(name: str | None) -> int:
    """A domain status name as the proto enum (UNSPECIFIED for none or an unknown one)."""
    return pb.TaskStatus.Value(name) if name in pb.TaskStatus.keys() else 0


def task(t: Task) -> pb.Task:
    out = pb.Task(
        task_id=t.task_id,
        task_name=t.task_name,
        task_type=pb.TaskType.Value(t.task_type.value),
        payload=t.payload,
        execution_timeout=t.execution_timeout,
        retry_count=t.retry_count,
        request_id=t.request_id or "",
        status=status(t.status.value),
        attempt=t.attempt,
        epoch=t.epoch,
        agent_id=t.agent_id or "",
        created_at=timestamp(t.created_at),
        updated_at=timestamp(t.updated_at),
        retry_of=t.retry_of or "",
    )
    if t.result is not None:
        out.result = t.result
    if t.error is not None:
        out.error = t.error
    if t.exit_code is not None:
        out.exit_code = t.exit_code
    return out


def timeline_entry(entry: dict) -> pb.TimelineEntry:
    """One history entry as the Lua scripts append it: {state, from?, at, actor, epoch, ...}."""
    return pb.TimelineEntry(
        state=status(entry.get("state")),
        from_state=status(entry.get("from")),
        at=timestamp(entry.get("at")),
        actor=str(entry.get("actor", "")),
        epoch=int(entry.get("epoch") or 0),
        attempt=int(entry.get("attempt") or 0),
        reason=str(entry.get("reason", "")),
    )


def submit_data(request: pb.SubmitRequest) -> dict:
    """A SubmitRequest as the camelCase dict the one validator (validate_spec) checks.

    Unset optional fields are left out, so the domain's defaults apply; an enum value the
    contract does not know is passed on as its number, for the validator to name.
    """
    data: dict = {"taskName": request.task_name, "payload": request.payload}
    if request.task_type != pb.TASK_TYPE_UNSPECIFIED:
        data["taskType"] = (
            pb.TaskType.Name(request.task_type)
            if request.task_type in pb.TaskType.values()
            else request.task_type
        )
    if request.HasField("execution_timeout"):
        data["executionTimeout"] = request.execution_timeout
    if request.HasField("retry_count"):
        data["retryCount"] = request.retry_count
    if request.request_id:
        data["requestId"] = request.request_id
    return data
