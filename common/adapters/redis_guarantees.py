"""What the guarantee checker reads from Redis, each read bounded, and where it leaves findings.

The checks themselves are pure (common/domain/guarantees.py); this adapter only fetches. Every
read is one pipelined round trip whose size has a bound, so a pass costs the same whatever
Redis holds:

- a window of `tasks:index` (ZRANGE by rank, `window` ids) and one HMGET per id: the task
  records, walked a window per pass, from the oldest, wrapping round at the end;
- `agents:seen` (SMEMBERS) and one LRANGE of each agent's processing list (at most its
  capacity long): who holds which task;
- the heartbeat keys of the agents named (EXISTS each), where ZooKeeper is not the judge;
- the dead-letter list from its newest entry down to the last one marked as looked at (LRANGE
  in pages of 100, at most the list's cap).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from redis import Redis

from common import keys
from common.domain.dispatch import entry_ref
from common.domain.guarantees import Finding, TaskView
from common.domain.transitions import TaskStatus

DEAD_LETTER_PAGE = 100
# The checker leaves at most this many tasks' findings for `tasklab explain`; the counts on
# /metrics are complete whatever this is.
MAX_STORED_FINDINGS = 1000

_FIELDS = ("status", "attempt", "agentId", "updatedAt", "executionTimeout", "parentId")


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def task_view(task_id: str, values: list) -> TaskView | None:
    """A TaskView from an HMGET of _FIELDS; None if the task is gone or its status unknown."""
    status, attempt, agent, updated, timeout, parent = values
    if status is None:
        return None
    try:
        state = TaskStatus(_s(status))
        return TaskView(
            task_id=task_id,
            status=state,
            attempt=int(attempt) if attempt else 1,
            agent_id=_s(agent) if agent else None,
            entered_at=float(updated) if updated else 0.0,
            execution_timeout=int(timeout) if timeout else 60,
            parent_id=_s(parent) if parent else None,
        )
    except ValueError:
        # A record edited by hand into nonsense is not ours to judge; the API reports it.
        return None


class RedisGuaranteeReader:
    def __init__(self, client: Redis, window: int = 1000) -> None:
        self.client = client
        self.window = window
        self._cursor = 0

    # -- the task records, a window at a time ---------------------------------------------
    def next_window(self) -> tuple[list[TaskView], bool]:
        """The next `window` tasks of tasks:index, oldest first, and whether this window ended
        a cycle (the walk reached the end and starts again from the oldest).

        By rank, not by score: a task created meanwhile lands at the end and is reached in
        this cycle; one removed by the retention sweep shifts the ranks after it down, so a
        few tasks may be skipped for one cycle, and are seen in the next.
        """
        start = self._cursor
        ids = [_s(i) for i in self.client.zrange(keys.TASK_INDEX, start, start + self.window - 1)]
        wrapped = len(ids) < self.window
        self._cursor = 0 if wrapped else start + len(ids)
        return list(self.tasks(ids).values()), wrapped

    def tasks(self, task_ids: Iterable[str]) -> dict[str, TaskView]:
        ids = list(task_ids)
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(keys.task(task_id), *_FIELDS)
        out = {}
        for task_id, values in zip(ids, pipe.execute(), strict=True):
            view = task_view(task_id, values)
            if view is not None:
                out[task_id] = view
        return out

    # -- who holds what ---------------------------------------------------------------------
    def agents_seen(self) -> set[str]:
        return {_s(a) for a in self.client.smembers(keys.AGENTS_SEEN)}

    def holders(self, agent_ids: Iterable[str]) -> dict[str, set[str]]:
        """task id -> the agents whose processing list holds an entry of it."""
        agents = sorted(agent_ids)
        pipe = self.client.pipeline(transaction=False)
        for agent_id in agents:
            pipe.lrange(keys.processing(agent_id), 0, -1)
        held: dict[str, set[str]] = {}
        for agent_id, entries in zip(agents, pipe.execute(), strict=True):
            for raw in entries:
                task_id, _ = entry_ref(raw)
                if task_id is not None:
                    held.setdefault(task_id, set()).add(agent_id)
        return held

    def heartbeating(self, agent_ids: Iterable[str]) -> set[str]:
        agents = sorted(agent_ids)
        pipe = self.client.pipeline(transaction=False)
        for agent_id in agents:
            pipe.exists(keys.heartbeat(agent_id))
        return {a for a, alive in zip(agents, pipe.execute(), strict=True) if alive}

    # -- dead letters -------------------------------------------------------------------------
    def dead_letters_unseen(self) -> tuple[int, float | None]:
        """(dead letters newer than the looked-at mark, `at` of the oldest of them)."""
        seen_raw = self.client.hget(keys.DEAD_LETTER_STATS, keys.DEAD_LETTER_SEEN_FIELD)
        seen = float(seen_raw) if seen_raw else 0.0
        length = self.client.llen(keys.DEAD_LETTER)
        count, oldest = 0, None
        # Newest first: read down until an entry the mark covers. Bounded by the list's cap.
        for start in range(0, length, DEAD_LETTER_PAGE):
            page = self.client.lrange(keys.DEAD_LETTER, start, start + DEAD_LETTER_PAGE - 1)
            for raw in page:
                at = _entry_time(raw)
                if at is not None and at <= seen:
                    return count, oldest
                count += 1
                oldest = at if at is not None else oldest
            if len(page) < DEAD_LETTER_PAGE:
                break
        return count, oldest

    def mark_dead_letters_seen(self) -> tuple[int, float]:
        """Mark every dead letter now on the list as looked at; (how many were new, the mark)."""
        count, _ = self.dead_letters_unseen()
        newest = self.client.lindex(keys.DEAD_LETTER, 0)
        mark = (_entry_time(newest) if newest is not None else None) or 0.0
        if mark:
            # Never lowered: marking twice, or a checker and an operator racing, keeps the max.
            self.client.eval(
                "local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') "
                "if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end",
                1,
                keys.DEAD_LETTER_STATS,
                keys.DEAD_LETTER_SEEN_FIELD,
                repr(mark),
            )
        return count, mark

    # -- findings, for `tasklab explain` ------------------------------------------------------
    def publish_findings(self, findings: Iterable[Finding], now: float) -> None:
        """Replace the stored findings with these (at most MAX_STORED_FINDINGS tasks), and
        say when: `tasklab explain` tells "nothing found" from "no checker runs" by it."""
        by_task: dict[str, list[dict[str, object]]] = {}
        for f in findings:
            if f.task_id in by_task or len(by_task) < MAX_STORED_FINDINGS:
                by_task.setdefault(f.task_id, []).append(f.as_dict())
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(keys.CHECKER_FINDINGS)
        if by_task:
            pipe.hset(
                keys.CHECKER_FINDINGS, mapping={t: json.dumps(fs) for t, fs in by_task.items()}
            )
        pipe.set(keys.CHECKER_LAST_PASS, repr(now))
        pipe.execute()

    def findings_for(self, task_id: str) -> tuple[list[dict[str, object]], float | None]:
        """The stored findings about `task_id`, and when a checker last published (None:
        never)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(keys.CHECKER_FINDINGS, task_id)
        pipe.get(keys.CHECKER_LAST_PASS)
        raw, last = pipe.execute()
        return (json.loads(raw) if raw else []), (float(last) if last else None)


def _entry_time(raw: object) -> float | None:
    """A dead letter's `at`; None for an entry without one (pushed by hand): it counts as not
    looked at, with no age."""
    try:
        return float(json.loads(raw).get("at"))  # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError):
        return None
