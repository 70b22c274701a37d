"""Break it: Redis frozen (SIGSTOP) for 12 s under the whole of stage 3, mid-burst.

Twelve seconds outlasts the clients' 10 s socket timeout: calls give up while Redis still
holds them, and it carries them out when it wakes, unheard. The ones that matter here are an
agent's accept of a dispatch (the entry moves to its processing list: retried, the accept is
refused as "taken", so the agent asks `accept_again`), the manager's writes of events (retried,
and refused as duplicates where the first went through) and the leader's placements (it steps
down and the next term's sweep recovers). ZooKeeper is untouched and the bus keeps running.
What must hold when Redis wakes: every task ends SUCCESS and runs exactly once.

This test starts its own Redis, so freezing it freezes nobody else's.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from common.devstack.redis import RedisService
from common.domain.transitions import TaskStatus
from common.testing import eventually

pytestmark = pytest.mark.slow

TASKS = 80
FREEZE = 12.0  # past the 10 s socket timeout of every role's Redis client


@pytest.fixture
def own_redis(tmp_path):
    service = RedisService(appendonly=True)
    running = service.start(tmp_path / "own-redis")
    yield running
    os.kill(running.pid, signal.SIGCONT)  # in case the test failed while it was frozen
    service.stop(running)


@pytest.fixture
def start_role(own_redis, start_role):
    """The roles stop before this test's Redis does."""
    return start_role


@pytest.fixture
def redis_url(own_redis) -> str:
    return own_redis.env["TASKLAB_REDIS_URL"]


def test_redis_frozen_past_the_socket_timeout_under_stage_3_strands_nothing_and_runs_nothing_twice(
    role, probe, own_redis
):
    # Given a scheduler, a manager and two agents, and a burst under way
    role("scheduler", "scheduler-1")
    role("manager", "manager-1")
    for name in ("agent-1", "agent-2"):
        role("agent", name, agent_capacity=2)
    probe.wait_for_agents("agent-1", "agent-2")
    labels = probe.submit_counted(TASKS, extra="sleep 0.05")
    ids = list(labels.values())
    eventually(lambda: len(probe.runs()) >= 10, 60, message="the burst under way")
    assert len(probe.runs()) <= TASKS - 20, "the burst was nearly over before the freeze"

    # When Redis freezes past the socket timeout, and then wakes
    os.kill(own_redis.pid, signal.SIGSTOP)
    try:
        time.sleep(FREEZE)
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)

    # Then every task ends SUCCESS, and each ran exactly once
    eventually(lambda: probe.all_succeeded(ids), 120, interval=0.5, message="every task succeeded")
    runs = probe.runs()
    assert set(runs) == set(labels), set(labels) - set(runs)
    assert {label: len(r) for label, r in runs.items() if len(r) != 1} == {}
    assert {probe.tasks.get(t).status for t in ids} == {TaskStatus.SUCCESS}
