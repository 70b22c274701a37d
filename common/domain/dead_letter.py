"""A dead letter as an operator sees it, and what requeueing one means (pure: no Redis).

Pattern: Dead Letter Channel (introduced in stage 1; the requeue in stage 5). An entry of the
dead-letter list is the JSON `{message, reason, actor, at, source}` that
`common.adapters.redis_dead_letter.dead_letter_message` wrote. The list has no ids, so an entry
is named by a digest of its exact text: the same entry always has the same id, and two entries
never share one (each carries its own `at`). Requeueing puts the original message back on
`queue:pending`, where a hand-pushed message goes, so it runs through the same intake (and
meets the same checks) as any message; the entry leaves the list in the same step.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum


def entry_id(raw: str) -> str:
    """A stable name for one entry of the list: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    message: str  # the original message, exactly as it was taken
    reason: str
    actor: str
    at: float | None  # Unix seconds; None for an entry written without one
    source: str
    raw: str  # the entry's exact text: what the requeue removes from the list


def read_entry(raw: str) -> DeadLetter:
    """An entry of the list; one that is not the JSON entry shape (written by hand, say) is
    shown as it is, its whole text the message, rather than hidden."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or "message" not in data:
        return DeadLetter(entry_id(raw), raw, "not a dead-letter entry", "", None, "", raw)
    at = data.get("at")
    return DeadLetter(
        entry_id=entry_id(raw),
        message=str(data.get("message", "")),
        reason=str(data.get("reason", "")),
        actor=str(data.get("actor", "")),
        at=float(at) if isinstance(at, int | float) else None,
        source=str(data.get("source", "")),
        raw=raw,
    )


class Requeue(StrEnum):
    """What a requeue of one entry did."""

    REQUEUED = "REQUEUED"  # the message is back on queue:pending, the entry gone
    ALREADY_REQUEUED = "ALREADY_REQUEUED"  # an earlier requeue of this entry did it: nothing now
    NOT_FOUND = "NOT_FOUND"  # no such entry, and none requeued lately


@dataclass(frozen=True)
class RequeueResult:
    entry_id: str
    outcome: Requeue
    queue: str = ""
