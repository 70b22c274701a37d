"""Port: the archive of final states, as the readers (the REST API, the CLI) see it.

Redis holds a task until retention deletes it (common/adapters/redis_retention.py); the archive
(PostgreSQL, stage 5: common/archive) keeps one row per attempt's final state for good. A reader
asks Redis first and this port only when Redis no longer has the task. Behind a port so the API
and the CLI never import a database driver: with no archive configured they are given
`NoArchive`, and PostgreSQL is not needed to run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from common.domain.task import Task


class ArchiveUnavailable(RuntimeError):
    """The archive is configured but does not answer (a reader says 503, not 404)."""


@dataclass(frozen=True)
class ArchivedAttempt:
    """One attempt's final state, as the archiver wrote it."""

    task_id: str
    attempt: int
    status: str
    agent_id: str
    finished_at: float  # seconds since the epoch (the agent's report)
    archived_at: float
    epoch: int = 0
    result: str | None = None
    error: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    duration: float | None = None
    task_type: str | None = None
    task_name: str | None = None
    parent_id: str | None = None
    created_at: float | None = None
    # The task's Redis hash (camelCase fields) when the row was archived; {} if Redis had
    # already lost it.
    task: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchivedTask:
    """Every archived attempt of a task, oldest first; the last one is where the task ended."""

    task_id: str
    attempts: tuple[ArchivedAttempt, ...]

    @property
    def last(self) -> ArchivedAttempt:
        return self.attempts[-1]

    def task(self) -> Task | None:
        """The task as it ended: its description from the archived Redis hash, its outcome
        from the last attempt. None when the rows were archived without the hash (Redis had
        already deleted the task), so there is no spec to show."""
        last = self.last
        doc = next((a.task for a in reversed(self.attempts) if a.task), {})
        if not doc:
            return None
        fields = {
            **doc,
            "taskId": self.task_id,
            "status": last.status,
            "attempt": str(last.attempt),
            "agentId": last.agent_id,
            "updatedAt": repr(last.finished_at),
        }
        for name, value in (
            ("result", last.result),
            ("error", last.error),
            ("exitCode", last.exit_code),
        ):
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = str(value)
        try:
            return Task.from_hash(fields)
        except ValidationError:
            return None

    def timeline(self) -> list[dict[str, Any]]:
        """One entry per archived attempt's end, in the store's history format."""
        return [
            {
                "state": a.status,
                "at": a.finished_at,
                "actor": f"agent:{a.agent_id}",
                "epoch": a.epoch,
                "attempt": a.attempt,
                "reason": "archived",
            }
            for a in self.attempts
        ]


class TaskArchive(Protocol):
    def get(self, task_id: str) -> ArchivedTask | None:
        """The task's archived attempts, or None if it was never archived.

        Raises ArchiveUnavailable when the archive cannot be asked."""
        ...


class NoArchive:
    """No archive configured: nothing was ever archived."""

    def get(self, task_id: str) -> ArchivedTask | None:
        return None
