"""Requeueing a dead letter on a real Redis: the message goes back on queue:pending exactly once,
however many operators (or retried requests) ask at the same moment."""

from __future__ import annotations

import threading

import pytest

from common import keys
from common.adapters.redis_dead_letter import RedisDeadLetterBox, dead_letter_message
from common.domain.dead_letter import Requeue

pytestmark = pytest.mark.integration

BAD = '{"taskType":"RUBY","payload":"puts 1"}'


def test_a_dead_letter_is_listed_with_its_reason_newest_first(redis_client):
    dead_letter_message(redis_client, "first", "not JSON", "scheduler:s1", "queue:pending", None)
    dead_letter_message(redis_client, BAD, "unknown taskType 'RUBY'", "scheduler:s1", "x", None)
    entries, total = RedisDeadLetterBox(redis_client).list(10)
    assert total == 2
    assert [e.message for e in entries] == [BAD, "first"]
    assert entries[0].reason == "unknown taskType 'RUBY'" and entries[0].actor == "scheduler:s1"


def test_eight_requeues_of_one_dead_letter_at_once_push_its_message_once(redis_client):
    # Given one dead letter
    dead_letter_message(redis_client, BAD, "unknown taskType", "scheduler:s1", "q", None)
    box = RedisDeadLetterBox(redis_client)
    (entry,), _ = box.list(1)
    # When eight callers requeue it at the same moment
    start = threading.Barrier(8)
    results = []

    def requeue() -> None:
        start.wait(5)
        results.append(RedisDeadLetterBox(redis_client).requeue(entry.entry_id).outcome)

    threads = [threading.Thread(target=requeue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Then exactly one requeued it, the others were told it was done; one message is back
    assert sorted(results) == sorted([Requeue.REQUEUED] + [Requeue.ALREADY_REQUEUED] * 7)
    assert redis_client.lrange(keys.PENDING_QUEUE, 0, -1) == [BAD.encode()]
    assert redis_client.llen(keys.DEAD_LETTER) == 0
    # ...and an id that never existed is not found
    assert box.requeue("0123456789abcdef").outcome == Requeue.NOT_FOUND
