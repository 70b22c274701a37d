"""The stage 1 reaper gives back a silent agent's work only while its own heartbeat is live,
checked in each entry's script on Redis's clock (real Redis).

A reap sent just before Redis froze is carried out when it wakes: every heartbeat key has
lapsed by then, the reaper's own too, and the agents it would reap are alive, about to write
theirs again. The check in Python (`fresh_for`) was made before the freeze; only the script
sees the moment the entry moves.
"""

from __future__ import annotations

import time

import pytest

from common import keys
from common.adapters.redis_agent import RedisEventSink, RedisListIntake, ReliableClaim
from common.adapters.redis_queue import Claim, RedisWorkQueue
from common.adapters.redis_store import RedisTaskStore
from common.domain.transitions import TaskStatus

pytestmark = pytest.mark.integration


def running_on(redis_client, client, agent_id: str) -> Claim:
    """A task RUNNING on `agent_id`, its entry on the agent's processing list."""
    client.submit({"taskType": "SHELL", "payload": "true"})
    queue = RedisWorkQueue(redis_client, RedisTaskStore(redis_client))
    intake = RedisListIntake(queue, agent_id, ReliableClaim())
    claim = queue.claim(agent_id, intake.claim.take(queue, agent_id, 1))
    assert isinstance(claim, Claim)
    return claim


def test_a_reaper_whose_own_heartbeat_lapsed_gives_back_nothing(redis_client, client):
    # Given agent-a running a task, its heartbeat key lapsed, and the reaper agent-b's too
    claim = running_on(redis_client, client, "agent-a")
    redis_client.sadd(keys.AGENTS_SEEN, "agent-a")
    queue = RedisWorkQueue(redis_client, RedisTaskStore(redis_client))

    # When agent-b's reap is carried out (as after a freeze: no key is live)
    requeued = queue.reap_dead_agents(actor="reaper:agent-b", reaper="agent-b")

    # Then nothing moved: the task still runs on agent-a, its entry on its list
    assert requeued == 0
    assert client.get(claim.task.task_id).status == TaskStatus.RUNNING
    assert redis_client.llen(keys.processing("agent-a")) == 1

    # And once agent-b's own key is live again, agent-a's silence counts: the task goes back
    redis_client.set(keys.heartbeat("agent-b"), "1", px=1500)
    assert queue.reap_dead_agents(actor="reaper:agent-b", reaper="agent-b") == 1
    task = client.get(claim.task.task_id)
    assert (task.status, task.attempt) == (TaskStatus.PENDING, 2)


class _Beats:
    """A queue whose heartbeats always go through (no Redis needed for fresh_for's clock)."""

    def heartbeat(self, agent_id: str, ttl: float) -> None:
        return None


def test_fresh_for_is_zero_while_a_gap_is_under_way_and_counts_again_from_the_next_beat():
    sink = RedisEventSink(_Beats(), None, "agent-a", heartbeat_ttl=0.2)
    sink.heartbeat(0, 1)
    time.sleep(0.1)
    assert sink.fresh_for() > 0.05
    time.sleep(0.25)  # no beat for longer than the TTL: the stretch is broken
    assert sink.fresh_for() == 0.0
    sink.heartbeat(0, 1)  # a new stretch starts here, not at the first beat
    assert sink.fresh_for() < 0.1
