"""Domain <-> protobuf: the one place that knows both shapes (DTOs on the wire)."""

from __future__ import annotations

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from common.domain.composite import CompositeTree
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
    # A composite's child: where it stands in its parent.
    out.parent_id = t.parent_id or ""
    out.role = t.role or ""
    if t.shard_index is not None:
        out.shard_index = t.shard_index
    if t.shard_total is not None:
        out.shard_total = t.shard_total
    out.node = t.node or ""
    out.pinned_agent = t.pinned_agent or ""
    # A schedule's run: which schedule fired it, for which fire time. A message field, so an
    # unset one (any other task) reads as absent, not as the Unix epoch.
    out.schedule_id = t.schedule_id or ""
    if t.scheduled_for is not None:
        out.scheduled_for.CopyFrom(timestamp(t.scheduled_for))
    out.trace_id = t.trace_id or ""
    return out


def tree(t: CompositeTree) -> pb.Task:
    """A composite parent with its children (in listed order), a DAG's edges and the count of
    children in each state."""
    out = task(t.parent)
    for child in t.children:
        ref = out.children.add(
            task_id=child.task_id,
            task_name=child.task_name,
            role=child.role or "",
            node=child.node or "",
            status=status(child.status.value),
            agent_id=child.agent_id or "",
        )
        if child.shard_index is not None:
            ref.shard_index = child.shard_index
    for upstream, downstream in t.edges:
        out.edges.add(from_task_id=upstream, to_task_id=downstream)
    for state, count in t.progress.counts.items():
        out.progress[state] = count
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


def _enum_name(enum, value: int) -> str | int:
    """An enum value by its name; one the contract does not know stays its number, for the
    validator to name."""
    return enum.Name(value) if value in enum.values() else value


def _task_spec_data(spec: pb.TaskSpec) -> dict:
    data: dict = {"taskName": spec.task_name, "payload": spec.payload}
    if spec.task_type != pb.TASK_TYPE_UNSPECIFIED:
        data["taskType"] = _enum_name(pb.TaskType, spec.task_type)
    if spec.HasField("execution_timeout"):
        data["executionTimeout"] = spec.execution_timeout
    if spec.HasField("retry_count"):
        data["retryCount"] = spec.retry_count
    return data


def _present(message: Message, name: str) -> bool:
    return message.HasField(name)


def composite_data(request: pb.SubmitCompositeRequest) -> dict:
    """A SubmitCompositeRequest as the camelCase document validate_composite checks, so a
    problem is named by the same path (`nodes.2.task.payload`) whichever way it came in.

    What is unset is left out (the domain's defaults apply, and a field a kind needs is named
    as missing); an empty repeated field is absent too, as protobuf cannot tell them apart.
    """
    spec = request.spec
    data: dict = {}
    if spec.kind != pb.COMPOSITE_KIND_UNSPECIFIED:
        data["kind"] = _enum_name(pb.CompositeKind, spec.kind)
    if spec.task_name:
        data["taskName"] = spec.task_name
    if request.request_id:
        data["requestId"] = request.request_id
    if spec.HasField("parallelism"):
        data["parallelism"] = spec.parallelism
    if _present(spec, "failure_policy"):
        policy: dict = {"maxFailed": spec.failure_policy.max_failed}
        if spec.failure_policy.mode != pb.FAILURE_MODE_UNSPECIFIED:
            policy["mode"] = _enum_name(pb.FailureMode, spec.failure_policy.mode)
        data["failurePolicy"] = policy
    if spec.children:
        data["children"] = [_task_spec_data(c) for c in spec.children]
    if spec.HasField("completions"):
        data["completions"] = spec.completions
    for name in ("template", "map", "reduce"):
        if _present(spec, name):
            data[name] = _task_spec_data(getattr(spec, name))
    if spec.nodes:
        nodes = []
        for node in spec.nodes:
            item: dict = {"name": node.name, "dependsOn": list(node.depends_on)}
            if node.HasField("task"):
                item["task"] = _task_spec_data(node.task)
            if node.trigger != pb.TRIGGER_RULE_UNSPECIFIED:
                item["trigger"] = _enum_name(pb.TriggerRule, node.trigger)
            nodes.append(item)
        data["nodes"] = nodes
    return data


# -- cron schedules ------------------------------------------------------------------------------
_POLICIES = {"Allow": 1, "Forbid": 2, "Replace": 3}


def schedule_data(spec: pb.ScheduleSpec) -> dict:
    """A ScheduleSpec as the camelCase document validate_schedule checks, so a problem is named
    by the same path (`task.payload`) whichever way it came in. Unset means the default."""
    data: dict = {"name": spec.name, "schedule": spec.schedule, "suspend": spec.suspend}
    if spec.time_zone:
        data["timeZone"] = spec.time_zone
    if spec.concurrency_policy != pb.CONCURRENCY_POLICY_UNSPECIFIED:
        names = {v: k for k, v in _POLICIES.items()}
        data["concurrencyPolicy"] = names.get(spec.concurrency_policy, spec.concurrency_policy)
    for name, wire in (
        ("starting_deadline_seconds", "startingDeadlineSeconds"),
        ("successful_jobs_history_limit", "successfulJobsHistoryLimit"),
        ("failed_jobs_history_limit", "failedJobsHistoryLimit"),
    ):
        if spec.HasField(name):
            data[wire] = getattr(spec, name)
    if spec.HasField("task"):
        data["task"] = _task_spec_data(spec.task)
    return data


def schedule_spec(doc: dict) -> pb.ScheduleSpec:
    """The camelCase schedule document (a REST body, a CLI file) as a ScheduleSpec; values are
    carried as they are (validate_schedule, on the provider, judges them), but a value of a
    type protobuf cannot hold is refused here with the path of the field."""
    from common.domain.task import TaskValidationError

    problems: list[str] = []
    spec = pb.ScheduleSpec()

    def put(target, field: str, wire: str, value) -> None:
        try:
            setattr(target, field, value)
        except (TypeError, ValueError):
            problems.append(f"{wire}: {type(value).__name__} is not valid here")

    for field, wire in (("name", "name"), ("schedule", "schedule"), ("time_zone", "timeZone")):
        if wire in doc:
            put(spec, field, wire, doc[wire])
    if "suspend" in doc:
        if isinstance(doc["suspend"], bool):
            spec.suspend = doc["suspend"]
        else:
            problems.append("suspend: must be true or false")
    if "concurrencyPolicy" in doc:
        policy = _POLICIES.get(doc["concurrencyPolicy"])
        if policy is None:
            problems.append("concurrencyPolicy: must be one of Allow, Forbid, Replace")
        else:
            spec.concurrency_policy = policy
    for field, wire in (
        ("starting_deadline_seconds", "startingDeadlineSeconds"),
        ("successful_jobs_history_limit", "successfulJobsHistoryLimit"),
        ("failed_jobs_history_limit", "failedJobsHistoryLimit"),
    ):
        if doc.get(wire) is not None:
            value = doc[wire]
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{wire}: must be an integer")
            else:
                put(spec, field, wire, value)
    task = doc.get("task")
    if isinstance(task, dict):
        for field, wire in (("task_name", "taskName"), ("payload", "payload")):
            if wire in task:
                put(spec.task, field, f"task.{wire}", task[wire])
        if "taskType" in task:
            name = task["taskType"]
            if isinstance(name, str) and name.upper() in pb.TaskType.keys():
                spec.task.task_type = pb.TaskType.Value(name.upper())
            else:
                problems.append("task.taskType: must be one of SHELL, PYTHON_SCRIPT, HANDLER")
        for field, wire in (
            ("execution_timeout", "executionTimeout"),
            ("retry_count", "retryCount"),
        ):
            if wire in task:
                put(spec.task, field, f"task.{wire}", task[wire])
    if problems:
        raise TaskValidationError(problems)
    return spec


def schedule(state, fire_times: list[float]) -> pb.Schedule:
    """A stored schedule (common.ports.schedule.ScheduleState) with its next fire times."""
    s = state.spec
    spec = pb.ScheduleSpec(
        name=s.name,
        schedule=s.schedule,
        time_zone=s.time_zone,
        concurrency_policy=_POLICIES[s.concurrency_policy.value],
        successful_jobs_history_limit=s.successful_jobs_history_limit,
        failed_jobs_history_limit=s.failed_jobs_history_limit,
        suspend=s.suspend,
        task=pb.TaskSpec(
            task_name=s.task.task_name,
            task_type=pb.TaskType.Value(s.task.task_type.value),
            payload=s.task.payload,
            execution_timeout=s.task.execution_timeout,
            retry_count=s.task.retry_count,
        ),
    )
    if s.starting_deadline_seconds is not None:
        spec.starting_deadline_seconds = s.starting_deadline_seconds
    out = pb.Schedule(
        spec=spec,
        uid=state.uid,
        created_at=timestamp(state.created_at),
        updated_at=timestamp(state.updated_at),
        last_run_id=state.last_run_id or "",
        last_missed=state.last_missed,
        last_skip=state.last_skip or "",
        next_fire_times=[timestamp(t) for t in fire_times],
    )
    if state.last_schedule_time is not None:
        out.last_schedule_time.CopyFrom(timestamp(state.last_schedule_time))
    if state.next_check is not None:
        out.next_check.CopyFrom(timestamp(state.next_check))
    for runs, target in (
        (state.active, out.active),
        (state.succeeded, out.succeeded),
        (state.failed, out.failed),
    ):
        target.extend(
            pb.ScheduleRun(task_id=r.run_id, scheduled_for=timestamp(r.scheduled_for)) for r in runs
        )
    return out
