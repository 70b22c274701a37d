"""Bad bytes where stage 2 takes messages: `queue:pending` (the leader-elected scheduler) and
an agent's inbox `agent:{agentId}:tasks` (the agent).

Black box: each case is pushed as raw bytes with LPUSH while a real scheduler and a real agent
run as processes. Then: the message is on `queue:dead-letter` with a reason and the list it
came from, both processes are still running, and a valid task submitted after it runs to
SUCCESS (placed by the same scheduler, run by the same agent).

The roles start once for the module; a case that kills one restarts it for the next case, and
takes its own bytes out of every list, so one failing case cannot poison the others.
"""

from __future__ import annotations

import uuid

import pytest
from kazoo.client import KazooClient

from common import keys
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.coordination.paths import LIVE_AGENTS
from common.domain.transitions import TaskStatus
from common.testing import eventually
from common.testing.bad_messages import (
    BadMessage,
    RoleSet,
    dead_letter_for,
    flushed_redis,
    remove_everywhere,
    run_valid_task,
    task_message_params,
)
from common.testing.processes import RoleProcess

pytestmark = pytest.mark.integration

AGENT = "agent-1"
INBOX = keys.agent_tasks(AGENT)


@pytest.fixture(scope="module")
def stage2(redis_service, zookeeper_service, tmp_path_factory):
    url = redis_service.env["TASKLAB_REDIS_URL"]
    hosts = zookeeper_service.env["TASKLAB_ZK_HOSTS"]
    chroot = f"/tasklab-bad-bytes-{uuid.uuid4().hex[:8]}"
    zk = KazooClient(hosts=hosts)
    zk.start(timeout=10)
    zk.ensure_path(chroot + LIVE_AGENTS)
    redis = flushed_redis(url)
    env = {
        "TASKLAB_REDIS_URL": url,
        "TASKLAB_ZK_HOSTS": hosts,
        "TASKLAB_ZK_CHROOT": chroot,
        "TASKLAB_ZK_SESSION_TIMEOUT": "3.0",
    }
    logs = tmp_path_factory.mktemp("stage2-bad-bytes")
    roles = RoleSet(
        [
            RoleProcess("scheduler", 2, {**env, "TASKLAB_SCHEDULER_ID": "scheduler-1"}, logs),
            RoleProcess(
                "agent",
                2,
                {**env, "TASKLAB_AGENT_ID": AGENT, "TASKLAB_AGENT_CAPACITY": "1"},
                logs,
                name=AGENT,
            ),
        ]
    )
    roles.start()
    tasks = TaskClient(RedisTaskStore(redis))
    try:
        # A task that exists, for the ids crafted to name its keys; also: the stage is up.
        existing = run_valid_task(tasks, timeout=60)
        yield roles, redis, tasks, existing
    finally:
        roles.stop()
        redis.close()
        zk.stop()
        zk.close()


def check_dead_lettered(stage2, case: BadMessage, push, source: str, busy: bool) -> None:
    roles, redis, tasks, existing = stage2
    roles.restart_dead()
    raw = case.raw(existing)
    letters_before = redis.llen(keys.DEAD_LETTER)
    try:
        # Given a bad message ahead of a valid task
        slow = []
        if busy:
            slow = [tasks.submit({"taskType": "SHELL", "payload": "sleep 0.5"})[0].task_id]
            eventually(
                lambda: tasks.get(slow[0]).status == TaskStatus.RUNNING, 20, message="agent busy"
            )
        push(redis, raw)
        # When the stage takes both
        valid = run_valid_task(tasks, timeout=30)
        # Then the bad one is dead-lettered with its reason, and nobody died of it
        letter = eventually(
            lambda: dead_letter_for(redis, raw, letters_before),
            10,
            interval=0.2,
            message=f"{case.name} on queue:dead-letter",
        )
        assert letter["reason"], letter
        assert letter["source"] == source
        roles.assert_alive()
        assert valid
        eventually(
            lambda: all(tasks.get(t).status == TaskStatus.SUCCESS for t in slow),
            10,
            message="the task that kept the agent busy SUCCESS",
        )
    finally:
        remove_everywhere(redis, raw)


@pytest.mark.parametrize(("case", "path"), task_message_params(["idle"]))
def test_a_bad_message_on_queue_pending_is_dead_lettered_by_the_scheduler_which_carries_on(
    stage2, case: BadMessage, path: str
):
    check_dead_lettered(
        stage2, case, lambda r, raw: r.lpush(keys.PENDING_QUEUE, raw), keys.PENDING_QUEUE, False
    )


@pytest.mark.parametrize(("case", "path"), task_message_params(["idle", "busy"]))
def test_a_bad_message_in_an_agent_inbox_is_dead_lettered_by_the_agent_which_carries_on(
    stage2, case: BadMessage, path: str
):
    check_dead_lettered(
        stage2, case, lambda r, raw: r.lpush(INBOX, raw), INBOX, busy=path == "busy"
    )
