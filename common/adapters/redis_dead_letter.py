"""The dead-letter list in Redis: where a message that cannot be run goes, with its reason.

Pattern: Dead Letter Channel (introduced in stage 1, as a Redis list; stage 3 adds the topic).

Capped (stage 1 on): the list keeps the newest `max_entries` entries and counts every entry the
cap pushed out in `stats:dead-letter` (field `dropped`), so a flood of bad messages cannot fill
Redis, and an operator still sees how many were lost to the cap rather than nothing at all.
"""

from __future__ import annotations

import json
import time

from redis import Redis

from common import keys
from common.adapters.redis_scripts import script_source
from common.domain.dead_letter import DeadLetter, Requeue, RequeueResult, entry_id, read_entry
from common.observability import get_logger, metrics
from common.ports.dead_letters import DeadLetterBox

log = get_logger("tasklab.queue")

# The default of the `dead_letter_max` setting (tests/unit/test_durations.py checks they agree).
DEFAULT_DEAD_LETTER_MAX = 10_000


def dead_letter_message(
    client: Redis,
    raw: str,
    reason: str,
    actor: str,
    source: str,
    taken_from: str | None,
    max_entries: int | None = None,
) -> int:
    """Move a message that cannot be run to the dead-letter list, with the reason.

    One script: the message leaves the list it was taken onto (`taken_from`) and lands in the
    dead-letter list together, or not at all; nothing is lost and nothing is half-moved. Returns
    how many old entries the cap dropped (0 until the list is full).
    """
    cap = DEFAULT_DEAD_LETTER_MAX if max_entries is None else max_entries
    if cap < 1:
        raise ValueError(f"max_entries must be at least 1, got {cap}")
    entry = json.dumps(
        {"message": raw, "reason": reason, "actor": actor, "at": time.time(), "source": source}
    )
    script = client.register_script(script_source("dead_letter"))
    dropped = int(
        script(
            keys=[keys.DEAD_LETTER, keys.DEAD_LETTER_STATS, taken_from or keys.DEAD_LETTER],
            args=[raw, entry, cap, "1" if taken_from else "0"],
        )
    )
    metrics.record_dead_letter("redis", reason)
    log.warning("dead-lettered a message from %s: %s", source, reason)
    return dropped


def dead_letter_stats(client: Redis) -> tuple[int, int]:
    """(entries on the list now, entries ever dropped by the cap)."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(keys.DEAD_LETTER)
    pipe.hget(keys.DEAD_LETTER_STATS, "dropped")
    length, dropped = pipe.execute()
    return int(length), int(dropped or 0)


REQUEUED_MARKER_TTL = 7 * 24 * 3600  # how long a repeated requeue is still known as one
SCAN_PAGE = 500


class RedisDeadLetterBox(DeadLetterBox):
    """The dead-letter list in Redis, read newest first; requeued by requeue_dead_letter.lua."""

    def __init__(self, client: Redis, max_entries: int = DEFAULT_DEAD_LETTER_MAX) -> None:
        self.client = client
        self.max_entries = max_entries
        self._requeue = client.register_script(script_source("requeue_dead_letter"))

    def list(self, limit: int) -> tuple[list[DeadLetter], int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(keys.DEAD_LETTER, 0, limit - 1)
        pipe.llen(keys.DEAD_LETTER)
        raws, length = pipe.execute()
        return [read_entry(_text(raw)) for raw in raws], int(length)

    def _find(self, wanted: str) -> str | None:
        # Bounded: the list is capped at max_entries, read a page at a time.
        for start in range(0, self.max_entries, SCAN_PAGE):
            page = self.client.lrange(keys.DEAD_LETTER, start, start + SCAN_PAGE - 1)
            for raw in page:
                text = _text(raw)
                if entry_id(text) == wanted:
                    return text
            if len(page) < SCAN_PAGE:
                break
        return None

    def requeue(self, wanted: str) -> RequeueResult:
        marker = keys.dead_letter_requeued(wanted)
        raw = self._find(wanted)
        if raw is None:
            done = self.client.exists(marker)
            return RequeueResult(wanted, Requeue.ALREADY_REQUEUED if done else Requeue.NOT_FOUND)
        message = read_entry(raw).message
        answer = int(
            self._requeue(
                keys=[keys.DEAD_LETTER, keys.PENDING_QUEUE, marker],
                args=[raw, message, REQUEUED_MARKER_TTL],
            )
        )
        if answer == 1:
            log.info("requeued dead letter %s onto %s", wanted, keys.PENDING_QUEUE)
            return RequeueResult(wanted, Requeue.REQUEUED, keys.PENDING_QUEUE)
        if answer == 2:
            return RequeueResult(wanted, Requeue.ALREADY_REQUEUED, keys.PENDING_QUEUE)
        return RequeueResult(wanted, Requeue.NOT_FOUND)


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
