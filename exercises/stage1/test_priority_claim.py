"""Exercise 1.1, priorities: an agent takes `queue:pending:high` before `queue:pending`.

Write a `ClaimStrategy` (see `ReliableClaim` in common/adapters/redis_agent.py) and register it
as `CLAIMS["priority"]` in stage1_mvp/bootstrap.py. It must keep the reliable claim's promise:
the message moves atomically onto the agent's processing list, never only into its memory.
Runs against a real Redis: `make exercise-stage1`.
"""

from __future__ import annotations

import json

import pytest

from common import keys
from common.adapters.redis_queue import Claim, RedisWorkQueue
from common.adapters.redis_store import RedisTaskStore
from exercises.support import attribute, not_done

HIGH = "queue:pending:high"


def priority_claim():
    from stage1_mvp import bootstrap

    cls = bootstrap.CLAIMS.get("priority")
    if cls is None:
        not_done(
            "1.1", 'register your claim strategy as CLAIMS["priority"] in stage1_mvp/bootstrap.py'
        )
    strategy = cls()
    attribute("1.1", strategy, "take", "give your strategy a take() method")
    return strategy


@pytest.fixture
def queue(redis_client):
    return RedisWorkQueue(redis_client, RedisTaskStore(redis_client))


def push(redis_client, key: str, name: str) -> None:
    redis_client.lpush(key, json.dumps({"taskType": "SHELL", "payload": "true", "taskName": name}))


def take_name(strategy, queue) -> str | None:
    got = strategy.next(queue, "agent-x", 0.5)
    if got is None:
        return None
    assert isinstance(got, Claim), f"the message was not claimed: {got}"
    return got.task.task_name


def test_the_priority_claim_takes_high_priority_work_before_older_normal_work(queue, redis_client):
    strategy = priority_claim()
    push(redis_client, keys.PENDING_QUEUE, "normal, first in")
    push(redis_client, HIGH, "high, second in")
    assert take_name(strategy, queue) == "high, second in"
    assert take_name(strategy, queue) == "normal, first in"


def test_the_priority_claim_still_takes_normal_work_when_no_high_priority_work_waits(
    queue, redis_client
):
    strategy = priority_claim()
    push(redis_client, keys.PENDING_QUEUE, "normal")
    assert take_name(strategy, queue) == "normal"
    assert take_name(strategy, queue) is None  # both lists empty: nothing, after the timeout


def test_a_high_priority_message_stays_on_the_processing_list_while_it_runs(queue, redis_client):
    strategy = priority_claim()
    assert strategy.tracked, "a claim that loses the message when the agent dies is the naive one"
    push(redis_client, HIGH, "high")
    assert take_name(strategy, queue) == "high"
    held = [
        json.loads(m)["taskName"] for m in redis_client.lrange(keys.processing("agent-x"), 0, -1)
    ]
    assert held == ["high"], "the message must sit on processing:{agentId} while its task runs"
    assert redis_client.llen(HIGH) == 0
