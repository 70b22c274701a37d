"""What the task verbs of `tasklab` talk to: Redis directly, or the REST API.

The verbs (submit, composite, status, list, logs, cancel, retry, agents) are written once, against
`TaskBackend`. One place picks an implementation (`tasks()` in common/cli/main.py): the REST
API (`common.cli.remote.ApiTaskClient`) when `TASKLAB_API_URL` is set, else `RedisBackend`, the
`TaskClient` facade over the task store, as in stages 1 to 3. Both answer with the same domain
objects (`Task`, timeline entries as the store keeps them), so a verb prints the same lines
whichever path it took, and a failure either side becomes a `CliError`: one line and an exit
code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from common.config import Settings
from common.domain.task import Task
from common.domain.transitions import TaskStatus
from common.ports.archive import ArchiveUnavailable, NoArchive, TaskArchive

if TYPE_CHECKING:
    from redis import Redis

    from common.client import TaskClient

API_URL_ENV = "TASKLAB_API_URL"
API_KEY_ENV = "TASKLAB_API_KEY"


class CliError(Exception):
    """An expected failure, said in one line; `code` is the exit code (2 = bad input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ChildRow:
    """One child of a composite parent, as `tasklab status` lists it."""

    task_id: str
    task_name: str
    role: str
    status: TaskStatus
    shard_index: int | None = None
    node: str | None = None
    agent_id: str | None = None


@dataclass(frozen=True)
class TaskInfo:
    """A task with its timeline (entries as the store appends them) and its output lines;
    for a composite parent, its children in listed order, a DAG's edges (by child id) and how
    many children are in each state."""

    task: Task
    timeline: list[dict] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    children: list[ChildRow] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    progress: dict[str, int] = field(default_factory=dict)
    # Read from the PostgreSQL archive: Redis no longer has the task (stage 5).
    archived: bool = False


class TaskBackend(ABC):
    """The task verbs' needs, in the CLI's terms. An unknown task id raises, never None."""

    @abstractmethod
    def submit(self, data: dict, wait: float | None = None) -> tuple[Task, bool]:
        """Submit `data` (camelCase fields); return (task, created). With `wait`, the task is
        returned once final or when `wait` seconds have passed, whichever comes first."""

    @abstractmethod
    def submit_composite(self, document: dict, wait: float | None = None) -> tuple[Task, bool]:
        """Submit a composite document (camelCase); return (parent, created), the parent once
        final or after `wait` seconds when `wait` is given."""

    @abstractmethod
    def info(self, task_id: str) -> TaskInfo:
        """The task; a composite parent with its children, edges and progress."""

    @abstractmethod
    def logs(self, task_id: str) -> list[str]: ...

    @abstractmethod
    def follow_logs(self, task_id: str) -> Iterator[str]:
        """Output lines as they arrive, until the task is final and every line is delivered."""

    @abstractmethod
    def list_tasks(self, status: TaskStatus | None, offset: int, limit: int) -> list[Task]:
        """Tasks newest first, from the `offset`-th, at most `limit` of them."""

    @abstractmethod
    def cancel(self, task_id: str) -> None:
        """Cancel, or raise CliError saying why not (a finished task cannot be cancelled)."""

    @abstractmethod
    def retry(self, task_id: str) -> str:
        """Submit a new task with the spec of a FAILED or CANCELLED one; return the new id."""

    @abstractmethod
    def agents(self) -> list[dict]:
        """One row per agent seen: agentId, alive, lastHeartbeat (epoch seconds), processing."""


class RedisBackend(TaskBackend):
    """The verbs over `TaskClient` and Redis itself: what `tasklab` did before the API."""

    def __init__(
        self,
        client: TaskClient,
        redis: Redis | None = None,
        actor: str = "cli",
        archive: TaskArchive | None = None,
    ) -> None:
        self.client = client
        self.redis = redis  # for the agents' heartbeat keys, which no facade covers
        self.actor = actor
        # Asked only for a task Redis no longer has; NoArchive when none is configured.
        self.archive = archive or NoArchive()

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisBackend:
        from common.adapters.redis_client import redis_client
        from common.adapters.redis_composite import RedisCompositeStore
        from common.adapters.redis_store import RedisTaskStore
        from common.client import TaskClient

        redis = redis_client(settings.redis_url)
        client = TaskClient(
            RedisTaskStore(redis), settings.max_payload_bytes, RedisCompositeStore(redis)
        )
        archive: TaskArchive | None = None
        if settings.archive_dsn:
            # Imported only when configured: the CLI runs without the database driver.
            from common.archive.store import PostgresArchive

            archive = PostgresArchive(settings.archive_dsn)
        return cls(client, redis, archive=archive)

    def _archived(self, task_id: str) -> TaskInfo | None:
        try:
            found = self.archive.get(task_id)
        except ArchiveUnavailable as exc:
            raise CliError(f"task {task_id} is not in Redis, and {exc}", 1) from None
        task = None if found is None else found.task()
        if task is None:
            return None
        return TaskInfo(task, found.timeline(), [], archived=True)

    def submit(self, data: dict, wait: float | None = None) -> tuple[Task, bool]:
        task, created = self.client.submit(data, actor=self.actor)
        if wait is not None:
            task = self.client.wait(task.task_id, wait)
        return task, created

    def submit_composite(self, document: dict, wait: float | None = None) -> tuple[Task, bool]:
        parent, created = self.client.submit_composite(document, actor=self.actor)
        if wait is not None:
            parent = self.client.wait(parent.task_id, wait)
        return parent, created

    def info(self, task_id: str) -> TaskInfo:
        from common.client import TaskNotFound

        try:
            task = self.client.get(task_id)
        except TaskNotFound:
            archived = self._archived(task_id)
            if archived is None:
                raise
            return archived
        store = self.client.store
        tree = self.client.tree(task_id)
        if tree is None:
            return TaskInfo(task, store.history(task_id), store.logs(task_id))
        rows = [
            ChildRow(
                task_id=c.task_id,
                task_name=c.task_name,
                role=c.role or "",
                status=c.status,
                shard_index=c.shard_index,
                node=c.node,
                agent_id=c.agent_id,
            )
            for c in tree.children
        ]
        return TaskInfo(
            tree.parent,
            store.history(task_id),
            store.logs(task_id),
            children=rows,
            edges=list(tree.edges),
            progress=dict(tree.progress.counts),
        )

    def logs(self, task_id: str) -> list[str]:
        self.client.get(task_id)
        return self.client.store.logs(task_id)

    def follow_logs(self, task_id: str) -> Iterator[str]:
        self.client.get(task_id)
        return self.client.follow_logs(task_id)

    def list_tasks(self, status: TaskStatus | None, offset: int, limit: int) -> list[Task]:
        return self.client.store.list_tasks(status, offset=offset, limit=limit)

    def cancel(self, task_id: str) -> None:
        result = self.client.cancel(task_id, actor=self.actor)
        if not result.accepted:
            raise CliError(f"cannot cancel task {task_id}: it is {result.status}")

    def retry(self, task_id: str) -> str:
        return self.client.retry(task_id, actor=self.actor)[0].task_id

    def agents(self) -> list[dict]:
        from common import keys

        if self.redis is None:
            raise CliError("listing agents needs Redis, and this backend was given none")
        rows = []
        for member in sorted(self.redis.smembers(keys.AGENTS_SEEN)):
            agent_id = member.decode()
            beat = self.redis.get(keys.heartbeat(agent_id))
            rows.append(
                {
                    "agentId": agent_id,
                    "alive": beat is not None,
                    "lastHeartbeat": float(beat) if beat else None,
                    "processing": self.redis.llen(keys.processing(agent_id)),
                }
            )
        return rows


__all__ = [
    "API_KEY_ENV",
    "API_URL_ENV",
    "ChildRow",
    "CliError",
    "RedisBackend",
    "TaskBackend",
    "TaskInfo",
]
