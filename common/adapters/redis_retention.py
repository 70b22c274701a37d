"""Retention: finished tasks are deleted from Redis once they are old, so nothing grows forever.

A task lives in up to seven keys (`task:{id}`, its history, its logs, its log cursor, a
composite parent's children list and, with a requestId, `request:{requestId}` and
`request-fingerprint:{requestId}`) plus its entry in `tasks:index`. Once a task is finished
(SUCCESS, FAILED, CANCELLED or SKIPPED) and has not changed for `task_retention`, a sweep
deletes all of them together: one Lua script per task, which checks again that the task is
still finished and still old, so a task that was retried or requeued since the sweep read it is
never deleted. A task that is not finished is never touched, however old it is, and neither is
a composite's child while the parent that lists it is not finished: its parent, or the retry
that kept it (`keptBy`), whose tree lists it too.

Bounded work: one `sweep` looks at no more than `limit` index entries, and `maybe_sweep` runs
one sweep at most every `interval` seconds, so a role can call it from its housekeeping loop on
every tick. The index is scored by createdAt, and a task's updatedAt is never older than its
createdAt, so every candidate is among the index entries created before the cutoff; those are
read oldest first, a page at a time, resuming after the ones that had to be kept.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from redis import Redis

from common import keys
from common.adapters.redis_scripts import script_source
from common.config import Settings
from common.domain.transitions import TERMINAL_STATES
from common.observability import get_logger

log = get_logger("tasklab.retention")

_FINISHED = {s.value for s in TERMINAL_STATES}


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: object) -> float | None:
    # An updatedAt that is not a number (a hash edited by hand) makes the task "not old": kept.
    try:
        return None if value is None else float(_s(value))
    except ValueError:
        return None


@dataclass
class SweepReport:
    """What one sweep did. `done`: it reached the last index entry older than the cutoff."""

    removed: int = 0
    kept: int = 0  # not finished, changed since the cutoff, or changed while we looked
    done: bool = True
    by_status: Counter[str] = field(default_factory=Counter)


@dataclass
class RetentionSurvey:
    """What a sweep at this cutoff would find (`tasklab data cleanup --dry-run`)."""

    finished: Counter[str] = field(default_factory=Counter)  # would be removed, by status
    kept: Counter[str] = field(default_factory=Counter)  # old but never removed, by status


class RedisRetention:
    """Delete finished tasks older than a retention, in bounded steps."""

    def __init__(
        self,
        client: Redis,
        retention: float = 7 * 86400.0,
        interval: float = 60.0,
        batch: int = 100,
    ) -> None:
        self.client = client
        self.retention = retention
        self.interval = interval
        self.batch = batch
        self._delete = client.register_script(script_source("retention"))
        # Index entries before the cutoff that the last sweep had to keep (running tasks,
        # recently changed ones): the next sweep starts after them instead of re-reading them.
        self._skip = 0
        self._next_run = 0.0

    # --8<-- [start:maybe-sweep]
    def maybe_sweep(self, now: float | None = None) -> SweepReport | None:
        """One bounded sweep at the configured retention if `interval` has passed, else None.

        Cheap to call on every housekeeping tick; several roles may call it at once (each
        deletion re-checks the task inside its script, so two sweepers cannot do harm).
        """
        tick = time.monotonic()
        if tick < self._next_run:
            return None
        self._next_run = tick + self.interval
        report = self.sweep(self.retention, self.batch, now=now)
        if report.removed:
            log.info(
                "retention: removed %d finished task(s) older than %.0fs",
                report.removed,
                self.retention,
            )
        return report

    # --8<-- [end:maybe-sweep]

    def sweep(
        self, older_than_seconds: float, limit: int = 100, now: float | None = None
    ) -> SweepReport:
        """Delete up to `limit` finished tasks unchanged for `older_than_seconds`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        cutoff = (time.time() if now is None else now) - older_than_seconds
        ids = [
            _s(m)
            for m in self.client.zrangebyscore(
                keys.TASK_INDEX, "-inf", cutoff, start=self._skip, num=limit
            )
        ]
        report = SweepReport(done=len(ids) < limit)
        if not ids:
            self._skip = 0
            return report
        rows = self._read(ids)
        candidates = []
        for task_id, (status, updated, request_id, parent_id) in zip(ids, rows, strict=True):
            # Checked here only to save a script call; the script checks again, atomically.
            if status is None or (status in _FINISHED and updated is not None and updated < cutoff):
                candidates.append((task_id, request_id, parent_id))
            else:
                report.kept += 1
        if candidates:
            pipe = self.client.pipeline(transaction=False)
            for task_id, request_id, parent_id in candidates:
                self._delete(
                    keys=self._keys(task_id, request_id, parent_id),
                    args=[task_id, repr(cutoff), request_id, parent_id],
                    client=pipe,
                )
            for removed, _reason, status in pipe.execute():
                if int(removed):
                    report.removed += 1
                    report.by_status[_s(status) or "orphan"] += 1
                else:
                    report.kept += 1
        # Deleted entries left the index; the kept ones are still in front of the next page.
        self._skip = 0 if report.done else self._skip + report.kept
        return report

    def survey(
        self, older_than_seconds: float, page: int = 500, now: float | None = None
    ) -> RetentionSurvey:
        """Count what a sweep would remove and keep, changing nothing. Reads every old entry."""
        cutoff = (time.time() if now is None else now) - older_than_seconds
        survey = RetentionSurvey()
        total = int(self.client.zcount(keys.TASK_INDEX, "-inf", cutoff))
        for start in range(0, total, page):
            ids = [
                _s(m)
                for m in self.client.zrangebyscore(
                    keys.TASK_INDEX, "-inf", cutoff, start=start, num=page
                )
            ]
            rows = self._read(ids)
            running = self._unfinished({parent for *_, parent in rows if parent})
            for status, updated, _request, parent in rows:
                if status is None:
                    survey.finished["orphan"] += 1
                elif (
                    status in _FINISHED
                    and updated is not None
                    and updated < cutoff
                    and parent not in running
                ):
                    survey.finished[status] += 1
                else:
                    survey.kept[status] += 1
        return survey

    def _unfinished(self, task_ids: set[str]) -> set[str]:
        """Those of `task_ids` that exist and are not finished (a composite's running parents)."""
        ordered = sorted(task_ids)
        pipe = self.client.pipeline(transaction=False)
        for task_id in ordered:
            pipe.hget(keys.task(task_id), "status")
        return {
            task_id
            for task_id, status in zip(ordered, pipe.execute(), strict=True)
            if status is not None and _s(status) not in _FINISHED
        }

    def old_entries(self, older_than_seconds: float, now: float | None = None) -> int:
        """Index entries created before the cutoff: an upper bound on what a sweep can remove."""
        cutoff = (time.time() if now is None else now) - older_than_seconds
        return int(self.client.zcount(keys.TASK_INDEX, "-inf", cutoff))

    def _read(self, ids: list[str]) -> list[tuple[str | None, float | None, str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(keys.task(task_id), "status", "updatedAt", "requestId", "parentId", "keptBy")
        out = []
        for status, updated, request_id, parent_id, kept_by in pipe.execute():
            # The parent that holds a child now: the retry that kept it, else its own.
            holder = kept_by if kept_by is not None else parent_id
            out.append(
                (
                    None if status is None else _s(status),
                    _float(updated),
                    "" if request_id is None else _s(request_id),
                    "" if holder is None else _s(holder),
                )
            )
        return out

    @staticmethod
    def _keys(task_id: str, request_id: str, parent_id: str = "") -> list[str]:
        """Every key the retention script touches, named here and passed in KEYS."""
        return [
            keys.task(task_id),
            keys.history(task_id),
            keys.logs(task_id),
            keys.log_cursor(task_id),
            keys.TASK_INDEX,
            # Without a requestId the script never reads KEYS[6] and KEYS[7]; the index stands
            # in for them.
            keys.request(request_id) if request_id else keys.TASK_INDEX,
            keys.request_fingerprint(request_id) if request_id else keys.TASK_INDEX,
            # A composite parent's children list (absent for any other task).
            keys.children(task_id),
            # A composite's child is kept while the parent holding it is not final.
            keys.task(parent_id) if parent_id else keys.TASK_INDEX,
        ]


def retention_of(client: Redis, settings: Settings) -> RedisRetention:
    """The sweep as the settings configure it (`task_retention`, `retention_sweep_interval`)."""
    return RedisRetention(
        client, retention=settings.task_retention, interval=settings.retention_sweep_interval
    )
