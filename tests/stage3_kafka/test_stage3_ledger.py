"""The dispatch ledger's accept (real Redis): sent again after a try that got no answer, and
the token it leaves for a leader waiting on full inboxes.

Redis frozen past the client's socket timeout carries out, when it wakes, the accept the
agent gave up on: the entry is on the agent's processing list, and a plain accept sent again
is refused as "taken". `accept_again` recognises that entry as the first try's.

A stage 3 leader whose agents' inboxes are all full waits for an agent to take an entry (a
token on scheduler:room, pushed by the accept) instead of looking again and again.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from common import keys
from common.adapters.redis_events import DispatchLedger
from common.adapters.redis_store import RedisTaskStore
from common.messaging.clients import EventPublisher
from common.messaging.dispatch import KafkaDispatcher

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


@pytest.fixture
def dispatcher(redis_client, bus):
    publisher = EventPublisher(bus, "test-leader")
    yield KafkaDispatcher(redis_client, RedisTaskStore(redis_client), publisher)
    publisher.close()


def test_an_accept_leaves_one_token_and_a_waiting_leader_wakes_on_it(redis_client, dispatcher):
    ledger = DispatchLedger(redis_client)
    # Two accepts while nobody waits leave one token, not two
    for _ in range(2):
        task_id, _ = dispatched(redis_client, "agent-1")
        assert ledger.accept("agent-1", task_id, 1).accepted
    assert redis_client.lrange(keys.INBOX_ROOM, 0, -1) == [b"1"]
    assert dispatcher.await_room(5.0) is True
    assert redis_client.llen(keys.INBOX_ROOM) == 0

    # A leader waiting with no token is woken by the next accept, long before its timeout
    task_id, _ = dispatched(redis_client, "agent-1")
    threading.Timer(0.2, ledger.accept, ("agent-1", task_id, 1)).start()
    started = time.monotonic()
    dispatcher.await_room(10.0)
    assert time.monotonic() - started < 5.0


def test_a_refused_accept_leaves_no_token(redis_client):
    ledger = DispatchLedger(redis_client)
    task_id, _ = dispatched(redis_client, "agent-1")
    assert ledger.accept("agent-1", task_id, 1).accepted
    redis_client.delete(keys.INBOX_ROOM)
    assert ledger.accept("agent-1", task_id, 1).reason == "taken"
    assert redis_client.llen(keys.INBOX_ROOM) == 0
