"""RedisCompositeStore: composite tasks on Redis, every write one atomic Lua script.

A composite is its parent's hash (`task:{parentId}`, taskType COMPOSITE, the document as its
payload), its children's hashes (ordinary tasks with a `parentId`), the list of its children
in order (`task:{parentId}:children`) and, while it is not final, its id in `composites:active`.
Each script below names every key it touches in KEYS (a parent's children included, two keys
each), so a composite of 10 000 children is created, cancelled or retried in one call with
nothing interleaved: no reader ever sees a parent with half its children.

The coordinator's writes (start, release, expand, skip, finish) are fenced with the leader's
epoch as a whole: a script whose epoch is below `fence:scheduler` changes nothing at all.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence

from redis import Redis

from common import keys
from common.adapters.redis_client import as_text as _s
from common.adapters.redis_scripts import script_source
from common.adapters.redis_store import task_from_reply
from common.domain.composite import (
    ChildRole,
    CompositeSpec,
    CompositeTree,
    child_id,
    edges,
    initial_children,
)
from common.domain.idempotency import (
    IdempotencyConflict,
    composite_fingerprint,
    retry_fingerprint,
)
from common.domain.task import Task, TaskType
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.ports.composite import CompositeStore, CoordinatorWrite, Release
from common.ports.task_store import CancelResult

# The scripts, each built as LEGAL + prelude + these library files + its body: the composite
# helpers, and the archive's outbox entry of the scripts that end a task (archive_outbox.lua).
LIBS = ("composite_lib", "archive_outbox")
SCRIPTS = (
    "submit",
    "cancel",
    "retry",
    "start",
    "release",
    "expand",
    "skip",
    "cancel_children",
    "finish",
)

# How often a cancel reads the children list again when an expand changed it meanwhile: an
# expand runs once per parent, so a second read always matches.
_CANCEL_READS = 3


def child_key(child: Task) -> str:
    """The place of a child in its parent (`shard/3`, `node/build`): what its id derives from
    (common.domain.composite.child_id), so a retried child gets the id a fresh one would."""
    role = child.role or ""
    if role in (ChildRole.MAP, ChildRole.REDUCE):
        return role
    if role == ChildRole.NODE:
        return f"node/{child.node}"
    if role == ChildRole.BROADCAST:
        return f"broadcast/{child.pinned_agent}"
    return f"{role}/{child.shard_index}"


def _fields(task: Task, **extra: str) -> str:
    return json.dumps({**task.to_hash(), **extra})


def _task_keys(task_ids: Iterable[str]) -> list[str]:
    """Each task's hash and history keys, in pairs: how every composite script takes children."""
    return [k for i in task_ids for k in (keys.task(i), keys.history(i))]


def _creations(children: Iterable[Task]) -> list[str]:
    """Each child's id and hash fields, in pairs: the ARGV of a script that creates them."""
    return [a for c in children for a in (c.task_id, _fields(c))]


def _write(raw: list) -> CoordinatorWrite:
    return CoordinatorWrite(bool(int(raw[0])), _s(raw[1]), int(raw[2]))


class RedisCompositeStore(CompositeStore):
    def __init__(self, client: Redis) -> None:
        self.client = client
        self._scripts = {
            name: client.register_script(script_source(f"composite_{name}", *LIBS))
            for name in SCRIPTS
        }

    # -- clients -------------------------------------------------------------------------------
    def submit_composite(
        self, spec: CompositeSpec, actor: str = "client", retry_of: str | None = None
    ) -> tuple[Task, bool]:
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
        children = initial_children(parent, spec)
        parent_id, created, *conflict = self._scripts["submit"](
            keys=[
                keys.task(parent.task_id),
                keys.history(parent.task_id),
                keys.TASK_INDEX,
                *keys.request_keys(spec.request_id),
                keys.children(parent.task_id),
                keys.COMPOSITES_ACTIVE,
                *_task_keys(c.task_id for c in children),
            ],
            args=[
                parent.task_id,
                _fields(parent),
                repr(now),
                actor,
                "1" if spec.request_id else "0",
                composite_fingerprint(spec),
                *_creations(children),
            ],
        )
        if conflict:
            assert spec.request_id
            raise IdempotencyConflict(spec.request_id, _s(parent_id))
        if not int(created):
            existing = self._get(_s(parent_id))
            assert existing is not None
            return existing, False
        return parent, True

    def tree(self, parent_id: str) -> CompositeTree | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.task(parent_id))
        pipe.lrange(keys.children(parent_id), 0, -1)
        data, ids = pipe.execute()
        if not data:
            return None
        parent = task_from_reply(data)
        if parent.task_type != TaskType.COMPOSITE:
            return None
        found = self.tasks([_s(i) for i in ids])
        children = [found[_s(i)] for i in ids if _s(i) in found]
        return CompositeTree(parent, children, _edges(parent, children))

    def cancel_composite(self, parent_id: str, actor: str = "client") -> CancelResult:
        for _ in range(_CANCEL_READS):
            ids = [_s(i) for i in self.client.lrange(keys.children(parent_id), 0, -1)]
            reply = self._scripts["cancel"](
                keys=[
                    keys.task(parent_id),
                    keys.history(parent_id),
                    keys.TRANSITION_STATS,
                    keys.COMPOSITES_ACTIVE,
                    keys.children(parent_id),
                    keys.ARCHIVE_OUTBOX,
                    *_task_keys(ids),
                ],
                args=[parent_id, actor, repr(time.time())],
            )
            accepted, reason, status, attempt, cancelled_from, _count = reply
            if _s(reason) != "moved":
                return CancelResult(
                    bool(int(accepted)), _s(reason), _s(status), int(attempt), _s(cancelled_from)
                )
        raise RuntimeError(f"the children of {parent_id} kept changing while it was cancelled")

    def retry_composite(
        self, parent_id: str, actor: str = "client", request_id: str | None = None
    ) -> tuple[Task, bool]:
        if request_id:
            # A replay is answered before the old tree is read: it may have changed since.
            existing = self.client.get(keys.request(request_id))
            if existing is not None:
                return self._replayed(parent_id, request_id, _s(existing))
        tree = self.tree(parent_id)
        if tree is None:
            raise ValueError(f"{parent_id} is not a composite task")
        old = tree.parent
        if old.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise ValueError(
                f"composite {parent_id} is {old.status.value}: only a FAILED or CANCELLED "
                "composite can be retried"
            )
        running = [c for c in tree.children if c.status not in TERMINAL_STATES]
        if running:
            raise ValueError(
                f"composite {parent_id} still has {len(running)} unfinished children "
                f"(first: {running[0].task_id} is {running[0].status.value}); retry it once "
                "they end"
            )
        now = time.time()
        parent = Task(
            task_id=str(uuid.uuid4()),
            task_name=old.task_name,
            task_type=TaskType.COMPOSITE,
            payload=old.payload,
            execution_timeout=old.execution_timeout,
            retry_count=old.retry_count,
            created_at=now,
            updated_at=now,
            retry_of=old.task_id,
        )
        expanded = self.client.hget(keys.task(parent_id), "expanded")
        parent_fields = {"expanded": "1"} if _s(expanded or b"") == "1" else {}
        order: list[str] = []
        fresh: list[Task] = []
        kept: list[str] = []
        for child in tree.children:
            if child.status == TaskStatus.SUCCESS:
                order.append(child.task_id)
                kept.append(child.task_id)
                continue
            new = Task(
                task_id=child_id(parent.task_id, child_key(child)),
                task_name=child.task_name,
                task_type=child.task_type,
                payload=child.payload,
                execution_timeout=child.execution_timeout,
                retry_count=child.retry_count,
                status=TaskStatus.WAITING,
                created_at=now,
                updated_at=now,
                retry_of=child.task_id,
                parent_id=parent.task_id,
                role=child.role,
                shard_index=child.shard_index,
                shard_total=child.shard_total,
                node=child.node,
                # A reduce step is given its input when it is released again.
                input=None if child.role == ChildRole.REDUCE else child.input,
                pinned_agent=child.pinned_agent,
            )
            order.append(new.task_id)
            fresh.append(new)
        ok, reason, detail = self._scripts["retry"](
            keys=[
                keys.task(parent_id),
                keys.task(parent.task_id),
                keys.history(parent.task_id),
                keys.TASK_INDEX,
                keys.children(parent.task_id),
                keys.COMPOSITES_ACTIVE,
                *keys.request_keys(request_id),
                *_task_keys(c.task_id for c in fresh),
                *(keys.task(i) for i in kept),
            ],
            args=[
                parent.task_id,
                _fields(parent, **parent_fields),
                repr(now),
                actor,
                json.dumps(order),
                len(fresh),
                "1" if request_id else "0",
                retry_fingerprint(parent_id),
                *_creations(fresh),
            ],
        )
        if int(ok) == 2 and request_id:
            return self._replayed(parent_id, request_id, _s(detail))
        if _s(reason) == "conflict" and request_id:
            raise IdempotencyConflict(request_id, _s(detail))
        if not int(ok):
            raise ValueError(
                f"composite {parent_id} cannot be retried now: {_s(reason)} ({_s(detail)})"
            )
        return parent, True

    def _replayed(self, parent_id: str, request_id: str, existing: str) -> tuple[Task, bool]:
        """The parent an earlier retry with this requestId made, or IdempotencyConflict if the
        id names anything else (a submit, the retry of another task)."""
        stored = self.client.hmget(keys.request_fingerprint(request_id), "taskId", "fingerprint")
        taken_by, fingerprint = (_s(v) if v is not None else None for v in stored)
        if taken_by == existing and fingerprint and fingerprint != retry_fingerprint(parent_id):
            raise IdempotencyConflict(request_id, existing)
        task = self._get(existing)
        if task is None:
            raise ValueError(f"requestId {request_id!r} names task {existing}, which is gone")
        return task, False

    # -- the coordinator -----------------------------------------------------------------------
    def active_parents(self) -> list[str]:
        return sorted(_s(m) for m in self.client.smembers(keys.COMPOSITES_ACTIVE))

    def children(self, parent_id: str) -> list[str]:
        return [_s(i) for i in self.client.lrange(keys.children(parent_id), 0, -1)]

    def tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(keys.task(task_id))
        return {
            task_id: task_from_reply(data)
            for task_id, data in zip(task_ids, pipe.execute(), strict=True)
            if data
        }

    def statuses(self, task_ids: Sequence[str]) -> dict[str, str]:
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(keys.task(task_id), "status")
        return {
            t: _s(status)
            for t, status in zip(task_ids, pipe.execute(), strict=True)
            if status is not None
        }

    def start(self, parent_id: str, epoch: int, actor: str) -> CoordinatorWrite:
        return _write(
            self._scripts["start"](
                keys=[
                    keys.task(parent_id),
                    keys.history(parent_id),
                    keys.TRANSITION_STATS,
                    keys.SCHEDULER_FENCE,
                ],
                args=[epoch, actor, repr(time.time())],
            )
        )

    def release(
        self, parent_id: str, releases: Sequence[Release], epoch: int, actor: str
    ) -> CoordinatorWrite:
        if not releases:
            return CoordinatorWrite(True, "ok", 0)
        found = self.tasks([r.child_id for r in releases])
        released: list[str] = []
        args: list[str] = []
        for r in releases:
            task = found.get(r.child_id)
            if task is None:
                continue  # gone (deleted by hand): nothing to release
            released.append(r.child_id)
            # The message is built from the child's spec, which never changes: the scheduler
            # and the claim scripts take it as any submitted task's message.
            args += [r.child_id, json.dumps({k: str(v) for k, v in r.fields.items()})]
            args.append(task.to_message())
        if not released:
            return CoordinatorWrite(True, "ok", 0)
        return _write(
            self._scripts["release"](
                keys=[
                    keys.task(parent_id),
                    keys.TRANSITION_STATS,
                    keys.SCHEDULER_FENCE,
                    keys.PENDING_QUEUE,
                    *_task_keys(released),
                ],
                args=[parent_id, epoch, actor, repr(time.time()), *args],
            )
        )

    def expand(
        self, parent_id: str, children: Sequence[Task], epoch: int, actor: str
    ) -> CoordinatorWrite:
        listed = self.children(parent_id)
        reduce = ""
        if listed:
            last = self.client.hget(keys.task(listed[-1]), "role")
            if _s(last or b"") == ChildRole.REDUCE:
                reduce = listed[-1]
        return _write(
            self._scripts["expand"](
                keys=[
                    keys.task(parent_id),
                    keys.TRANSITION_STATS,
                    keys.SCHEDULER_FENCE,
                    keys.children(parent_id),
                    keys.TASK_INDEX,
                    *_task_keys(c.task_id for c in children),
                ],
                args=[
                    parent_id,
                    epoch,
                    actor,
                    repr(time.time()),
                    reduce,
                    *_creations(children),
                ],
            )
        )

    def skip(
        self, parent_id: str, child_ids: Sequence[str], reason: str, epoch: int, actor: str
    ) -> CoordinatorWrite:
        return self._children_write("skip", parent_id, child_ids, reason, epoch, actor)

    def cancel_children(
        self, parent_id: str, child_ids: Sequence[str], reason: str, epoch: int, actor: str
    ) -> CoordinatorWrite:
        return self._children_write("cancel_children", parent_id, child_ids, reason, epoch, actor)

    def _children_write(
        self,
        script: str,
        parent_id: str,
        child_ids: Sequence[str],
        reason: str,
        epoch: int,
        actor: str,
    ) -> CoordinatorWrite:
        """One fenced script over listed children that all get the same reason: the parent, the
        counters, the fence and the archive's outbox, then each child's hash and history."""
        return _write(
            self._scripts[script](
                keys=[
                    keys.task(parent_id),
                    keys.TRANSITION_STATS,
                    keys.SCHEDULER_FENCE,
                    keys.ARCHIVE_OUTBOX,
                    *_task_keys(child_ids),
                ],
                args=[parent_id, epoch, actor, repr(time.time()), reason, *child_ids],
            )
        )

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
        final = TaskStatus(status)
        if final not in (TaskStatus.SUCCESS, TaskStatus.FAILED):
            raise ValueError(f"a composite finishes SUCCESS or FAILED, not {final.value}")
        fields = {k: v for k, v in (("result", result), ("error", error)) if v is not None}
        return _write(
            self._scripts["finish"](
                keys=[
                    keys.task(parent_id),
                    keys.history(parent_id),
                    keys.TRANSITION_STATS,
                    keys.SCHEDULER_FENCE,
                    keys.COMPOSITES_ACTIVE,
                    keys.ARCHIVE_OUTBOX,
                ],
                args=[parent_id, final.value, epoch, actor, repr(time.time()), json.dumps(fields)],
            )
        )

    # -- reading -------------------------------------------------------------------------------
    def _get(self, task_id: str) -> Task | None:
        data = self.client.hgetall(keys.task(task_id))
        return task_from_reply(data) if data else None


def _edges(parent: Task, children: list[Task]) -> list[tuple[str, str]]:
    """A DAG's edges by child id. Read through the children's node names, not derived from the
    parent's id: a retried parent lists the old succeeded children under their own ids."""
    try:
        spec = CompositeSpec.from_payload(parent.payload)
    except ValueError:
        return []
    by_node = {c.node: c.task_id for c in children if c.node}
    return [(by_node[a], by_node[b]) for a, b in edges(spec) if a in by_node and b in by_node]
