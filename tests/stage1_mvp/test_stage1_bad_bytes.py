"""Bad bytes on `queue:pending`, the list stage 1 agents take from.

Black box: each case is pushed as raw bytes with LPUSH, as anyone with redis-cli could, while
two real agents run as processes. Then: the message is on `queue:dead-letter` with a reason,
both agents are still running, and a valid task submitted after it runs to SUCCESS.

The agents start once for the module (starting them per case would dominate the run); a case
that kills one restarts it for the next case, and takes its own bytes out of every list, so a
known failure stays one xfail instead of poisoning the cases after it.
"""

from __future__ import annotations

import pytest

from common import keys
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.domain.transitions import TaskStatus
from common.testing import eventually
from common.testing.bad_messages import (
    BadMessage,
    RoleSet,
    dead_letter_for,
    flushed_redis,
    remove_everywhere,
    run_valid_task,
    task_messages,
)
from common.testing.processes import RoleProcess

pytestmark = pytest.mark.integration

TAKE_BEFORE_DECODING = (
    "the agent decodes what BLMOVE/take_next.lua returns with a strict bytes.decode() "
    "(RedisWorkQueue._s) before any parser sees it: UnicodeDecodeError in the worker loop, "
    "the message stays on processing:{agentId} and is never dead-lettered"
)
# (case, path) -> why it fails today; "*" = on both paths.
KNOWN_FAILURES = {
    ("invalid-utf8", "*"): TAKE_BEFORE_DECODING,
    ("surrogate-bytes", "*"): TAKE_BEFORE_DECODING,
    ("task-id-names-a-key", "busy"): (
        "take_next.lua builds 'task:' .. taskId from the unparsed message and HGETs it: a "
        "taskId of '<existing id>:history' names a list, the script fails with WRONGTYPE "
        "inside finish_take, and the message stays on processing:{agentId} (issue 8 item 7)"
    ),
}

# How a message reaches the parser: an idle agent blocks in BLMOVE and claims in Python; a
# busy one takes its next message in the same Lua call that reports its last task.
PATHS = ["idle", "busy"]


def cases() -> list:
    params = []
    for case in task_messages():
        for path in PATHS:
            reason = KNOWN_FAILURES.get((case.name, path)) or KNOWN_FAILURES.get((case.name, "*"))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(case, path, id=f"{case.name}-{path}", marks=marks))
    return params


@pytest.fixture(scope="module")
def stage1(redis_service, tmp_path_factory):
    url = redis_service.env["TASKLAB_REDIS_URL"]
    redis = flushed_redis(url)
    logs = tmp_path_factory.mktemp("stage1-bad-bytes")
    roles = RoleSet(
        [
            RoleProcess(
                "agent",
                1,
                {"TASKLAB_REDIS_URL": url, "TASKLAB_AGENT_ID": name, "TASKLAB_AGENT_CAPACITY": "1"},
                logs,
                name=name,
            )
            for name in AGENTS
        ]
    )
    roles.start()
    tasks = TaskClient(RedisTaskStore(redis))
    try:
        # A task that exists, for the ids crafted to name its keys.
        existing = run_valid_task(tasks, timeout=30)
        yield roles, redis, tasks, existing
    finally:
        roles.stop()
        redis.close()


AGENTS = ("agent-1", "agent-2")


def keep_every_agent_busy(tasks: TaskClient) -> list[str]:
    """One slow task per agent, each RUNNING: the next message waits for a report's take."""
    slow = [tasks.submit({"taskType": "SHELL", "payload": "sleep 0.5"})[0].task_id for _ in AGENTS]
    eventually(
        lambda: all(tasks.get(t).status == TaskStatus.RUNNING for t in slow),
        10,
        message="every agent busy",
    )
    return slow


@pytest.mark.parametrize(("case", "path"), cases())
def test_a_bad_message_on_queue_pending_is_dead_lettered_and_the_agents_carry_on(
    stage1, case: BadMessage, path: str
):
    roles, redis, tasks, existing = stage1
    roles.restart_dead()
    raw = case.raw(existing)
    letters_before = redis.llen(keys.DEAD_LETTER)
    try:
        # Given a bad message ahead of a valid task in the queue
        slow = keep_every_agent_busy(tasks) if path == "busy" else []
        redis.lpush(keys.PENDING_QUEUE, raw)
        # When the agents take both
        valid = run_valid_task(tasks)
        # Then the bad one is dead-lettered with its reason, and nobody died of it
        letter = eventually(
            lambda: dead_letter_for(redis, raw, letters_before),
            10,
            interval=0.2,
            message=f"{case.name} on queue:dead-letter",
        )
        assert letter["reason"], letter
        assert letter["source"] == keys.PENDING_QUEUE
        roles.assert_alive()
        assert valid
        eventually(
            lambda: all(tasks.get(t).status == TaskStatus.SUCCESS for t in slow),
            10,
            message="the tasks that kept the agents busy SUCCESS",
        )
    finally:
        remove_everywhere(redis, raw)
