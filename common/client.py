"""TaskClient: what the CLI (and, later, the REST and gRPC services) do with tasks.

Pattern: Facade (introduced in stage 1). Submitting, waiting, cancelling and reading a task's
timeline touch several keys and scripts; callers see five verbs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from common.domain.task import DEFAULT_MAX_PAYLOAD_BYTES, Task, validate_spec
from common.domain.transitions import TaskStatus
from common.ports.task_store import CancelResult, TaskStore


class TaskNotFound(LookupError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task {task_id}")
        self.task_id = task_id


class TaskClient:
    def __init__(
        self, store: TaskStore, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    ) -> None:
        self.store = store
        self.max_payload_bytes = max_payload_bytes

    def submit(self, data: dict, actor: str = "client") -> tuple[Task, bool]:
        """Validate (every problem at once) and submit; returns (task, created)."""
        spec = validate_spec(data, self.max_payload_bytes)
        return self.store.submit(spec, actor=actor)

    def get(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def wait(self, task_id: str, timeout: float, poll: float = 0.05) -> Task:
        """Block until the task is terminal or `timeout` passes; return its latest state."""
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            task = self.get(task_id)
            if task.is_terminal or time.monotonic() >= deadline:
                return task
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.5)

    def cancel(self, task_id: str, actor: str = "client") -> CancelResult:
        self.get(task_id)
        return self.store.cancel(task_id, actor=actor)

    def retry(self, task_id: str, actor: str = "client") -> Task:
        """A new task with the same spec (a terminal task is never re-opened)."""
        old = self.get(task_id)
        spec = old.spec.model_copy(update={"request_id": None})
        task, _ = self.store.submit(spec, actor=f"{actor} (retry of {task_id})")
        return task

    def follow_logs(self, task_id: str, poll: float = 0.2, timeout: float = 3600) -> Iterator[str]:
        """Yield log lines as they arrive until the task is terminal and nothing is left."""
        seen = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.store.logs(task_id, start=seen)
            yield from lines
            seen += len(lines)
            if not lines and self.get(task_id).is_terminal:
                rest = self.store.logs(task_id, start=seen)
                yield from rest
                return
            if not lines:
                time.sleep(poll)


__all__ = ["TaskClient", "TaskNotFound", "TaskStatus"]
