"""The dead-letter list as the front door reads and requeues it.

Pattern: Ports and Adapters. The REST API and the console are written against this port;
`common.adapters.redis_dead_letter.RedisDeadLetterBox` is the real one, and
`common.adapters.memory_dead_letter.InMemoryDeadLetterBox` the unit tests' (the same rules).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from common.domain.dead_letter import DeadLetter, RequeueResult


class DeadLetterBox(ABC):
    @abstractmethod
    def list(self, limit: int) -> tuple[list[DeadLetter], int]:
        """The newest `limit` entries, newest first, and how many the list holds."""

    @abstractmethod
    def requeue(self, entry_id: str) -> RequeueResult:
        """Put the entry's message back on queue:pending and take the entry off the list, as
        one step. Idempotent: a second requeue of the same entry (a double click, a client
        retrying after a lost answer) pushes nothing and answers ALREADY_REQUEUED."""
