"""Output lines travel agent -> task-logs-topic -> manager -> Redis while the task runs, so
`tasklab logs --follow` shows them live, and each task's lines stay in order."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time

from common.domain.transitions import TaskStatus
from common.testing import eventually


def read_line(proc: subprocess.Popen, timeout: float) -> str | None:
    """The next stdout line of `proc`, or None if none came within `timeout` (bounded)."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return None
    line = proc.stdout.readline()
    return line.rstrip("\n") if line else None


def test_logs_follow_prints_a_running_tasks_lines_while_it_is_still_running(
    role, probe, stage3_env
):
    # Given the whole stage
    role("scheduler", "scheduler-1")
    role("manager", "manager-1")
    role("agent", "agent-1")
    probe.wait_for_agents("agent-1")
    # and a task that prints a line, works for three seconds, then prints another
    task, _ = probe.tasks.submit(
        {"taskType": "SHELL", "payload": "echo first; sleep 3; echo second"}
    )

    # When a user runs `tasklab logs TASK_ID --follow`
    follow = subprocess.Popen(
        [sys.executable, "-m", "common.cli.main", "logs", task.task_id, "--follow"],
        env={**os.environ, **stage3_env, "TASKLAB_ENV": "test"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Then the first line is printed while the task is still running
        first = read_line(follow, timeout=10)
        seen_at = probe.tasks.get(task.task_id)
        assert first == "first"
        assert seen_at.status == TaskStatus.RUNNING, seen_at.status
        # and the second once it is printed, after which the command ends by itself
        assert read_line(follow, timeout=10) == "second"
        assert follow.wait(10) == 0
        assert probe.tasks.get(task.task_id).status == TaskStatus.SUCCESS
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait(5)
        follow.stdout.close()
        follow.stderr.close()


def test_the_lines_of_tasks_printing_at_once_are_stored_each_in_order(role, probe):
    # Given two agents with three slots each
    role("scheduler", "scheduler-1")
    role("manager", "manager-1")
    role("agent", "agent-1", agent_capacity=3)
    role("agent", "agent-2", agent_capacity=3)
    probe.wait_for_agents("agent-1", "agent-2")

    # When six tasks each print 400 numbered lines as fast as they can, at the same time
    script = "import sys\nfor i in range(400):\n    print(f'{TAG} {i}', flush=True)\n"
    ids = {
        tag: probe.tasks.submit(
            {"taskType": "PYTHON_SCRIPT", "payload": f"TAG = {tag!r}\n" + script}
        )[0].task_id
        for tag in "abcdef"
    }
    started = time.monotonic()
    eventually(lambda: probe.all_succeeded(ids.values()), 60, message="all six SUCCESS")

    # Then each task's log holds exactly its own lines, each once, in the order printed
    for tag, task_id in ids.items():
        assert probe.logs(task_id) == [f"{tag} {i}" for i in range(400)], tag
    print(f"\n6 x 400 lines stored in order in {time.monotonic() - started:.1f}s")
