"""Bad bytes on `queue:pending`, the list stage 1 agents take from.

Black box: each case is pushed as raw bytes with LPUSH, as anyone with redis-cli could, while
two real agents run as processes. Then: the message is on `queue:dead-letter` with a reason,
both agents are still running, and a valid task submitted after it runs to SUCCESS.

The agents start once for the module (starting them per case would dominate the run); a case
that kills one restarts it for the next case, and takes its own bytes out of every list, so one
failing case cannot poison the cases after it.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    json_ish,
    remove_everywhere,
    run_valid_task,
    task_message_params,
)
from common.testing.processes import RoleProcess

pytestmark = pytest.mark.integration

# (case, path) -> why it fails, for a case that is known to; "*" = on both paths. None now.
# How a message reaches the parser: an idle agent blocks in BLMOVE and claims in Python; a
# busy one moves its next message in the same Lua call that reports its last task, then
# claims it in claim.lua.
PATHS = ["idle", "busy"]


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


@pytest.mark.parametrize(("case", "path"), task_message_params(PATHS))
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


# -- fuzzing the real entry point ------------------------------------------------------------------
# Generated messages run on real agents, so a payload is never generated text: it is `true`, or
# not a string at all. Bytes that are not UTF-8 are left to the named cases above, which know
# that they fail today; here they would only hide every other finding behind that one.
FIELDS_AROUND_A_SAFE_PAYLOAD = st.fixed_dictionaries(
    {},
    optional={
        "taskType": st.one_of(st.sampled_from(["SHELL", "shell", "PYTHON", ""]), json_ish),
        "payload": st.one_of(st.just("true"), json_ish.filter(lambda v: not isinstance(v, str))),
        "executionTimeout": json_ish,
        "retryCount": json_ish,
        "taskName": json_ish,
        "requestId": json_ish,
        "taskId": st.one_of(st.uuids().map(str), json_ish),
        "attempt": json_ish,
        "epoch": json_ish,
        "status": json_ish,
    },
)


def utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


messages = st.one_of(
    st.binary(max_size=80).filter(utf8),
    FIELDS_AROUND_A_SAFE_PAYLOAD.map(lambda d: json.dumps(d).encode()),
    FIELDS_AROUND_A_SAFE_PAYLOAD.map(
        lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")
    ).filter(utf8),
)


def settled(redis, raw: bytes, letters_before: int, tasks_before: int) -> bool:
    """The message was dead-lettered, or became a task; nothing is left on a list."""
    lists = [keys.PENDING_QUEUE, *(keys.processing(a) for a in AGENTS)]
    if any(raw in redis.lrange(key, 0, -1) for key in lists):
        return False
    return dead_letter_for(redis, raw, letters_before) is not None or (
        redis.zcard(keys.TASK_INDEX) > tasks_before
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=messages)
def test_any_message_on_queue_pending_is_run_or_dead_lettered_and_no_agent_dies(stage1, raw):
    roles, redis, tasks, _ = stage1
    letters_before = redis.llen(keys.DEAD_LETTER)
    tasks_before = redis.zcard(keys.TASK_INDEX)
    try:
        redis.lpush(keys.PENDING_QUEUE, raw)
        eventually(
            lambda: settled(redis, raw, letters_before, tasks_before),
            10,
            interval=0.05,
            message=f"{raw[:80]!r} run or dead-lettered",
        )
        roles.assert_alive()
    finally:
        remove_everywhere(redis, raw)
