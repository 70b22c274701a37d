"""Exercise 3.2, a new subscriber: tally the outcomes on task-status-update-topic.

Publish/subscribe means a new consumer group can read the status events without any producer
or the manager changing. Write its handler, `StatusTally` in a new module
common/messaging/status_tally.py:

- `apply(raw: bytes)` takes one message value of task-status-update-topic; `counts` is a dict
  of final statuses seen, e.g. {"SUCCESS": 3, "FAILED": 1}.
- Kafka delivers at least once: the same event read twice (a redelivery) counts once. An event
  is one attempt's final status, (taskId, attempt).
- `RUNNING` is not an outcome: not counted.
- A value that is not a status event raises `MalformedMessage` (common/messaging/schemas.py),
  so the consumer running it dead-letters it.

Then run it in its own consumer group if you like (`AtLeastOnceConsumer`). No services
(`make exercise-stage3`).
"""

from __future__ import annotations

import json

import pytest

from common.messaging.schemas import MalformedMessage
from exercises.support import attribute, module

A = "5a0c6f43-86a3-4c1e-9d7e-4d1b2f9a0c11"
B = "0b7d0a57-3a14-4c56-8f0e-07c3f5a9e2d4"


def tally():
    found = module(
        "3.2", "common.messaging.status_tally", "create common/messaging/status_tally.py"
    )
    return attribute("3.2", found, "StatusTally", "write class StatusTally in status_tally.py")()


def event(task_id: str, attempt: int, status: str) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "taskId": task_id,
            "attempt": attempt,
            "epoch": 0,
            "agentId": "agent-1",
            "status": status,
        }
    ).encode()


def test_each_attempts_outcome_counts_once_however_often_it_is_delivered():
    counter = tally()
    for raw in [
        event(A, 1, "RUNNING"),
        event(A, 1, "FAILED"),
        event(A, 1, "FAILED"),  # redelivered after a consumer restart
        event(A, 2, "SUCCESS"),
        event(B, 1, "SUCCESS"),
    ]:
        counter.apply(raw)
    assert counter.counts == {"FAILED": 1, "SUCCESS": 2}


def test_a_value_that_is_not_a_status_event_is_malformed_so_it_is_dead_lettered():
    counter = tally()
    with pytest.raises(MalformedMessage):
        counter.apply(b"this is not an event")
    counter.apply(event(A, 1, "SUCCESS"))
    assert counter.counts == {"SUCCESS": 1}
