"""One payload limit, `max_payload_bytes`, from submit to the agent, checked at start-up
against what Kafka can carry.

The dispatch schema used to cap the payload at a constant of its own (64 KiB): with the setting
raised, a larger task was accepted, went DISPATCHED, and then the scheduler failed to build
its dispatch message, so the task never ran.
"""

from __future__ import annotations

import subprocess

import pytest

from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.domain.transitions import TaskStatus
from common.testing.processes import RoleProcess

pytestmark = pytest.mark.integration

RAISED = 200_000


def test_with_the_limit_raised_a_150_kb_payload_runs_to_success_in_stage_3(
    role, probe, redis_client
):
    # Given every role configured with a 200 000-byte limit
    limit = {"max_payload_bytes": RAISED}
    role("scheduler", "scheduler-1", **limit)
    role("agent", "agent-1", **limit)
    role("manager", "manager-1", **limit)
    probe.wait_for_agents("agent-1")
    tasks = TaskClient(RedisTaskStore(redis_client), RAISED)
    # When a task with a 150 KB payload is submitted (Python source: a shell command line
    # that long is over the kernel's 128 KiB limit for one argument)
    blob = "x" * 150_000
    task, _ = tasks.submit(
        {"taskType": "PYTHON_SCRIPT", "payload": f"blob = {blob!r}\nprint(len(blob))"}
    )
    assert len(task.payload.encode()) > 150_000
    # Then it runs to SUCCESS, dispatched over Kafka like any other task
    done = tasks.wait(task.task_id, timeout=60)
    assert done.status == TaskStatus.SUCCESS, done
    assert done.result.strip() == "150000"


def start_and_wait(role: str, env: dict[str, str], log_dir) -> tuple[int, list[str]]:
    proc = RoleProcess(role, 3, env, log_dir, name=f"{role}-refused")
    proc.start()
    try:
        code = proc.proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.stop()
        pytest.fail(f"{role} started with a payload limit Kafka cannot carry")
    proc.stop()
    return code, [line for line in proc.log_text().splitlines() if line.strip()]


ROLES = ["scheduler", "agent", "manager"]


@pytest.mark.parametrize("role_name", ROLES)
def test_a_limit_kafka_cannot_carry_stops_a_stage_3_role_at_start_up_with_one_line(
    role_name, stage3_env, role_log_dir
):
    env = {**stage3_env, "TASKLAB_STAGE": "3", "TASKLAB_MAX_PAYLOAD_BYTES": "5000000"}
    code, lines = start_and_wait(role_name, env, role_log_dir)
    assert code == 2
    assert len(lines) == 1, lines
    assert "max_payload_bytes" in lines[0] and "Kafka" in lines[0], lines[0]


def test_a_limit_kafka_cannot_carry_is_refused_when_only_the_command_line_says_stage_3(
    stage3_env, role_log_dir
):
    env = {**stage3_env, "TASKLAB_MAX_PAYLOAD_BYTES": "5000000"}
    code, lines = start_and_wait("agent", env, role_log_dir)
    assert code == 2
    assert len(lines) == 1, lines
    assert "max_payload_bytes" in lines[0], lines[0]
