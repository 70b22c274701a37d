"""The TaskService servicer: the task API (TaskClient) behind gRPC.

Pattern: Facade, seen from the wire (stage 4). Each method is a thin translation: the request
becomes a call on `TaskClient` (the same facade the CLI uses, over the same RedisTaskStore), and
the answer or the domain error becomes the response or a status code (`common.rpc.errors`).
No rule about tasks lives here; a rule added to the domain holds for gRPC at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any

import grpc
from kazoo.exceptions import NoNodeError
from redis import Redis

from common import keys
from common.adapters.redis_client import as_text
from common.client import TaskClient
from common.coordination.agent_info import AgentInfo
from common.coordination.paths import LIVE_AGENTS, agent_node
from common.domain.schedule import CronError, parse_cron, validate_schedule, zone_of
from common.domain.task import Task, TaskType, TaskValidationError
from common.observability import get_logger, tracing
from common.ports.clock import Clock, SystemClock
from common.ports.schedule import ScheduleNotFound, ScheduleState, ScheduleStore
from common.rpc import convert, errors
from common.rpc.gen import task_service_pb2 as pb
from common.rpc.gen import task_service_pb2_grpc as pb_grpc
from common.rpc.listing import MAX_PAGE, BadCursor, TaskFilter, list_page
from common.scheduling.schedules import create_schedule, preview

log = get_logger("tasklab.rpc")


def _fail(method: Callable, exc: Exception, context: grpc.ServicerContext) -> None:
    status = errors.status_of(exc)
    if status is None:
        # A bug, not bad input: logged with its traceback, answered INTERNAL, never a crash.
        log.exception("%s failed", method.__name__)
        context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    errors.abort(context, status)


def _deadline_passed(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def _mapped(method: Callable) -> Callable:
    """Run a servicer method, turning domain and Redis errors into their status codes."""

    @wraps(method)
    def wrapper(self: TaskServicer, request: Any, context: grpc.ServicerContext) -> Any:
        if _deadline_passed(context):
            # Queued behind other calls past the caller's deadline: doing the work now would
            # apply a command the caller has already given up on.
            errors.abort(context, errors.deadline_exceeded("deadline passed before the call ran"))
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, never a crash
            _fail(method, exc, context)

    return wrapper


def _watched(method: Callable) -> Callable:
    """_mapped for a server-streaming method (a generator)."""

    @wraps(method)
    def wrapper(self: TaskServicer, request: Any, context: grpc.ServicerContext) -> Iterator:
        try:
            yield from method(self, request, context)
        except Exception as exc:  # noqa: BLE001
            _fail(method, exc, context)

    return wrapper


class TaskServicer(pb_grpc.TaskServiceServicer):
    def __init__(
        self,
        tasks: TaskClient,
        redis: Redis,
        *,
        actor: str = "rpc",
        watch_poll: float = 0.1,
        watch_max: float = 3600.0,
        zk: Any = None,
        schedules: ScheduleStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.tasks = tasks
        # Cron schedules: the store clients write to, and the clock previews count from.
        self.schedules = schedules
        self.clock = clock or SystemClock()
        self.redis = redis
        # Optional: with a ZooKeeper client, ListAgents adds each live agent's capacity from
        # its /live-agents node; without one it answers from Redis alone (capacity unknown).
        self.zk = zk
        self.actor = actor
        self.watch_poll = watch_poll
        self.watch_max = watch_max

    @_mapped
    # --8<-- [start:submit]
    def Submit(self, request: pb.SubmitRequest, context) -> pb.SubmitResponse:  # noqa: N802
        # The caller's span (the REST API's) arrives as the `traceparent` metadata entry.
        caller = tracing.from_metadata(context.invocation_metadata())
        with tracing.span(
            "TaskService/Submit",
            parent=caller,
            kind="server",
            attributes={"rpc.system": "grpc", "rpc.method": "Submit"},
        ):
            task, created = self.tasks.submit(convert.submit_data(request), actor=self.actor)
        return pb.SubmitResponse(task=convert.task(task), created=created)

    # --8<-- [end:submit]

    @_mapped
    # --8<-- [start:submit-composite]
    def SubmitComposite(  # noqa: N802
        self, request: pb.SubmitCompositeRequest, context
    ) -> pb.SubmitResponse:
        """The document is checked by validate_composite, as a REST body or a CLI file is:
        every problem named by its path (`nodes.1.dependsOn.0`), INVALID_ARGUMENT (or
        RESOURCE_EXHAUSTED when something is too large), each problem a field violation."""
        parent, created = self.tasks.submit_composite(
            convert.composite_data(request), actor=self.actor
        )
        return pb.SubmitResponse(task=self._view(parent), created=created)

    # --8<-- [end:submit-composite]

    def _view(self, task: Task) -> pb.Task:
        """A task as the single-task views show it: a composite parent with its tree."""
        if task.task_type == TaskType.COMPOSITE:
            tree = self.tasks.composites.tree(task.task_id)
            if tree is not None:
                return convert.tree(tree)
        return convert.task(task)

    @_mapped
    def GetTaskInfo(self, request: pb.GetTaskInfoRequest, context) -> pb.TaskInfo:  # noqa: N802
        task = self.tasks.get(_task_id(request.task_id))
        store = self.tasks.store
        return pb.TaskInfo(
            task=self._view(task),
            timeline=[convert.timeline_entry(e) for e in store.history(task.task_id)],
            logs=store.logs(task.task_id),
        )

    @_mapped
    def Cancel(self, request: pb.CancelRequest, context) -> pb.CancelResponse:  # noqa: N802
        task_id = _task_id(request.task_id)
        result = self.tasks.cancel(task_id, actor=self.actor)
        if result.reason == "missing":
            raise errors.Failure(errors.not_found(task_id))
        if not result.accepted:
            raise errors.Failure(
                errors.precondition(
                    task_id,
                    result.status,
                    f"task {task_id} is {result.status}: a finished task cannot be cancelled",
                )
            )
        return pb.CancelResponse(
            task_id=task_id,
            status=convert.status(result.status),
            cancelled_from=convert.status(result.cancelled_from),
            already_cancelled=result.reason == "already_cancelled",
            message="Cancel request accepted.",
        )

    @_mapped
    def Retry(self, request: pb.RetryRequest, context) -> pb.RetryResponse:  # noqa: N802
        task_id = _task_id(request.task_id)
        task, created = self.tasks.retry(
            task_id, actor=self.actor, request_id=request.request_id or None
        )
        return pb.RetryResponse(
            new_task_id=task.task_id,
            status=convert.status(task.status.value),
            retry_of=task.retry_of or task_id,
            created=created,
        )

    @_mapped
    def List(self, request: pb.ListRequest, context) -> pb.ListResponse:  # noqa: N802
        problems = []
        if not 0 <= request.page_size <= MAX_PAGE:
            problems.append(f"pageSize: must be between 1 and {MAX_PAGE} (0 = 50)")
        if request.status and request.status not in pb.TaskStatus.values():
            problems.append("status: not a TaskStatus")
        if request.task_type and request.task_type not in pb.TaskType.values():
            problems.append("taskType: not a TaskType")
        if problems:
            raise TaskValidationError(problems)
        after, before = request.created_after, request.created_before
        flt = TaskFilter(
            status=pb.TaskStatus.Name(request.status) if request.status else None,
            task_type=pb.TaskType.Name(request.task_type) if request.task_type else None,
            agent_id=request.agent_id or None,
            name=request.name or None,
            schedule_id=request.schedule_id or None,
            created_after=convert.seconds(after) if request.HasField("created_after") else None,
            created_before=convert.seconds(before) if request.HasField("created_before") else None,
        )
        try:
            tasks, cursor = list_page(self.redis, flt, request.page_size or 50, request.cursor)
        except BadCursor as exc:
            raise TaskValidationError([str(exc)]) from None
        return pb.ListResponse(tasks=[convert.task(t) for t in tasks], next_cursor=cursor)

    # --8<-- [start:watch]
    @_watched
    def Watch(self, request: pb.WatchRequest, context) -> Iterator[pb.WatchEvent]:  # noqa: N802
        """Poll the task's history and log lists from the caller's positions; stream what is
        new; end with the final task once it is terminal and both lists are drained.

        Both lists are append-only (a history entry per accepted transition; log lines pushed
        at the end), so a position in each is a stable sequence number: a client that lost its
        stream resumes with the next positions, on any provider, without gaps or repeats.
        """
        task_id = _task_id(request.task_id)
        problems = []
        if request.from_transition < 0:
            problems.append("fromTransition: must be 0 or more")
        if request.from_log < 0:
            problems.append("fromLog: must be 0 or more")
        if problems:
            raise TaskValidationError(problems)
        self.tasks.get(task_id)  # NOT_FOUND before the stream starts
        store = self.tasks.store
        next_transition, next_log = request.from_transition, request.from_log
        remaining = context.time_remaining()
        deadline = time.monotonic() + min(
            self.watch_max, remaining if remaining is not None else self.watch_max
        )
        while context.is_active() and time.monotonic() < deadline:
            task = self.tasks.get(task_id)  # read first: entries after it are drained below
            for entry in store.history(task_id)[next_transition:]:
                yield pb.WatchEvent(
                    sequence=next_transition, transition=convert.timeline_entry(entry)
                )
                next_transition += 1
            for line in store.logs(task_id, start=next_log):
                yield pb.WatchEvent(sequence=next_log, log=pb.LogLine(line=line))
                next_log += 1
            if task.is_terminal:
                yield pb.WatchEvent(final=convert.task(task))
                return
            time.sleep(min(self.watch_poll, max(0.0, deadline - time.monotonic())))
        if context.is_active():
            raise errors.Failure(
                errors.deadline_exceeded(
                    f"task {task_id} did not finish within the watch; resume from transition "
                    f"{next_transition}, log {next_log}"
                )
            )

    # --8<-- [end:watch]

    @_mapped
    def ListAgents(self, request: pb.ListAgentsRequest, context) -> pb.ListAgentsResponse:  # noqa: N802
        """Every agent the platform has heard from, from what it records about them.

        Redis is the record every stage writes: `agents:seen` (ids that heartbeated and were
        not reaped), `agent:{id}:heartbeat` (the time of the last beat, expiring after the
        TTL: present = alive) and `processing:{id}` (the attempts it runs: its load). The
        capacity is only in the agent's ZooKeeper registration, read when this servicer has
        a ZooKeeper client; a registered agent not yet in `agents:seen` is listed too.
        """
        seen = {as_text(m) for m in self.redis.smembers(keys.AGENTS_SEEN)}
        registered = self._registered_agents()
        ids = sorted(seen | set(registered))
        pipe = self.redis.pipeline(transaction=False)
        for agent_id in ids:
            pipe.get(keys.heartbeat(agent_id))
            pipe.llen(keys.processing(agent_id))
        replies = pipe.execute()
        out = pb.ListAgentsResponse()
        for i, agent_id in enumerate(ids):
            beat, load = replies[2 * i], replies[2 * i + 1]
            agent = out.agents.add(agent_id=agent_id, alive=beat is not None, load=int(load))
            if beat is not None:
                agent.last_heartbeat.CopyFrom(convert.timestamp(as_text(beat)))
            if agent_id in registered:
                agent.capacity = registered[agent_id].capacity
        return out

    def _registered_agents(self) -> dict[str, AgentInfo]:
        if self.zk is None:
            return {}
        out: dict[str, AgentInfo] = {}
        try:
            children = self.zk.get_children(LIVE_AGENTS)
        except NoNodeError:
            return out
        for agent_id in children:
            try:
                raw, _ = self.zk.get(agent_node(agent_id))
            except NoNodeError:
                continue  # left between the two reads
            try:
                out[agent_id] = AgentInfo.from_json(raw)
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable /live-agents node %s", agent_id)
        return out

    # -- cron schedules ----------------------------------------------------------------------
    def _schedule_store(self) -> ScheduleStore:
        if self.schedules is None:
            raise RuntimeError("this provider has no schedule store")
        return self.schedules

    def _schedule_view(self, state: ScheduleState, n: int) -> pb.Schedule:
        fires = preview(state.spec.schedule, state.spec.time_zone, self.clock.now(), n)
        return convert.schedule(state, fires)

    @_mapped
    def CreateSchedule(  # noqa: N802
        self, request: pb.CreateScheduleRequest, context
    ) -> pb.Schedule:
        spec = validate_schedule(convert.schedule_data(request.spec), self.tasks.max_payload_bytes)
        state = create_schedule(self._schedule_store(), spec, self.clock.now())
        return self._schedule_view(state, 5)

    @_mapped
    def GetSchedule(self, request: pb.GetScheduleRequest, context) -> pb.Schedule:  # noqa: N802
        state = self._schedule_store().get(request.name)
        if state is None:
            raise ScheduleNotFound(request.name)
        return self._schedule_view(state, _preview_count(request.preview))

    @_mapped
    def ListSchedules(  # noqa: N802
        self, request: pb.ListSchedulesRequest, context
    ) -> pb.ListSchedulesResponse:
        states = self._schedule_store().list()
        return pb.ListSchedulesResponse(schedules=[self._schedule_view(s, 1) for s in states])

    @_mapped
    def SetScheduleSuspended(  # noqa: N802
        self, request: pb.SetScheduleSuspendedRequest, context
    ) -> pb.Schedule:
        state = self._schedule_store().set_suspend(request.name, request.suspend, self.clock.now())
        if state is None:
            raise ScheduleNotFound(request.name)
        return self._schedule_view(state, 5)

    @_mapped
    def DeleteSchedule(  # noqa: N802
        self, request: pb.DeleteScheduleRequest, context
    ) -> pb.DeleteScheduleResponse:
        if not self._schedule_store().delete(request.name):
            raise ScheduleNotFound(request.name)
        return pb.DeleteScheduleResponse()

    @_mapped
    def PreviewSchedule(  # noqa: N802
        self, request: pb.PreviewScheduleRequest, context
    ) -> pb.PreviewScheduleResponse:
        fires = preview_times(
            request.schedule, request.time_zone or "UTC", self.clock.now(), request.count
        )
        return pb.PreviewScheduleResponse(fire_times=[convert.timestamp(t) for t in fires])


def _preview_count(n: int) -> int:
    return 5 if n <= 0 else min(n, 100)


def preview_times(cron: str, zone: str, now: float, count: int) -> list[float]:
    """`preview`, its problems as a validation error naming the field (`schedule`, `timeZone`,
    `count`), every one at once."""
    problems = []
    if count < 0 or count > 100:
        problems.append("count: must be between 1 and 100")
    try:
        parse_cron(cron)
    except CronError as exc:
        problems.append(f"schedule: {exc}")
    try:
        zone_of(zone)
    except CronError as exc:
        problems.append(f"timeZone: {exc}")
    if problems:
        raise TaskValidationError(problems)
    return preview(cron, zone, now, _preview_count(count))


def _task_id(value: str) -> str:
    if not value:
        raise TaskValidationError(["taskId: is required"])
    return value
