"""InMemoryCompositeStore: the CompositeStore port over an InMemoryTaskStore, for unit tests.

A real implementation, not a mock: parents and children are tasks of the InMemoryTaskStore it
wraps (the same hashes, histories and `queue:pending` list its `submit` uses, so an
InMemoryDispatcher over that store places released children as it places any task), and every
coordinator write keeps the rules the Redis scripts keep: refused below the fence, releasing only
children still WAITING while their parent is RUNNING, expanding once, each under the one lock
that stands for a script's atomicity.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from common.adapters.memory_store import InMemoryTaskStore
from common.domain.composite import (
    ChildRole,
    CompositeKind,
    CompositeSpec,
    CompositeTree,
    Release,
    child_id,
    initial_children,
)
from common.domain.idempotency import IdempotencyConflict, retry_fingerprint
from common.domain.task import Task, TaskType
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.ports.composite import CompositeStore, CoordinatorWrite
from common.ports.task_store import CancelResult

_S = TaskStatus
_RETRYABLE = frozenset({_S.FAILED, _S.CANCELLED})


def _fingerprint(spec: CompositeSpec, retry_of: str | None) -> str:
    """What a requestId stands for: the whole document (without the key itself)."""
    doc = spec.model_copy(update={"request_id": None}).to_payload()
    return hashlib.sha256(f"{retry_of or ''}\n{doc}".encode()).hexdigest()


def _key(child: Task) -> str:
    """A child's place in its parent, as `child_id` derives ids from it."""
    role = ChildRole(child.role)
    if role in (ChildRole.MAP, ChildRole.REDUCE):
        return role.value
    if role == ChildRole.NODE:
        return f"node/{child.node}"
    if role == ChildRole.BROADCAST:
        return f"broadcast/{child.pinned_agent}"
    return f"{role.value}/{child.shard_index}"


class InMemoryCompositeStore(CompositeStore):
    def __init__(self, tasks: InMemoryTaskStore | None = None) -> None:
        # The task store it shares with the dispatcher and the agents' fakes: one world.
        self.store = tasks or InMemoryTaskStore()
        self.lists: dict[str, list[str]] = {}  # task:{parentId}:children
        self.active: set[str] = set()  # composites:active
        self.expanded: set[str] = set()  # parents whose `expanded` field is "1"
        self.writes: dict[str, int] = {}  # coordinator writes by name (a test counts them)

    @property
    def _lock(self):
        return self.store._lock

    # -- helpers (the caller holds the lock) -----------------------------------------------
    def _task(self, task_id: str) -> Task | None:
        data = self.store.tasks.get(task_id)
        return Task.from_hash(data) if data else None

    def _put(self, task: Task, actor: str, reason: str) -> None:
        self.store.tasks[task.task_id] = task.to_hash()
        entry = {
            "state": task.status.value,
            "at": task.created_at,
            "actor": actor,
            "epoch": 0,
            "attempt": 1,
        }
        self.store.histories[task.task_id] = [{**entry, "reason": reason} if reason else entry]

    def _move(
        self,
        task_id: str,
        to: TaskStatus,
        epoch: int,
        actor: str,
        reason: str = "",
        fields: Mapping[str, str] | None = None,
    ) -> None:
        """A coordinator's transition, its legality checked by the caller. A child released
        from WAITING starts its first attempt: no attempt number changes here."""
        data = self.store.tasks[task_id]
        now = time.time()
        src = data["status"]
        new_epoch = max(epoch, int(data.get("epoch", 0)))
        data.update(status=to.value, epoch=str(new_epoch), updatedAt=repr(now))
        if to in TERMINAL_STATES:
            data["finishedAt"] = repr(now)
        data.update(dict(fields or {}))
        entry = {
            "state": to.value,
            "from": src,
            "at": now,
            "actor": actor,
            "epoch": new_epoch,
            "attempt": int(data.get("attempt", 1)),
        }
        if reason:
            entry["reason"] = reason
        self.store.histories[task_id].append(entry)

    def _stale(self, epoch: int) -> bool:
        return epoch < self.store.fence

    def _parent(self, parent_id: str) -> Task | None:
        task = self._task(parent_id)
        return task if task is not None and task.task_type == TaskType.COMPOSITE else None

    def _count(self, what: str) -> None:
        self.writes[what] = self.writes.get(what, 0) + 1

    # -- clients -----------------------------------------------------------------------------
    def submit_composite(
        self, spec: CompositeSpec, actor: str = "client", retry_of: str | None = None
    ) -> tuple[Task, bool]:
        fingerprint = _fingerprint(spec, retry_of)
        with self._lock:
            if spec.request_id and spec.request_id in self.store.requests:
                existing = self.store.requests[spec.request_id]
                if self.store.fingerprints.get(spec.request_id) != fingerprint:
                    raise IdempotencyConflict(spec.request_id, existing)
                return Task.from_hash(self.store.tasks[existing]), False
            now = time.time()
            parent = Task(
                task_id=str(uuid.uuid4()),
                task_name=spec.display_name()[:200],
                task_type=TaskType.COMPOSITE,
                payload=spec.to_payload(),
                request_id=spec.request_id,
                created_at=now,
                updated_at=now,
                retry_of=retry_of,
            )
            self._put(parent, actor, "")
            children = initial_children(parent, spec)
            for child in children:
                self._put(child, actor, f"child of {parent.task_id}")
            self.lists[parent.task_id] = [c.task_id for c in children]
            self.active.add(parent.task_id)
            if spec.request_id:
                self.store.requests[spec.request_id] = parent.task_id
                self.store.fingerprints[spec.request_id] = fingerprint
            return parent, True

    def tree(self, parent_id: str) -> CompositeTree | None:
        with self._lock:
            parent = self._parent(parent_id)
            if parent is None:
                return None
            children = [t for c in self.lists.get(parent_id, []) if (t := self._task(c))]
        edges: list[tuple[str, str]] = []
        spec = CompositeSpec.from_payload(parent.payload)
        if spec.kind == CompositeKind.DAG:
            # By the children listed now: a retried DAG keeps its succeeded nodes' old ids.
            ids = {c.node: c.task_id for c in children if c.node}
            edges = [
                (ids[up], ids[n.name])
                for n in spec.nodes or []
                for up in n.depends_on
                if up in ids and n.name in ids
            ]
        return CompositeTree(parent, children, edges)

    def cancel_composite(self, parent_id: str, actor: str = "client") -> CancelResult:
        with self._lock:
            parent = self._parent(parent_id)
            if parent is None:
                return CancelResult(False, "missing", "", 0)
            if parent.status == _S.CANCELLED:
                return CancelResult(True, "already_cancelled", "CANCELLED", parent.attempt, "")
            if parent.status in TERMINAL_STATES:
                return CancelResult(False, "already_final", parent.status.value, parent.attempt)
            for cid in self.lists.get(parent_id, []):
                child = self._task(cid)
                if child is not None and child.status not in TERMINAL_STATES:
                    self._move(cid, _S.CANCELLED, child.epoch, actor, "its composite was cancelled")
            self._move(parent_id, _S.CANCELLED, parent.epoch, actor, "cancel requested")
            # Nothing of it is left for the coordinator to do.
            self.active.discard(parent_id)
            return CancelResult(True, "ok", "CANCELLED", parent.attempt, parent.status.value)

    def retry_composite(
        self, parent_id: str, actor: str = "client", request_id: str | None = None
    ) -> tuple[Task, bool]:
        with self._lock:
            fingerprint = retry_fingerprint(parent_id)
            if request_id and request_id in self.store.requests:
                existing = self.store.requests[request_id]
                if self.store.fingerprints.get(request_id) != fingerprint:
                    raise IdempotencyConflict(request_id, existing)
                again = self._task(existing)
                assert again is not None
                return again, False
            old = self._parent(parent_id)
            if old is None:
                raise ValueError(f"{parent_id} is not a composite task")
            if old.status not in _RETRYABLE:
                raise ValueError(
                    f"composite {parent_id} is {old.status.value}: only a FAILED or "
                    "CANCELLED composite is retried"
                )
            now = time.time()
            parent = old.model_copy(
                update={
                    "task_id": str(uuid.uuid4()),
                    "status": _S.PENDING,
                    "attempt": 1,
                    "epoch": 0,
                    "result": None,
                    "error": None,
                    "request_id": None,
                    "retry_of": parent_id,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            self._put(parent, actor, f"retry of {parent_id}")
            listed: list[str] = []
            for cid in self.lists.get(parent_id, []):
                child = self._task(cid)
                if child is None:
                    continue
                if child.status == _S.SUCCESS and child.role != ChildRole.REDUCE.value:
                    listed.append(cid)  # kept: the same task, listed again
                    continue
                again = child.model_copy(
                    update={
                        "task_id": child_id(parent.task_id, _key(child)),
                        "parent_id": parent.task_id,
                        "status": _S.WAITING,
                        "attempt": 1,
                        "epoch": 0,
                        "agent_id": None,
                        "result": None,
                        "error": None,
                        "exit_code": None,
                        "retry_of": cid,
                        "created_at": now,
                        "updated_at": now,
                        # A reduce step is given its input again when it is released.
                        "input": None if child.role == ChildRole.REDUCE.value else child.input,
                    }
                )
                self._put(again, actor, f"retry of {cid}")
                listed.append(again.task_id)
            self.lists[parent.task_id] = listed
            if parent_id in self.expanded:
                self.expanded.add(parent.task_id)
            self.active.add(parent.task_id)
            if request_id:
                self.store.requests[request_id] = parent.task_id
                self.store.fingerprints[request_id] = fingerprint
            return parent, True

    # -- the coordinator ------------------------------------------------------------------------
    def active_parents(self) -> list[str]:
        with self._lock:
            return sorted(self.active)

    def children(self, parent_id: str) -> list[str]:
        with self._lock:
            return list(self.lists.get(parent_id, []))

    def tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        with self._lock:
            return {t: task for t in task_ids if (task := self._task(t)) is not None}

    def statuses(self, task_ids: Sequence[str]) -> dict[str, str]:
        with self._lock:
            return {t: task.status.value for t in task_ids if (task := self._task(t)) is not None}

    def start(self, parent_id: str, epoch: int, actor: str) -> CoordinatorWrite:
        with self._lock:
            self._count("start")
            if self._stale(epoch):
                return CoordinatorWrite(False, "stale_epoch")
            parent = self._parent(parent_id)
            if parent is None:
                return CoordinatorWrite(False, "missing")
            if parent.status == _S.RUNNING:
                return CoordinatorWrite(True, "ok")
            if parent.status != _S.PENDING:
                return CoordinatorWrite(False, "parent_final")
            self._move(parent_id, _S.RUNNING, epoch, actor, "its coordinator started it")
            return CoordinatorWrite(True, "ok", 1)

    def _unfinished_parent(
        self, op: str, parent_id: str, epoch: int
    ) -> tuple[Task | None, CoordinatorWrite | None]:
        """The checks a fenced write to a parent's children makes first, as its script does:
        the epoch, then a parent that exists and has not ended. (parent, None) to go on."""
        self._count(op)
        if self._stale(epoch):
            return None, CoordinatorWrite(False, "stale_epoch")
        parent = self._parent(parent_id)
        if parent is None:
            return None, CoordinatorWrite(False, "missing")
        if parent.status in TERMINAL_STATES:
            return None, CoordinatorWrite(False, "parent_final")
        return parent, None

    def release(
        self, parent_id: str, releases: Sequence[Release], epoch: int, actor: str
    ) -> CoordinatorWrite:
        with self._lock:
            parent, refused = self._unfinished_parent("release", parent_id, epoch)
            if refused is not None:
                return refused
            assert parent is not None
            if parent.status != _S.RUNNING:
                return CoordinatorWrite(False, "parent_not_running")
            mine = set(self.lists.get(parent_id, []))
            count = 0
            for rel in releases:
                child = self._task(rel.child_id)
                if rel.child_id not in mine or child is None or child.status != _S.WAITING:
                    continue
                self._move(rel.child_id, _S.PENDING, epoch, actor, "released", rel.fields)
                # Onto queue:pending, where the scheduler places it as any task.
                self.store.queue.insert(0, child.to_message())
                count += 1
            return CoordinatorWrite(True, "ok", count)

    def expand(
        self, parent_id: str, children: Sequence[Task], epoch: int, actor: str
    ) -> CoordinatorWrite:
        with self._lock:
            parent, refused = self._unfinished_parent("expand", parent_id, epoch)
            if refused is not None:
                return refused
            assert parent is not None
            if parent_id in self.expanded:
                return CoordinatorWrite(False, "already_expanded")
            listed = self.lists.setdefault(parent_id, [])
            # Before the reduce step, which stays last.
            at = next(
                (i for i, c in enumerate(listed) if self._is_reduce(c)),
                len(listed),
            )
            new = [c for c in children if c.task_id not in self.store.tasks]
            for child in new:
                self._put(child, actor, f"child of {parent_id}")
            listed[at:at] = [c.task_id for c in new]
            self.expanded.add(parent_id)
            return CoordinatorWrite(True, "ok", len(new))

    def _is_reduce(self, task_id: str) -> bool:
        data = self.store.tasks.get(task_id, {})
        return data.get("role") == ChildRole.REDUCE.value

    def skip(
        self, parent_id: str, child_ids: Sequence[str], reason: str, epoch: int, actor: str
    ) -> CoordinatorWrite:
        def waiting(status: _S) -> bool:
            return status == _S.WAITING

        return self._move_children(
            "skip", parent_id, child_ids, _S.SKIPPED, waiting, reason, epoch, actor
        )

    def cancel_children(
        self, parent_id: str, child_ids: Sequence[str], reason: str, epoch: int, actor: str
    ) -> CoordinatorWrite:
        def released(status: _S) -> bool:
            return status != _S.WAITING and status not in TERMINAL_STATES

        return self._move_children(
            "cancel_children", parent_id, child_ids, _S.CANCELLED, released, reason, epoch, actor
        )

    def _move_children(
        self,
        op: str,
        parent_id: str,
        child_ids: Sequence[str],
        to: _S,
        eligible: Callable[[_S], bool],
        reason: str,
        epoch: int,
        actor: str,
    ) -> CoordinatorWrite:
        """Each listed child of this parent in an `eligible` state -> `to`, the reason as its
        error; fenced as a whole, as the scripts are."""
        with self._lock:
            self._count(op)
            if self._stale(epoch):
                return CoordinatorWrite(False, "stale_epoch")
            mine = set(self.lists.get(parent_id, []))
            count = 0
            for cid in child_ids:
                child = self._task(cid)
                if cid not in mine or child is None or not eligible(child.status):
                    continue
                self._move(cid, to, epoch, actor, reason, {"error": reason})
                count += 1
            return CoordinatorWrite(True, "ok", count)

    def finish(
        self,
        parent_id: str,
        status: str,
        epoch: int,
        actor: str,
        *,
        result: str | None = None,
        error: str | None = None,
    ) -> CoordinatorWrite:
        to = TaskStatus(status)
        if to not in (_S.SUCCESS, _S.FAILED):
            raise ValueError(f"a composite finishes SUCCESS or FAILED, not {to.value}")
        with self._lock:
            self._count("finish")
            if self._stale(epoch):
                return CoordinatorWrite(False, "stale_epoch")
            parent = self._parent(parent_id)
            if parent is None:
                self.active.discard(parent_id)
                return CoordinatorWrite(False, "missing")
            self.active.discard(parent_id)
            if parent.status in TERMINAL_STATES:
                return CoordinatorWrite(False, "parent_final")
            fields = {k: v for k, v in (("result", result), ("error", error)) if v is not None}
            self._move(parent_id, to, epoch, actor, error or "", fields)
            return CoordinatorWrite(True, "ok", 1)
