"""The composite store port: parents, their children, and the coordinator's fenced writes.

`RedisCompositeStore` (common/adapters/redis_composite.py) is the real adapter;
`InMemoryCompositeStore` (common/adapters/memory_composite.py) implements the same contract for
unit tests. Clients use the first group of methods (the API, the CLI); the coordinator in the
scheduler's leader uses the second, each write fenced with the leader's epoch, so a deposed
leader's coordinator changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

from common.domain.composite import CompositeSpec, CompositeTree, Release
from common.domain.task import Task
from common.ports.task_store import CancelResult

# `Release` is the domain's (decide() plans releases); it is named here too, where the store's
# `release` takes it.
__all__ = ["CompositeStore", "CoordinatorWrite", "Release"]


class CoordinatorWrite(NamedTuple):
    """What a fenced coordinator write did. `stale`: the epoch is older than fence:scheduler
    (a newer leader exists; the caller steps down). `count`: children it moved."""

    accepted: bool
    # "ok", "stale_epoch", "parent_final", "already_expanded", "missing",
    # "parent_not_running" (a release for a parent not started yet)
    reason: str
    count: int = 0

    @property
    def stale(self) -> bool:
        return self.reason == "stale_epoch"


class CompositeStore(ABC):
    # -- clients -----------------------------------------------------------------------------
    @abstractmethod
    def submit_composite(
        self, spec: CompositeSpec, actor: str = "client", retry_of: str | None = None
    ) -> tuple[Task, bool]:
        """Store the parent (COMPOSITE, PENDING, its payload the document) and its initial
        children (WAITING, `initial_children`), in one atomic step, and list it as active.
        Returns (parent, created); the same requestId returns the first parent (created False),
        a different document under it raises IdempotencyConflict."""

    @abstractmethod
    def tree(self, parent_id: str) -> CompositeTree | None:
        """The parent, its children in listed order, and a DAG's edges by child id; None if
        `parent_id` is no composite parent."""

    @abstractmethod
    def cancel_composite(self, parent_id: str, actor: str = "client") -> CancelResult:
        """Cancel the parent and every child not finished, atomically (running children are
        then killed by their agents, which see CANCELLED). Idempotent, as TaskStore.cancel."""

    @abstractmethod
    def retry_composite(
        self, parent_id: str, actor: str = "client", request_id: str | None = None
    ) -> tuple[Task, bool]:
        """A new parent (retryOf = the old one) for a FAILED or CANCELLED composite: its
        succeeded children are kept (the same tasks, listed again), every other child is a new
        WAITING task (retryOf = the old child), a reduce step runs again. Returns (new parent,
        created). With `request_id` the retry is idempotent: the same id again returns the
        first new parent (created False); an id used for anything else raises
        IdempotencyConflict. ValueError if the parent is not a finished-but-unsuccessful
        composite."""

    # -- the coordinator (the scheduler's leader) --------------------------------------------
    @abstractmethod
    def active_parents(self) -> list[str]:
        """Ids of the composites not finished yet (`composites:active`)."""

    @abstractmethod
    def children(self, parent_id: str) -> list[str]:
        """The ids of a parent's children, in listed order."""

    @abstractmethod
    def tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        """The current state of these tasks, in one round trip (absent ids are left out)."""

    @abstractmethod
    def statuses(self, task_ids: Sequence[str]) -> dict[str, str]:
        """Just the status of each of these tasks, in one round trip (absent ids left out):
        what the coordinator reads of its running children on each tick, fetching a child
        whole only when its status moved."""

    @abstractmethod
    def start(self, parent_id: str, epoch: int, actor: str) -> CoordinatorWrite:
        """The parent PENDING -> RUNNING (fenced)."""

    @abstractmethod
    def release(
        self, parent_id: str, releases: Sequence[Release], epoch: int, actor: str
    ) -> CoordinatorWrite:
        """WAITING -> PENDING and onto queue:pending for each child still WAITING, while the
        parent is RUNNING (fenced; one script). `count`: how many were released."""

    @abstractmethod
    def expand(
        self, parent_id: str, children: Sequence[Task], epoch: int, actor: str
    ) -> CoordinatorWrite:
        """Add children created late (a map step's items, a broadcast's agents), WAITING,
        once: a second call for the same parent is refused ("already_expanded")."""

    @abstractmethod
    def skip(
        self, parent_id: str, child_ids: Sequence[str], reason: str, epoch: int, actor: str
    ) -> CoordinatorWrite:
        """WAITING -> SKIPPED for each child still WAITING (fenced)."""

    @abstractmethod
    def cancel_children(
        self, parent_id: str, child_ids: Sequence[str], reason: str, epoch: int, actor: str
    ) -> CoordinatorWrite:
        """Each listed child that was released and has not ended -> CANCELLED (fenced; one
        script), `reason` in its history and as its error: the children a FAIL_FAST parent
        stops, or those still running under a parent a client cancelled. Their agents see
        CANCELLED and kill them. `count`: how many it cancelled."""

    @abstractmethod
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
        """The parent RUNNING (or PENDING) -> SUCCESS / FAILED, off `composites:active`
        (fenced). A parent already final is only taken off the active set."""
