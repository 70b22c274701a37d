"""InMemoryTaskStore: the TaskStore port in a dict, for unit tests.

A real implementation, not a mock: it applies the same transition table with the same
attempt/epoch rules as the Redis Lua script, so a unit test that passes here exercises the
contract. (tests/stage1_mvp/test_transition_properties_redis.py runs the same property on Redis.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping

from common.domain.idempotency import IdempotencyConflict, request_fingerprint
from common.domain.task import Task, TaskSpec
from common.domain.transitions import NEW_ATTEMPT_ON, TaskStatus, is_legal
from common.ports.task_store import CancelResult, TaskStore, TransitionResult


class InMemoryTaskStore(TaskStore):
    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, str]] = {}
        self.histories: dict[str, list[dict]] = {}
        self.log_lines: dict[str, list[str]] = {}
        self.requests: dict[str, str] = {}
        self.fingerprints: dict[str, str] = {}  # request id -> what created its task
        self.queue: list[str] = []
        self.fence = 0
        self.counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def submit(
        self,
        spec: TaskSpec,
        actor: str = "client",
        retry_of: str | None = None,
        traceparent: str | None = None,
    ) -> tuple[Task, bool]:
        fingerprint = request_fingerprint(spec, retry_of)
        with self._lock:
            if spec.request_id and spec.request_id in self.requests:
                existing = self.requests[spec.request_id]
                stored = self.fingerprints.get(spec.request_id)
                if stored is not None and stored != fingerprint:
                    raise IdempotencyConflict(spec.request_id, existing)
                return Task.from_hash(self.tasks[existing]), False
            task = Task.new(spec, retry_of=retry_of, traceparent=traceparent)
            self.tasks[task.task_id] = task.to_hash()
            self.histories[task.task_id] = [
                {
                    "state": "PENDING",
                    "at": task.created_at,
                    "actor": actor,
                    "epoch": 0,
                    "attempt": 1,
                    # create_task (prelude.lua) names the trace the first attempt belongs to.
                    **({"traceId": task.trace_id} if task.trace_id else {}),
                }
            ]
            if spec.request_id:
                self.requests[spec.request_id] = task.task_id
                self.fingerprints[spec.request_id] = fingerprint
            self.queue.insert(0, task.to_message())
            return task, True

    def create(self, task: Task, actor: str, reason: str = "created from queue message") -> Task:
        """A task from a hand-pushed message (what claim.lua and schedule.lua create)."""
        with self._lock:
            self.tasks[task.task_id] = task.to_hash()
            entry = {"state": "PENDING", "at": task.created_at, "actor": actor, "epoch": 0}
            self.histories[task.task_id] = [{**entry, "attempt": 1, "reason": reason}]
            return task

    def get(self, task_id: str) -> Task | None:
        data = self.tasks.get(task_id)
        return Task.from_hash(data) if data else None

    def history(self, task_id: str) -> list[dict]:
        return list(self.histories.get(task_id, []))

    def logs(self, task_id: str, start: int = 0) -> list[str]:
        return self.log_lines.get(task_id, [])[start:]

    def list_tasks(
        self, status: TaskStatus | None = None, offset: int = 0, limit: int = 50
    ) -> list[Task]:
        tasks = [Task.from_hash(d) for d in self.tasks.values()]
        tasks = [t for t in tasks if status is None or t.status == status]
        tasks.sort(key=lambda t: t.created_at, reverse=True)
        return tasks[offset : offset + limit]

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def transition(
        self,
        task_id: str,
        to: TaskStatus,
        *,
        attempt: int,
        epoch: int = 0,
        actor: str,
        fields: Mapping[str, object] | None = None,
        clear: Iterable[str] = (),
        reason: str = "",
        fenced: bool = False,
    ) -> TransitionResult:
        with self._lock:
            return self._transition(
                task_id, to, attempt, epoch, actor, fields, clear, reason, fenced
            )

    def cancel(self, task_id: str, actor: str = "client") -> CancelResult:
        # Read and write under one lock, as cancel.lua does in one script.
        with self._lock:
            data = self.tasks.get(task_id)
            if data is None:
                self._count("rejected_missing")
                return CancelResult(False, "missing", "", 0)
            status, attempt = data["status"], int(data.get("attempt", 1))
            if status == TaskStatus.CANCELLED:
                return CancelResult(True, "already_cancelled", status, attempt, status)
            if not is_legal(status, TaskStatus.CANCELLED):
                return CancelResult(False, "already_final", status, attempt)
            now = time.time()
            r = self._transition(
                task_id,
                TaskStatus.CANCELLED,
                attempt,
                int(data.get("epoch", 0)),
                actor,
                {"finishedAt": repr(now)},
                (),
                "cancel requested",
                False,
            )
            return CancelResult(r.accepted, r.reason, r.status, r.attempt, status)

    def _transition(
        self,
        task_id: str,
        to: TaskStatus,
        attempt: int,
        epoch: int,
        actor: str,
        fields: Mapping[str, object] | None,
        clear: Iterable[str],
        reason: str,
        fenced: bool,
    ) -> TransitionResult:
        """The transition itself; the caller holds the lock."""
        data = self.tasks.get(task_id)
        if data is None:
            self._count("rejected_missing")
            return TransitionResult(False, "missing", "", 0)
        status = data["status"]
        cur_attempt = int(data.get("attempt", 1))
        cur_epoch = int(data.get("epoch", 0))
        if attempt != cur_attempt:
            self._count("rejected_stale_attempt")
            return TransitionResult(False, "stale_attempt", status, cur_attempt)
        if epoch < cur_epoch or (fenced and epoch < self.fence):
            self._count("rejected_stale_epoch")
            return TransitionResult(False, "stale_epoch", status, cur_attempt)
        if not is_legal(status, to):
            self._count("rejected_illegal")
            return TransitionResult(False, "illegal", status, cur_attempt)
        new_attempt = cur_attempt + 1 if (status, to) in NEW_ATTEMPT_ON else cur_attempt
        new_epoch = max(epoch, cur_epoch)
        now = time.time()
        data.update(
            status=TaskStatus(to).value,
            attempt=str(new_attempt),
            epoch=str(new_epoch),
            updatedAt=repr(now),
        )
        data.update({k: str(v) for k, v in (fields or {}).items()})
        for key in clear:
            data.pop(key, None)
        entry = {
            "state": TaskStatus(to).value,
            "from": status,
            "at": now,
            "actor": actor,
            "epoch": new_epoch,
            "attempt": new_attempt,
        }
        if reason:
            entry["reason"] = reason
        if "traceId" in (fields or {}):
            entry["traceId"] = str(fields["traceId"])  # as transition.lua records it
        self.histories[task_id].append(entry)
        self._count("accepted")
        return TransitionResult(True, "ok", TaskStatus(to).value, new_attempt)

    def stats(self) -> dict[str, int]:
        return dict(self.counters)
