"""`tasklab explain TASK_ID` on real services: the command as a user runs it, against tasks put
in each situation for real (queued behind others, waiting out a retry, running on a live agent,
a composite's child), with its --json form and its one-line error for an unknown id. The
situations the checker covers (an agent killed, a task left SCHEDULED, an attempt lost) are
explained in test_guarantee_checker.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from observability_support import wait_ready

from common import keys
from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.domain.transitions import TaskStatus
from common.testing import eventually

pytestmark = pytest.mark.integration


def tasklab(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def explained(env: dict[str, str], task_id: str) -> list[str]:
    done = tasklab(env, "explain", task_id)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.fixture
def env(redis_url) -> dict[str, str]:
    return {"TASKLAB_REDIS_URL": redis_url, "TASKLAB_STAGE": "1"}


@pytest.fixture
def tasks(redis_url) -> TaskClient:
    return TaskClient(RedisTaskStore(redis_client(redis_url)))


def test_a_queued_task_is_explained_by_its_place_in_the_queue_and_its_history(env, tasks):
    # Given three tasks queued with no agent to take them
    ids = [tasks.submit({"taskType": "SHELL", "payload": f"echo {n}"})[0].task_id for n in range(3)]

    # When the second one is explained
    lines = explained(env, ids[1])

    # Then it says it is PENDING, 2nd to go of 3, how it got there, and what guards it
    assert lines[0].startswith("It is PENDING since")
    assert "It is 2nd of 3 in queue:pending: 1 message(s) will be taken before it." in lines
    assert any(line.endswith("it became PENDING (attempt 1, epoch 0) by client.") for line in lines)
    assert any("there is no fence:scheduler" in line for line in lines)
    assert "It has no automatic retries (retryCount 0): a failure is final." in lines
    assert any(
        line.startswith("Refused writes are counted for the whole platform") for line in lines
    )
    assert lines[-1].startswith("No guarantee checker has run")


def test_a_failed_attempt_waiting_out_its_backoff_says_when_it_runs_again_and_what_is_left(
    env, tasks, start_role
):
    # Given an agent with a long retry backoff, and a task that fails with two retries
    agent = start_role("agent", 1, {**env, "TASKLAB_RETRY_BACKOFF_BASE": "60"}, "agent-x1")
    task = tasks.submit({"taskType": "SHELL", "payload": "exit 3", "retryCount": 2})[0]

    # When its first attempt failed
    eventually(lambda: tasks.get(task.task_id).attempt == 2, 30, 0.05, message="a retry")
    assert agent.alive()

    # Then explain says it waits in queue:delayed, with one of two retries used
    lines = explained(env, task.task_id)
    assert "a retry waiting out its backoff" in lines[0]
    assert any(
        line.startswith("It is in queue:delayed, back on queue:pending at") for line in lines
    )
    assert "It may retry 2 time(s) automatically; 1 used, 1 left." in lines
    assert any("retry 1/2" in line for line in lines)


def test_a_running_task_names_its_live_agent_and_its_time_left(
    redis_url, zookeeper_service, zk_chroot, observed_role
):
    # Given a stage 2 scheduler and agent, and a task running on the agent
    env = {"TASKLAB_REDIS_URL": redis_url, "TASKLAB_ZK_CHROOT": zk_chroot, **zookeeper_service.env}
    scheduler, scheduler_address = observed_role("scheduler", 2, env, "scheduler-x2")
    agent, agent_address = observed_role("agent", 2, env, "agent-x2")
    wait_ready(scheduler, scheduler_address)
    wait_ready(agent, agent_address)
    tasks = TaskClient(RedisTaskStore(redis_client(redis_url)))
    task = tasks.submit({"taskType": "SHELL", "payload": "sleep 30", "executionTimeout": 90})[0]
    eventually(lambda: tasks.get(task.task_id).status == TaskStatus.RUNNING, 30, 0.05)

    # When it is explained (the JSON form, for machines)
    done = tasklab({**env, "TASKLAB_STAGE": "2"}, "explain", task.task_id, "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)

    # Then the agent is live by ZooKeeper and its heartbeat, the epoch is the fence's
    assert body["taskId"] == task.task_id and body["status"] == "RUNNING"
    said = {s["kind"]: s["text"] for s in body["sentences"]}
    assert said["state"].startswith("It is RUNNING on agent agent-x2 since")
    assert "before its 90s timeout" in said["state"]
    assert said["owner"].startswith(
        "Its agent agent-x2 is live: registered in ZooKeeper (/live-agents/agent-x2), "
        "heartbeat key expires in"
    )
    assert "the current fence:scheduler" in said["epoch"]
    assert said["queue"] == "Agent agent-x2 holds it on processing:agent-x2 (taken to run)."


def test_a_composite_child_names_its_parent_and_its_parents_state(env, tasks, redis_client):
    # Given a parent task and a child whose record names it
    parent = tasks.submit({"taskType": "SHELL", "payload": "true"})[0]
    child = tasks.submit({"taskType": "SHELL", "payload": "true"})[0]
    redis_client.hset(
        keys.task(child.task_id),
        mapping={"parentId": parent.task_id, "role": "shard", "shardIndex": 0, "shardTotal": 2},
    )

    # Then explain names the parent and its state; once the parent is gone, says so
    lines = explained(env, child.task_id)
    assert f"It is shard 1 of 2 of composite task {parent.task_id}, which is PENDING." in lines
    redis_client.delete(keys.task(parent.task_id))
    lines = explained(env, child.task_id)
    assert (
        f"It is shard 1 of 2 of composite task {parent.task_id}, which no longer exists." in lines
    )


def test_a_composite_no_scheduler_has_started_says_so_and_counts_its_children(env, redis_client):
    # Given a composite of two shards submitted where no scheduler has ever led (stage 1)
    from common.adapters.redis_composite import RedisCompositeStore
    from common.domain.composite import validate_composite

    spec = validate_composite(
        {"kind": "SHARDS", "completions": 2, "template": {"taskType": "SHELL", "payload": "true"}}
    )
    parent, _ = RedisCompositeStore(redis_client).submit_composite(spec)

    # Then explain says who starts a composite, that nobody has yet, and counts its children
    lines = explained(env, parent.task_id)
    state = next(line for line in lines if line.startswith("It is PENDING"))
    assert "which the leading scheduler's coordinator starts (stage 2 on)" in state
    assert "No scheduler has led on this Redis yet" in state
    assert "Its 2 children: 2 WAITING (0 of 2 finished)." in lines
    assert not any(line.startswith("Its message is on no queue") for line in lines)


def test_an_unknown_task_is_one_line_on_stderr_and_exit_code_1(env):
    done = tasklab(env, "explain", "no-such-task")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "error: no task no-such-task\n"
