"""Redis unavailable for seconds while tasks run (frozen with SIGSTOP, longer than the
heartbeat TTL): what the agents still do, and what they must not do when it comes back.

- Timeouts are enforced on the agent, without Redis: a task past its timeout is killed on time.
- Reports are retried until Redis answers: no task is left RUNNING.
- Every heartbeat key lapsed during the outage; the first agent back must not take that as
  everyone else's death and re-run their live work (it reaps only after a whole TTL of its
  own heartbeats going through, by which time the others have written theirs again).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.devstack.redis import RedisService
from common.domain.transitions import TaskStatus
from common.testing import eventually, process_alive

pytestmark = pytest.mark.slow

OUTAGE = 4.0  # seconds: well past the test profile's 1.5 s heartbeat TTL


@pytest.fixture
def own_redis(tmp_path):
    service = RedisService(appendonly=True)
    running = service.start(tmp_path)
    yield running
    os.kill(running.pid, signal.SIGCONT)
    service.stop(running)


def test_a_redis_outage_longer_than_the_ttl_strands_nothing_and_re_runs_nothing(
    own_redis, agent, tmp_path
):
    url = own_redis.env["TASKLAB_REDIS_URL"]
    client = TaskClient(RedisTaskStore(redis.Redis.from_url(url)))
    # Given two agents, one running a long task and one a task that will time out
    a = agent("agent-a", redis_url=url)
    b = agent("agent-b", redis_url=url)
    long_pid, short_pid = tmp_path / "long.pid", tmp_path / "short.pid"
    long, _ = client.submit(
        {"taskType": "SHELL", "payload": f"echo $$ > {long_pid}; sleep {OUTAGE + 3}; echo long"}
    )
    short, _ = client.submit(
        {
            "taskType": "SHELL",
            "payload": f"echo $$ > {short_pid}; sleep 60",
            "executionTimeout": 2,
        }
    )
    eventually(
        lambda: long_pid.exists() and short_pid.exists() and short_pid.read_text().strip(),
        timeout=15,
        message="both running",
    )
    pid_of_short = int(short_pid.read_text())

    # When Redis freezes for longer than the heartbeat TTL
    os.kill(own_redis.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        # Then the timed-out task is still killed on time, by its agent alone
        eventually(
            lambda: not process_alive(pid_of_short),
            timeout=OUTAGE,
            message="timed-out task killed during the outage",
        )
        assert time.monotonic() - frozen_at < OUTAGE
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - frozen_at)))
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)

    # And when Redis is back, the held-back report goes through, the long task finishes on
    # its own agent as attempt 1 (nobody re-ran it), and nothing is left RUNNING
    done_short = eventually(
        lambda: (t := client.get(short.task_id)).is_terminal and t, 20, message="short reported"
    )
    assert (done_short.status, done_short.attempt) == (TaskStatus.FAILED, 1)
    assert "timed out" in (done_short.error or "")
    done_long = eventually(
        lambda: (t := client.get(long.task_id)).is_terminal and t, 20, message="long finished"
    )
    assert (done_long.status, done_long.attempt, done_long.result) == (
        TaskStatus.SUCCESS,
        1,
        "long\n",
    )
    assert not any(
        h["state"] == "PENDING" and h.get("from") for h in client.store.history(long.task_id)
    )
    assert a.alive() and b.alive()


TASKS = 60
LONG_FREEZE = 12.0  # past the agents' 10 s Redis socket timeout


def test_redis_frozen_past_the_socket_timeout_mid_burst_strands_nothing_and_runs_nothing_twice(
    own_redis, agent, tmp_path
):
    # Given two agents of capacity 2 in the middle of a burst of 60 short tasks
    url = own_redis.env["TASKLAB_REDIS_URL"]
    client = TaskClient(RedisTaskStore(redis.Redis.from_url(url)))
    agent("agent-a", capacity=2, redis_url=url)
    agent("agent-b", capacity=2, redis_url=url)
    runs = tmp_path / "runs.log"
    ids = [
        client.submit({"taskType": "SHELL", "payload": f"echo t{i} >> {runs}; sleep 0.05"})[
            0
        ].task_id
        for i in range(TASKS)
    ]

    def ran() -> list[str]:
        return runs.read_text().split() if runs.exists() else []

    eventually(lambda: len(ran()) >= 10, 30, message="the burst under way")
    assert len(ran()) <= TASKS - 20, "the burst was nearly over before the freeze"

    # When Redis freezes for longer than the clients' socket timeout: the calls in flight give
    # up, and Redis carries them out when it wakes (takes and claims nobody hears of)
    os.kill(own_redis.pid, signal.SIGSTOP)
    try:
        time.sleep(LONG_FREEZE)
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)

    # Then every task ends SUCCESS and ran exactly once: what the lost answers took was given
    # back by the agent it was taken for, not left on its processing list
    def statuses() -> set[TaskStatus]:
        return {client.get(t).status for t in ids}

    eventually(lambda: statuses() == {TaskStatus.SUCCESS}, 60, message="every task SUCCESS")
    counted = sorted(ran())
    assert counted == sorted(f"t{i}" for i in range(TASKS)), counted
