"""Break it: Redis frozen (SIGSTOP) under a leader that is placing batches while agents work.

ZooKeeper is untouched, so nobody's session ends and no failover is due: every role's Redis
call simply waits. What must hold when Redis wakes: the batch the leader had taken is placed
once (it sits on `queue:scheduling` until its script runs), the reports the agents held back
go through, and every task runs exactly once.

Two lengths of freeze. A short one is waited out: every call gets its answer. A long one
outlasts the clients' 10 s socket timeout: a call gives up, yet Redis carries it out when it
wakes (a take that moved an entry to `processing:{agentId}`, a claim that made it RUNNING),
and nobody hears the answer. The agent then gives back what its lists hold that none of its
workers runs (`Agent` reconciles after a call with no answer), and the leader's next sweep
of `queue:scheduling` places what a lost take left there.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from common import keys
from common.devstack.redis import RedisService
from common.domain.transitions import TaskStatus
from common.testing.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TASKS = 60
# Shorter than the Redis client's 10 s socket timeout: every call waits Redis out.
SHORT_FREEZE = 4.0
# Longer than it: calls give up while Redis still holds them, and carries them out on waking.
LONG_FREEZE = 12.0


@pytest.fixture
def redis_url(tmp_path):
    """A Redis of this test's own: freezing the session's would freeze every other test."""
    service = RedisService(appendonly=True)
    running = service.start(tmp_path / "redis")
    yield running.env["TASKLAB_REDIS_URL"]
    os.kill(running.pid, signal.SIGCONT)  # in case the test failed while it was frozen
    service.stop(running)


def test_redis_frozen_under_a_placing_leader_strands_nothing_and_runs_nothing_twice(
    redis_url, scheduler, agent, probe
):
    ids, epoch = freeze_mid_burst(scheduler, agent, probe, SHORT_FREEZE)

    # Then every task ends SUCCESS at its first attempt, and each ran exactly once
    eventually(lambda: probe.all_succeeded(ids), 60, message="every task succeeded")
    assert_each_ran_once(probe, ids)
    assert {probe.tasks.get(t).attempt for t in ids} == {1}
    # and no call failed, so the leader kept its term
    assert probe.fence() == epoch


def test_redis_frozen_past_the_socket_timeout_strands_nothing_and_runs_nothing_twice(
    redis_url, scheduler, agent, probe
):
    ids, _ = freeze_mid_burst(scheduler, agent, probe, LONG_FREEZE)

    # Then every task still ends SUCCESS, each ran exactly once: what a lost answer left on an
    # agent's processing list was given back (a new attempt, not counted as lost) and run once
    eventually(lambda: probe.all_succeeded(ids), 90, message="every task succeeded")
    assert_each_ran_once(probe, ids)
    assert [t for t in ids if probe.redis.hget(keys.task(t), "lostAttempts")] == []


def freeze_mid_burst(scheduler, agent, probe, seconds: float) -> tuple[list[str], int]:
    # Given two schedulers and two agents, and a burst larger than the inboxes hold
    scheduler("sched-a")
    scheduler("sched-b")
    agent("agent-1", capacity=2)
    agent("agent-2", capacity=2)
    eventually(lambda: len(probe.live_agents()) == 2, 15, message="agents registered")
    epoch = eventually(probe.fence, 15, message="leader elected")
    labels = probe.submit_counted(TASKS, extra="sleep 0.05")
    eventually(lambda: sum(probe.runs().values()) >= 10, 30, message="the burst under way")
    assert sum(probe.runs().values()) <= TASKS - 20, "the burst was nearly over before the freeze"

    # When Redis freezes mid-burst, and then wakes
    pid = int(probe.redis.info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return list(labels.values()), epoch


def assert_each_ran_once(probe, ids: list[str]) -> None:
    runs = probe.runs()
    assert len(runs) == TASKS and all(n == 1 for n in runs.values()), runs
    assert {probe.tasks.get(t).status for t in ids} == {TaskStatus.SUCCESS}
