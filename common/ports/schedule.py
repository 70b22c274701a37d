"""The schedule store port: cron schedules, their runs, and the firer's fenced write.

`RedisScheduleStore` (common/adapters/redis_schedule.py) is the real adapter;
`InMemoryScheduleStore` (common/adapters/memory_schedule.py) implements the same contract for
unit tests. Clients (the API, the CLI) use the first group of methods; the firer in the
scheduler leader's term (common/scheduling/schedules.py) the second. Its one write, `sync`,
is fenced with the leader's epoch and keyed by the fire time: a fire time fires at most once,
whichever leader asks and however often.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from common.domain.schedule import Run, ScheduleSpec
from common.domain.task import Task


class ScheduleExists(Exception):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a schedule named {name!r} exists already")


class ScheduleNotFound(LookupError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no schedule {name!r}")


@dataclass(frozen=True)
class ScheduleState:
    """A schedule as stored: its document (with `suspend` as it is now) and its status."""

    spec: ScheduleSpec
    uid: str  # the run ids derive from it: a schedule made again under a name is a new one
    created_at: float
    updated_at: float
    last_schedule_time: float | None = None
    last_run_id: str | None = None
    last_missed: int = 0  # fire times due at the last fire or skip (the one run included)
    last_skip: str | None = None  # why the last due time did not run (forbid_active, ...)
    next_check: float | None = None  # when the firer looks next
    active: tuple[Run, ...] = ()
    succeeded: tuple[Run, ...] = ()  # finished runs kept, newest first
    failed: tuple[Run, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name


class Finished(NamedTuple):
    """A run the firer saw final (or gone): it leaves the active set for its history."""

    run_id: str
    outcome: str  # "succeeded", "failed", or "gone" (deleted: it leaves no history)


@dataclass(frozen=True)
class Sync:
    """What the firer writes for one schedule in one call.

    `fire`: the run to create for `fire_at` (None: nothing fires); `finished`: runs seen
    final; `delete`: finished runs past the history limits (deleted, as Kubernetes deletes
    the Jobs); `next_check`: the schedule's next place in the due set."""

    uid: str
    next_check: float
    fire_at: float | None = None
    fire: Task | None = None
    missed: int = 0
    skip: str = ""
    finished: Sequence[Finished] = field(default=())
    delete: Sequence[str] = field(default=())


class SyncResult(NamedTuple):
    accepted: bool  # False: refused as a whole ("stale_epoch", "gone")
    outcome: str  # "fired", "already" (this fire time fired before), "suspended", "recorded",
    # or the refusal's reason


class ScheduleStore(ABC):
    # -- clients ----------------------------------------------------------------------------
    @abstractmethod
    def create(self, spec: ScheduleSpec, now: float, next_check: float) -> ScheduleState:
        """Store a new schedule; ScheduleExists if the name is taken."""

    @abstractmethod
    def get(self, name: str) -> ScheduleState | None: ...

    @abstractmethod
    def list(self) -> list[ScheduleState]:
        """Every schedule, by name."""

    @abstractmethod
    def set_suspend(self, name: str, suspend: bool, now: float) -> ScheduleState | None:
        """Pause or resume; None if there is no such schedule. A resumed schedule is due at
        once: the firer decides what it missed."""

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Remove the schedule and its bookkeeping; its runs stay tasks (retention ends them)."""

    # -- the firer --------------------------------------------------------------------------
    @abstractmethod
    def due(self, now: float, limit: int) -> list[str]:
        """Names of schedules whose next check is at or before `now`, soonest first."""

    @abstractmethod
    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Each run's status; a run that no longer exists is absent."""

    @abstractmethod
    def sync(self, name: str, write: Sync, epoch: int, actor: str, now: float) -> SyncResult:
        """In one atomic step: refuse if `epoch` is below the scheduler fence or the schedule
        is not `write.uid` any more; move finished runs to history and delete the trimmed
        ones; create the run for `fire_at` only if `lastScheduleTime` is older (and the
        schedule not suspended), record it as lastScheduleTime and active; place the schedule
        at `next_check` in the due set."""
