"""TaskClient: what the CLI (and the REST and gRPC services) do with tasks.

Pattern: Facade (introduced in stage 1). Submitting, waiting, cancelling and reading a task's
timeline touch several keys and scripts; callers see five verbs. Given a composite store, the
same verbs serve composite tasks: cancel and retry of a parent act on the whole composite, so
no caller has to know which kind of task an id names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from common.domain.composite import CompositeTree, validate_composite
from common.domain.idempotency import IdempotencyConflict
from common.domain.task import DEFAULT_MAX_PAYLOAD_BYTES, Task, TaskType, validate_spec
from common.domain.transitions import TaskStatus
from common.observability import bind, get_logger, metrics, tracing
from common.ports.task_store import CancelResult, TaskStore

if TYPE_CHECKING:
    from common.ports.composite import CompositeStore

log = get_logger("tasklab.client")


class TaskNotFound(LookupError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task {task_id}")
        self.task_id = task_id


class NotRetryable(ValueError):
    """A retry of a task that is not FAILED or CANCELLED (a 409 / FAILED_PRECONDITION)."""

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(
            f"task {task_id} is {status}: only a FAILED or CANCELLED task can be retried"
        )
        self.task_id = task_id
        self.status = status


RETRYABLE = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})


def wait_for_final(
    get: Callable[[str], Task], task_id: str, timeout: float, poll: float, max_delay: float
) -> Task:
    """Poll `get(task_id)` until the task is terminal or `timeout` passes, backing off from
    `poll` to `max_delay` seconds; the task's latest state either way."""
    deadline = time.monotonic() + timeout
    delay = poll
    while True:
        task = get(task_id)
        if task.is_terminal or time.monotonic() >= deadline:
            return task
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, max_delay)


class CompositesUnavailable(RuntimeError):
    """A composite verb on a client built without a composite store (a wiring mistake)."""


class TaskClient:
    def __init__(
        self,
        store: TaskStore,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        composites: CompositeStore | None = None,
    ) -> None:
        self.store = store
        self.max_payload_bytes = max_payload_bytes
        self._composites = composites

    @property
    def composites(self) -> CompositeStore:
        if self._composites is None:
            raise CompositesUnavailable("this task client was built without a composite store")
        return self._composites

    def submit(self, data: dict, actor: str = "client") -> tuple[Task, bool]:
        """Validate (every problem at once) and submit; returns (task, created).

        With a `requestId`: the same request again returns the task the first one created
        (created False); a different request under the same id raises IdempotencyConflict,
        naming that task (common/domain/idempotency.py says what "the same" means)."""
        spec = validate_spec(data, self.max_payload_bytes)
        # The trace of the task's first attempt starts here (or continues the API's and the
        # gRPC call's spans): this span's traceparent is stored on the task.
        with tracing.span("submit", attributes={"tasklab.task_type": spec.task_type.value}) as sp:
            task, created = self.store.submit(
                spec, actor=actor, traceparent=tracing.current_traceparent()
            )
            tracing.set_attributes(sp, **{"tasklab.task_id": task.task_id})
        if created:
            metrics.TASKS_SUBMITTED.labels(task.task_type.value).inc()
        with bind(taskId=task.task_id):
            # The first line of a task's story in the log store, written by the process that
            # took the submit (the rpc provider from stage 4, the API through it).
            log.info(
                "%s %s task %r by %s",
                "submitted" if created else "re-submitted (same requestId)",
                task.task_type.value,
                task.task_name,
                actor,
            )
        return task, created

    def get(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def wait(self, task_id: str, timeout: float, poll: float = 0.05) -> Task:
        """Block until the task is terminal or `timeout` passes; return its latest state."""
        return wait_for_final(self.get, task_id, timeout, poll, max_delay=0.5)

    def cancel(self, task_id: str, actor: str = "client") -> CancelResult:
        task = self.get(task_id)
        if task.task_type == TaskType.COMPOSITE:
            # The parent and every child not finished, in one step: a parent cancelled alone
            # would leave its running children to finish for nobody.
            result = self.composites.cancel_composite(task_id, actor=actor)
        else:
            result = self.store.cancel(task_id, actor=actor)
        if result.accepted and result.cancelled_from:
            # The cancel is the transition to CANCELLED: counted where it was written.
            metrics.TASKS_FINISHED.labels(task.task_type.value, "CANCELLED").inc()
        return result

    # -- composite tasks ---------------------------------------------------------------------
    def submit_composite(self, data: dict, actor: str = "client") -> tuple[Task, bool]:
        """Validate a composite document (every problem at once, by its path) and store its
        parent and children; returns (parent, created), idempotent by requestId as submit."""
        spec = validate_composite(data, self.max_payload_bytes)
        parent, created = self.composites.submit_composite(spec, actor=actor)
        if created:
            metrics.TASKS_SUBMITTED.labels(parent.task_type.value).inc()
        with bind(taskId=parent.task_id):
            log.info("submitted composite %r by %s", parent.task_name, actor)
        return parent, created

    def tree(self, task_id: str) -> CompositeTree | None:
        """A composite parent with its children and edges; None if `task_id` is no parent."""
        task = self.get(task_id)
        if task.task_type != TaskType.COMPOSITE:
            return None
        return self.composites.tree(task_id)

    def retry(
        self, task_id: str, actor: str = "client", request_id: str | None = None
    ) -> tuple[Task, bool]:
        """A new task with the spec of a FAILED or CANCELLED one; returns (task, created).

        A terminal task is never re-opened: the new one records what it retries (`retryOf`).
        `request_id` makes the retry itself idempotent (a client retrying the call after a
        lost reply gets the same new task); the same id used to retry another task, or used
        before for a submit, raises IdempotencyConflict. Terminal states are final, so the
        check and the submit need no atomicity between them.
        """
        old = self.get(task_id)
        if old.status not in RETRYABLE:
            raise NotRetryable(task_id, old.status.value)
        if old.task_type == TaskType.COMPOSITE:
            # Only the children that did not succeed run again, under a new parent.
            try:
                parent, created = self.composites.retry_composite(
                    task_id, actor=actor, request_id=request_id
                )
                if created:
                    metrics.TASKS_SUBMITTED.labels(parent.task_type.value).inc()
                return parent, created
            except ValueError as exc:
                if isinstance(exc, IdempotencyConflict):
                    raise
                # The parent changed between the read and the script: say so as for a task.
                raise NotRetryable(task_id, self.get(task_id).status.value) from exc
        spec = old.spec.model_copy(update={"request_id": request_id})
        # A retry by hand is a new task with a trace of its own, linked to the original's.
        with tracing.span(
            "submit",
            links=[old.traceparent],
            attributes={"tasklab.task_type": spec.task_type.value, "tasklab.retry_of": task_id},
        ):
            task, created = self.store.submit(
                spec,
                actor=f"{actor} (retry of {task_id})",
                retry_of=task_id,
                traceparent=tracing.current_traceparent(),
            )
        if created:
            metrics.TASKS_SUBMITTED.labels(task.task_type.value).inc()
        return task, created

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


__all__ = [
    "CompositesUnavailable",
    "IdempotencyConflict",
    "NotRetryable",
    "TaskClient",
    "TaskNotFound",
    "TaskStatus",
]
