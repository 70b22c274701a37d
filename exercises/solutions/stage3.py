"""Stage 3: one task's dead letters replayed (3.1), and a status tally subscriber (3.2)."""

from __future__ import annotations

import sys
import types

from common.messaging import dead_letter
from common.messaging.schemas import StatusEvent, decode


def replay_plan(letters, task_id: str) -> list[tuple[str, bytes | None, bytes, list]]:
    plan = []
    for letter in letters:
        key = letter.key()
        if key is None or key.decode(errors="replace") != task_id:
            continue
        headers = letter.headers() or []
        origin = next((v for k, v in headers if k == dead_letter.ORIGINAL_TOPIC), None)
        if origin is None:
            continue  # nowhere to send it back to
        own = [(k, v) for k, v in headers if not k.startswith("x-")]
        topic = origin.decode() if isinstance(origin, bytes) else origin
        plan.append((topic, key, letter.value(), own))
    return plan


class StatusTally:
    """Counts final statuses once per (taskId, attempt): a redelivery changes nothing."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._seen: set[tuple[str, int]] = set()

    def apply(self, raw: bytes) -> None:
        event = decode(StatusEvent, raw)  # MalformedMessage: the consumer dead-letters it
        if not event.is_final or (event.task_id, event.attempt) in self._seen:
            return
        self._seen.add((event.task_id, event.attempt))
        self.counts[event.status] = self.counts.get(event.status, 0) + 1


def install() -> None:
    dead_letter.replay_plan = replay_plan
    module = types.ModuleType("common.messaging.status_tally")
    module.StatusTally = StatusTally
    sys.modules["common.messaging.status_tally"] = module
