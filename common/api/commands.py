"""Submit, cancel and retry as command objects, the last link of request handling.

Pattern: Command (stage 4). A route does not call the TaskService itself: it builds a command
(what to do, with the validated body and the idempotency key) and executes it against the
TaskService stub with the caller's credentials. Each command is a small object that can be
built, logged or tested without HTTP, and the one place that decides the status code of its
success (201 created, 200 replayed, 202 still running). Failures are the stub's status codes,
mapped to problems by the app (common.api.rpc_problems).
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from common.api import dto, views
from common.rpc.gen import task_service_pb2 as pb

CALL_TIMEOUT = 5.0  # seconds a command waits on the providers, failover included
# Watch positions past any real history or log: a synchronous submit wants only the final
# event, not every line the task printed on the way.
FROM_THE_END = 2**62

Metadata = list[tuple[str, str]]


class TaskService(Protocol):
    """What the commands need of the TaskService (common.rpc.proxy.TaskServiceProxy)."""

    def submit(self, request: pb.SubmitRequest, timeout=None, metadata=None) -> Any: ...
    def submit_composite(
        self, request: pb.SubmitCompositeRequest, timeout=None, metadata=None
    ) -> Any: ...
    def cancel(self, task_id: str, timeout=None, metadata=None) -> Any: ...
    def retry(self, task_id: str, request_id: str = "", timeout=None, metadata=None) -> Any: ...
    def get_task_info(self, task_id: str, timeout=None, metadata=None) -> Any: ...
    def watch(self, task_id: str, from_transition=0, from_log=0, timeout=None, metadata=None): ...


class AsyncTaskService(Protocol):
    """The calls the asynchronous submit needs (common.rpc.aio_proxy.AsyncTaskServiceProxy,
    or common.api.backends.ThreadedTaskService around a blocking one)."""

    async def submit(self, request: pb.SubmitRequest, timeout=None, metadata=None) -> Any: ...
    async def get_task_info(self, task_id: str, timeout=None, metadata=None) -> Any: ...
    def watch(self, task_id: str, from_transition=0, from_log=0, timeout=None, metadata=None): ...


@dataclass(frozen=True)
class Outcome:
    """A command's answer: the status code, the body and any headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def task_location(task_id: str) -> dict[str, str]:
    return {"Location": f"/api/v1/tasks/{task_id}"}


@dataclass(frozen=True)
class SubmitTask:
    body: dto.SubmitTask
    key: str | None
    wait: float | None = None

    def execute(self, tasks: TaskService, metadata: Metadata) -> Outcome:
        request = views.submit_request(self.body, self.key)
        answer = tasks.submit(request, timeout=CALL_TIMEOUT, metadata=metadata)
        headers = task_location(answer.task.task_id)
        if self.wait is None:
            return Outcome(201 if answer.created else 200, views.task_view(answer.task), headers)
        task = _until_final(tasks, answer.task, self.wait, metadata)
        return self._final(task, headers)

    async def execute_async(self, tasks: AsyncTaskService, metadata: Metadata) -> Outcome:
        """As `execute`, awaiting the calls on the event loop (the REST route's way)."""
        request = views.submit_request(self.body, self.key)
        answer = await tasks.submit(request, timeout=CALL_TIMEOUT, metadata=metadata)
        headers = task_location(answer.task.task_id)
        if self.wait is None:
            return Outcome(201 if answer.created else 200, views.task_view(answer.task), headers)
        task = await _until_final_async(tasks, answer.task, self.wait, metadata)
        return self._final(task, headers)

    @staticmethod
    def _final(task: pb.Task, headers: dict[str, str]) -> Outcome:
        final = views.status(task.status) in dto.TERMINAL
        return Outcome(200 if final else 202, views.task_view(task), headers)


@dataclass(frozen=True)
class SubmitComposite:
    """A composite document: its parent is answered at once (201, or 200 for a replay), with
    its children as they are: WAITING, the first ones maybe released already."""

    body: dto.SubmitComposite
    key: str | None

    def execute(self, tasks: TaskService, metadata: Metadata) -> Outcome:
        request = views.composite_request(self.body, self.key)
        answer = tasks.submit_composite(request, timeout=CALL_TIMEOUT, metadata=metadata)
        headers = task_location(answer.task.task_id)
        view = views.task_view(answer.task, tree=True)
        return Outcome(201 if answer.created else 200, view, headers)


def _until_final(tasks: TaskService, task: pb.Task, wait: float, metadata: Metadata) -> pb.Task:
    """The task in its final state, or as it is when `wait` runs out.

    The task exists already: from here on a failure (a provider lost, the deadline) must not
    turn into an error answer, which would read as "not submitted". It answers 202 with the
    latest state known instead.
    """
    try:
        for event in tasks.watch(
            task.task_id, FROM_THE_END, FROM_THE_END, timeout=wait, metadata=metadata
        ):
            if event.WhichOneof("event") == "final":
                return event.final
    except grpc.RpcError:
        pass  # the deadline (or the providers) ran out before the task finished
    try:
        return tasks.get_task_info(task.task_id, timeout=CALL_TIMEOUT, metadata=metadata).task
    except grpc.RpcError:
        return task


async def _until_final_async(
    tasks: AsyncTaskService, task: pb.Task, wait: float, metadata: Metadata
) -> pb.Task:
    """`_until_final` on the event loop: the same answers, the same reasons."""
    try:
        events = tasks.watch(
            task.task_id, FROM_THE_END, FROM_THE_END, timeout=wait, metadata=metadata
        )
        # aclosing: leaving at the final event closes the stream now, not at garbage collection.
        async with aclosing(events):
            async for event in events:
                if event.WhichOneof("event") == "final":
                    return event.final
    except grpc.RpcError:
        pass  # the deadline (or the providers) ran out before the task finished
    try:
        info = await tasks.get_task_info(task.task_id, timeout=CALL_TIMEOUT, metadata=metadata)
        return info.task
    except grpc.RpcError:
        return task


@dataclass(frozen=True)
class CancelTask:
    task_id: str

    def execute(self, tasks: TaskService, metadata: Metadata) -> Outcome:
        answer = tasks.cancel(self.task_id, timeout=CALL_TIMEOUT, metadata=metadata)
        return Outcome(200, views.cancel_result(answer))


@dataclass(frozen=True)
class RetryTask:
    task_id: str
    key: str | None

    def execute(self, tasks: TaskService, metadata: Metadata) -> Outcome:
        answer = tasks.retry(
            self.task_id, request_id=self.key or "", timeout=CALL_TIMEOUT, metadata=metadata
        )
        return Outcome(
            201 if answer.created else 200,
            views.retry_result(answer),
            task_location(answer.new_task_id),
        )
