"""An in-memory TaskService for the REST API's unit tests: what the providers would answer,
without them. It holds the state and builds the answers; a test puts a blocking or an asyncio
face on it, as the API calls one or the other (common.api.commands)."""

from __future__ import annotations

from collections.abc import Callable

from common.rpc.gen import task_service_pb2 as pb


class TaskServiceFake:
    """One task per requestId, never finishing unless `finishes`; every submit raises `fails`
    if given. `still_running()` is the error a watch of an unfinished task raises (the call
    error of the face's kind)."""

    def __init__(
        self,
        still_running: Callable[[], Exception],
        finishes: bool = False,
        fails: Exception | None = None,
    ) -> None:
        self.by_key: dict[str, pb.Task] = {}
        self.finishes = finishes
        self.fails = fails
        self.metadata: list = []
        self._still_running = still_running

    def submitted(self, request: pb.SubmitRequest, metadata) -> pb.SubmitResponse:
        self.metadata.append(metadata)
        if self.fails:
            raise self.fails
        key = request.request_id or f"generated-{len(self.by_key)}"
        created = key not in self.by_key
        if created:
            self.by_key[key] = pb.Task(
                task_id=f"task-{len(self.by_key)}",
                task_type=request.task_type,
                payload=request.payload,
                status=pb.PENDING,
                request_id=key,
            )
        return pb.SubmitResponse(task=self.by_key[key], created=created)

    def final(self, task_id: str) -> pb.WatchEvent:
        """The watch's last event: the task SUCCESS, if it `finishes`."""
        if not self.finishes:
            raise self._still_running()
        done = pb.Task()
        done.CopyFrom(self._task(task_id))
        done.status = pb.SUCCESS
        return pb.WatchEvent(final=done)

    def info(self, task_id: str) -> pb.TaskInfo:
        return pb.TaskInfo(task=self._task(task_id))

    def _task(self, task_id: str) -> pb.Task:
        return next(t for t in self.by_key.values() if t.task_id == task_id)
