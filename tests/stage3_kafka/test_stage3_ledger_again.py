"""An agent's accept of a dispatch, sent again after a try that got no answer (real Redis).

Redis frozen past the client's socket timeout carries out, when it wakes, the accept the
agent gave up on: the entry is on the agent's processing list, and a plain accept sent again
is refused as "taken". `accept_again` recognises that entry as the first try's.
"""

from __future__ import annotations

import json
import uuid

import pytest

from common import keys
from common.adapters.redis_events import DispatchLedger

pytestmark = pytest.mark.integration


def dispatched(redis_client, agent_id: str, attempt: int = 1) -> tuple[str, str]:
    """A task DISPATCHED to `agent_id`, its entry on the agent's inbox (as the leader's
    dispatch script leaves them)."""
    task_id = str(uuid.uuid4())
    redis_client.hset(
        keys.task(task_id),
        mapping={"status": "DISPATCHED", "attempt": attempt, "agentId": agent_id},
    )
    entry = json.dumps({"taskId": task_id, "attempt": attempt, "epoch": 3})
    redis_client.lpush(keys.agent_tasks(agent_id), entry)
    return task_id, entry


def test_an_accept_sent_again_after_its_first_try_went_through_is_accepted_once_more(
    redis_client,
):
    ledger = DispatchLedger(redis_client)
    task_id, entry = dispatched(redis_client, "agent-1")
    assert ledger.accept("agent-1", task_id, 1).accepted  # the try whose answer was lost

    # A plain accept again is refused as taken; accept_again sees the first try's entry
    assert ledger.accept("agent-1", task_id, 1).reason == "taken"
    again = ledger.accept_again("agent-1", task_id, 1)
    assert (again.accepted, again.entry) == (True, entry)
    assert redis_client.lrange(keys.processing("agent-1"), 0, -1) == [entry.encode()]


def test_an_accept_sent_again_takes_nothing_that_is_not_its_own_or_not_current(redis_client):
    ledger = DispatchLedger(redis_client)
    # Another agent's entry for the same attempt: not this agent's first try
    task_id, _ = dispatched(redis_client, "agent-2")
    assert ledger.accept("agent-2", task_id, 1).accepted
    assert not ledger.accept_again("agent-1", task_id, 1).accepted

    # The task moved on (RUNNING applied, or given back): the entry is not a first try's
    task_id, _ = dispatched(redis_client, "agent-1")
    assert ledger.accept("agent-1", task_id, 1).accepted
    redis_client.hset(keys.task(task_id), "status", "RUNNING")
    assert not ledger.accept_again("agent-1", task_id, 1).accepted

    # An older attempt's copy
    task_id, _ = dispatched(redis_client, "agent-1")
    assert ledger.accept("agent-1", task_id, 1).accepted
    redis_client.hset(keys.task(task_id), "attempt", 2)
    assert not ledger.accept_again("agent-1", task_id, 1).accepted
