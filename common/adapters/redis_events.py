"""Redis writes of stage 3, where Kafka carries the work and the reports but Redis stays the
one place that decides (introduced in stage 3).

- `DispatchLedger`: the inbox `agent:{id}:tasks` and `processing:{id}` lists are the ledger of
  which agent holds which attempt. The scheduler writes an inbox entry in the same fenced
  script that marks the task DISPATCHED; the agent moves it to processing when it starts the
  task; a failover gives back whatever is on either list. Kafka messages can be duplicated,
  the ledger cannot: removing an entry is a compare-and-set only one caller wins.
- `RedisLogSink`: output lines appended once each, in order, whatever Kafka redelivers.
- `EventStats`: counters of what the manager did with each event (`stats:events`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import NamedTuple

from redis import Redis

from common import keys
from common.adapters.redis_client import as_text as _s
from common.adapters.redis_scripts import script_source
from common.domain.dispatch import entry_ref


class Acceptance(NamedTuple):
    accepted: bool
    reason: str  # "ok", "taken", "stale", "missing"
    status: str  # the task's status when asked
    attempt: int  # the task's current attempt
    entry: str = ""  # the ledger entry now on processing:{agentId} (when accepted)


class DispatchLedger:
    def __init__(self, client: Redis) -> None:
        self.client = client
        self._accept = client.register_script(script_source("accept_dispatch"))

    def accept(self, agent_id: str, task_id: str, attempt: int) -> Acceptance:
        """Take the dispatch of (task_id, attempt) off this agent's inbox, if it is still there
        and still current; only then may the agent start the task."""
        raw = self._accept(
            keys=[
                keys.task(task_id),
                keys.agent_tasks(agent_id),
                keys.processing(agent_id),
                keys.TRANSITION_STATS,
                keys.INBOX_ROOM,
            ],
            args=[task_id, attempt, agent_id],
        )
        entry = _s(raw[4]) if len(raw) > 4 else ""
        return Acceptance(bool(int(raw[0])), _s(raw[1]), _s(raw[2]), int(raw[3]), entry)

    def accept_again(self, agent_id: str, task_id: str, attempt: int) -> Acceptance:
        """`accept`, sent again after a try that got no answer (Redis past the client's socket
        timeout): that try may have gone through, moving the entry to this agent's processing
        list, and then this one is refused as "taken". An entry of (task_id, attempt) on this
        agent's processing list while the task is still DISPATCHED to it at that attempt is
        that try's: accepted. The caller must know that no worker of its own runs that
        attempt already (a second delivery of a dispatch it accepted looks the same)."""
        got = self.accept(agent_id, task_id, attempt)
        if got.accepted or got.reason != "taken":
            return got
        if got.status != "DISPATCHED" or got.attempt != attempt:
            return got
        entry = self.find(keys.processing(agent_id), task_id, attempt)
        if entry is None:
            return got
        return Acceptance(True, "ok", got.status, attempt, entry)

    def find(self, work_list: str, task_id: str, attempt: int) -> str | None:
        """The exact entry for (task_id, attempt) on a ledger list, to remove it by value.

        Lists are short (an agent's backlog and capacity), so a scan costs one LRANGE."""
        for raw in self.client.lrange(work_list, 0, -1):
            entry = _s(raw)
            if entry_ref(entry) == (task_id, attempt):
                return entry
        return None

    def drop(self, agent_id: str, task_id: str, attempt: int) -> bool:
        """Remove a finished or abandoned attempt's entry from the agent's processing list."""
        entry = self.find(keys.processing(agent_id), task_id, attempt)
        return bool(entry and self.client.lrem(keys.processing(agent_id), 1, entry))

    def inbox(self, agent_id: str) -> list[str]:
        return [_s(e) for e in self.client.lrange(keys.agent_tasks(agent_id), 0, -1)]

    def status_and_attempt(self, task_id: str) -> tuple[str, int]:
        status, attempt = self.client.hmget(keys.task(task_id), "status", "attempt")
        return (_s(status) if status else "", int(attempt) if attempt else 0)


class LogAppend(NamedTuple):
    appended: int
    skipped: int
    missing: bool = False
    stale: bool = False


class RedisLogSink:
    def __init__(self, client: Redis) -> None:
        self.client = client
        self._append = client.register_script(script_source("append_logs"))

    def append(self, task_id: str, attempt: int, lines: Sequence[tuple[int, str]]) -> LogAppend:
        """Append (seq, line) pairs of one attempt, skipping any seq already appended."""
        a, b = self._append(
            keys=[
                keys.task(task_id),
                keys.logs(task_id),
                keys.log_cursor(task_id),
                keys.EVENT_STATS,
            ],
            args=[attempt, json.dumps([[seq, line] for seq, line in lines])],
        )
        a, b = int(a), int(b)
        if a == -1:
            return LogAppend(0, 0, missing=True)
        if a == -2:
            return LogAppend(0, len(lines), stale=True)
        return LogAppend(a, b)

    def cursor(self, task_id: str, attempt: int) -> int:
        """Sequence number of the last line appended for this attempt (0 = none yet)."""
        return int(self.client.hget(keys.log_cursor(task_id), str(attempt)) or 0)


class EventStats:
    def __init__(self, client: Redis) -> None:
        self.client = client

    def count(self, what: str, n: int = 1) -> None:
        self.client.hincrby(keys.EVENT_STATS, what, n)

    def all(self) -> dict[str, int]:
        return {_s(k): int(v) for k, v in self.client.hgetall(keys.EVENT_STATS).items()}


def record_heartbeat(client: Redis, agent_id: str, ttl: float) -> None:
    """What `tasklab agents` and the agent healthcheck read, written from the bus."""
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.heartbeat(agent_id), repr(time.time()), px=int(ttl * 1000))
    pipe.sadd(keys.AGENTS_SEEN, agent_id)
    pipe.execute()
