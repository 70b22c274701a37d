"""InMemoryScheduleStore: the ScheduleStore port in dicts, for unit tests.

It applies the same rules as schedule_sync.lua (the fence, the schedule's uid, a fire time
older than lastScheduleTime fires nothing, a suspended schedule fires nothing), creating runs
in an InMemoryTaskStore, so a firer tested against it is tested against the contract.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from common.adapters.memory_store import InMemoryTaskStore
from common.domain.schedule import Run, ScheduleSpec
from common.ports.schedule import ScheduleExists, ScheduleState, ScheduleStore, Sync, SyncResult


@dataclass
class _Row:
    state: ScheduleState
    active: dict[str, float] = field(default_factory=dict)
    succeeded: dict[str, float] = field(default_factory=dict)
    failed: dict[str, float] = field(default_factory=dict)


class InMemoryScheduleStore(ScheduleStore):
    def __init__(self, tasks: InMemoryTaskStore | None = None) -> None:
        self.tasks = tasks or InMemoryTaskStore()
        self.rows: dict[str, _Row] = {}
        self.due_at: dict[str, float] = {}
        self.counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def _state(self, name: str) -> ScheduleState | None:
        row = self.rows.get(name)
        if row is None:
            return None

        def newest(runs: dict[str, float]) -> tuple[Run, ...]:
            # Newest first, as the Redis store lists history.
            return tuple(Run(*r) for r in sorted(runs.items(), key=_by_at, reverse=True))

        return replace(
            row.state,
            next_check=self.due_at.get(name),
            active=tuple(Run(r, at) for r, at in sorted(row.active.items(), key=_by_at)),
            succeeded=newest(row.succeeded),
            failed=newest(row.failed),
        )

    # -- clients ----------------------------------------------------------------------------
    def create(self, spec: ScheduleSpec, now: float, next_check: float) -> ScheduleState:
        with self._lock:
            if spec.name in self.rows:
                raise ScheduleExists(spec.name)
            state = ScheduleState(spec, str(uuid.uuid4()), now, now)
            self.rows[spec.name] = _Row(state)
            self.due_at[spec.name] = next_check
            out = self._state(spec.name)
        assert out is not None
        return out

    def get(self, name: str) -> ScheduleState | None:
        with self._lock:
            return self._state(name)

    def list(self) -> list[ScheduleState]:
        with self._lock:
            return [s for n in sorted(self.rows) if (s := self._state(n)) is not None]

    def set_suspend(self, name: str, suspend: bool, now: float) -> ScheduleState | None:
        with self._lock:
            row = self.rows.get(name)
            if row is None:
                return None
            spec = row.state.spec.model_copy(update={"suspend": suspend})
            row.state = replace(row.state, spec=spec, updated_at=now)
            if not suspend:
                self.due_at[name] = now
            return self._state(name)

    def delete(self, name: str) -> bool:
        with self._lock:
            self.due_at.pop(name, None)
            return self.rows.pop(name, None) is not None

    # -- the firer --------------------------------------------------------------------------
    def due(self, now: float, limit: int) -> list[str]:
        with self._lock:
            ready = sorted((at, n) for n, at in self.due_at.items() if at <= now)
            return [n for _, n in ready[:limit]]

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        return {r: self.tasks.tasks[r]["status"] for r in run_ids if r in self.tasks.tasks}

    def sync(self, name: str, write: Sync, epoch: int, actor: str, now: float) -> SyncResult:
        with self._lock:
            if epoch < self.tasks.fence:
                self._count("rejected_stale_epoch")
                return SyncResult(False, "stale_epoch")
            row = self.rows.get(name)
            if row is None or row.state.uid != write.uid:
                return SyncResult(False, "gone")
            for run_id, outcome in write.finished:
                at = row.active.pop(run_id, None)
                if at is not None and outcome in ("succeeded", "failed"):
                    getattr(row, outcome)[run_id] = at
            for run_id in write.delete:
                kept = row.succeeded.pop(run_id, None), row.failed.pop(run_id, None)
                if kept != (None, None):
                    self.tasks.tasks.pop(run_id, None)
                    self.tasks.histories.pop(run_id, None)
                    self.tasks.log_lines.pop(run_id, None)
            outcome = "recorded"
            run, fire_at = write.fire, write.fire_at
            if run is not None and fire_at is not None:
                last = row.state.last_schedule_time
                if last is not None and last >= fire_at:
                    outcome = "already"
                elif row.state.spec.suspend:
                    outcome = "suspended"
                elif run.task_id in self.tasks.tasks:
                    row.state = replace(
                        row.state, last_schedule_time=fire_at, last_run_id=run.task_id
                    )
                    outcome = "already"
                else:
                    self.tasks.create(run, actor, f"fired by schedule {name}")
                    self.tasks.queue.insert(0, run.to_message())
                    row.active[run.task_id] = fire_at
                    row.state = replace(
                        row.state,
                        last_schedule_time=fire_at,
                        last_run_id=run.task_id,
                        last_missed=write.missed,
                        last_skip=None,
                    )
                    outcome = "fired"
                self._count(outcome)
            if write.skip:
                row.state = replace(row.state, last_skip=write.skip, last_missed=write.missed)
            self.due_at[name] = write.next_check
            return SyncResult(True, outcome)


def _by_at(item: tuple[str, float]) -> float:
    return item[1]
