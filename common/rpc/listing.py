"""List tasks newest first, filtered, with an opaque cursor that survives new submissions.

An offset ("skip 50") shifts when tasks are submitted between two pages, so a client sees a
task twice or never; the cursor here is the position of the last task returned in
`tasks:index` (its createdAt score and id), so the next page starts right after it whatever
was added meanwhile. Each call reads a bounded stretch of the index (`scan_limit` entries): a
filter that matches little returns a short page with a cursor instead of scanning everything
while the caller waits. A per-status index would be the next step at scale (a store method,
once the TaskStore port grows one).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from redis import Redis

from common import keys
from common.adapters.redis_client import as_text
from common.domain.task import Task

MAX_PAGE = 500


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class TaskFilter:
    status: str | None = None
    task_type: str | None = None
    agent_id: str | None = None
    name: str | None = None
    created_after: float | None = None  # inclusive
    created_before: float | None = None  # exclusive
    # A schedule's runs: the same bounded scan of the index as any filter (no index per
    # schedule; the schedule itself keeps its latest runs, common/domain/schedule.py).
    schedule_id: str | None = None

    def matches(self, task: Task) -> bool:
        return (
            (self.status is None or task.status.value == self.status)
            and (self.schedule_id is None or task.schedule_id == self.schedule_id)
            and (self.task_type is None or task.task_type.value == self.task_type)
            and (self.agent_id is None or task.agent_id == self.agent_id)
            and (self.name is None or self.name.lower() in task.task_name.lower())
        )


def encode_cursor(score: float, task_id: str) -> str:
    raw = json.dumps([repr(score), task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, task_id = json.loads(raw)
        return float(score), str(task_id)
    except (ValueError, TypeError) as exc:
        raise BadCursor(f"cursor: not a cursor this service returned ({exc})") from None


def list_page(
    client: Redis,
    flt: TaskFilter,
    page_size: int = 50,
    cursor: str = "",
    scan_limit: int = 5000,
) -> tuple[list[Task], str]:
    """(tasks, next cursor or "") for one page, newest first."""
    high: float | str = "+inf" if flt.created_before is None else f"({flt.created_before!r}"
    low: float | str = "-inf" if flt.created_after is None else repr(flt.created_after)
    after: tuple[float, str] | None = None
    if cursor:
        after = decode_cursor(cursor)
        high = repr(after[0])
    out: list[Task] = []
    scanned = 0
    offset = 0
    last: tuple[float, str] | None = None
    chunk = 200
    while len(out) < page_size and scanned < scan_limit:
        entries = client.zrevrangebyscore(
            keys.TASK_INDEX, high, low, start=offset, num=chunk, withscores=True
        )
        if not entries:
            return out, ""
        offset += len(entries)
        candidates = []
        for member, score in entries:
            task_id = as_text(member)
            # Same score as the cursor: ZREVRANGEBYSCORE orders ties by id, descending; the
            # ones at or above the cursor's id were on an earlier page.
            if after is not None and score == after[0] and task_id >= after[1]:
                continue
            candidates.append((task_id, score))
        pipe = client.pipeline(transaction=False)
        for task_id, _ in candidates:
            pipe.hgetall(keys.task(task_id))
        for (task_id, score), data in zip(candidates, pipe.execute(), strict=True):
            scanned += 1
            last = (score, task_id)
            if not data:
                continue  # deleted by retention between the two reads
            task = Task.from_hash({as_text(k): as_text(v) for k, v in data.items()})
            if flt.matches(task):
                out.append(task)
                if len(out) >= page_size:
                    break
        scanned += len(entries) - len(candidates)
    return out, (encode_cursor(*last) if last else "")
