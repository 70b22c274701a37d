"""The dead-letter list in memory, for unit tests: the same rules as RedisDeadLetterBox (a
requeue moves the message to the pending list once; a repeat is ALREADY_REQUEUED)."""

from __future__ import annotations

import json
import time

from common.domain.dead_letter import DeadLetter, Requeue, RequeueResult, entry_id, read_entry
from common.ports.dead_letters import DeadLetterBox


class InMemoryDeadLetterBox(DeadLetterBox):
    def __init__(self) -> None:
        self.entries: list[str] = []  # newest first, as the Redis list
        self.pending: list[str] = []
        self.requeued: set[str] = set()

    def add(self, message: str, reason: str, actor: str = "test", source: str = "test") -> str:
        """Dead-letter `message` as the platform would; returns the entry's id."""
        raw = json.dumps(
            {
                "message": message,
                "reason": reason,
                "actor": actor,
                "at": time.time(),
                "source": source,
            }
        )
        self.entries.insert(0, raw)
        return entry_id(raw)

    def list(self, limit: int) -> tuple[list[DeadLetter], int]:
        return [read_entry(raw) for raw in self.entries[:limit]], len(self.entries)

    def requeue(self, wanted: str) -> RequeueResult:
        if wanted in self.requeued:
            return RequeueResult(wanted, Requeue.ALREADY_REQUEUED, "queue:pending")
        for raw in self.entries:
            if entry_id(raw) == wanted:
                self.entries.remove(raw)
                self.pending.insert(0, read_entry(raw).message)
                self.requeued.add(wanted)
                return RequeueResult(wanted, Requeue.REQUEUED, "queue:pending")
        return RequeueResult(wanted, Requeue.NOT_FOUND)
