"""Faults an operator meets every day, and what every stage guarantees under them.

One agent runs in every stage (common/agent/agent.py); only its intake and reports differ.
These tests hold each stage to the same promises, injecting the fault themselves:
- SIGTERM with a task running: it finishes within the grace period (`agent_stop_grace`, 3 s
  in the test profile), or is killed and handed back (attempt + 1) and runs again elsewhere;
- an agent frozen long enough to be failed over: when it wakes, it kills its superseded run
  within about a second instead of racing the new attempt.
"""

from __future__ import annotations

import pytest

from common.domain.transitions import TaskStatus
from common.testing import eventually, process_alive

pytestmark = pytest.mark.slow


def finished(platform, task_id, timeout=45):
    return eventually(
        lambda: (t := platform.client.get(task_id)).is_terminal and t,
        timeout=timeout,
        message=f"task {task_id} finished",
    )


def running_with_pid(platform, task_id, pidfile, timeout=30) -> int:
    eventually(
        lambda: (
            platform.client.get(task_id).status == TaskStatus.RUNNING
            and pidfile.exists()
            and pidfile.read_text().strip()
        ),
        timeout=timeout,
        message="running",
    )
    return int(pidfile.read_text().split()[-1])


def test_an_agent_stopped_with_sigterm_finishes_its_running_task_within_the_grace(
    platform, tmp_path
):
    # Given a task of one second running on an agent
    pidfile = tmp_path / "pid"
    task, _ = platform.client.submit(
        {"taskType": "SHELL", "payload": f"echo $$ >> {pidfile}; sleep 1; echo done"}
    )
    running_with_pid(platform, task.task_id, pidfile)
    agent = platform.agent_running(task.task_id)

    # When the agent is sent SIGTERM (docker stop, a pod deleted)
    agent.terminate()

    # Then the task finishes on it, once, and the agent exits by itself within the grace
    done = finished(platform, task.task_id)
    assert (done.status, done.attempt, done.result) == (TaskStatus.SUCCESS, 1, "done\n")
    eventually(lambda: not agent.alive(), timeout=10, message="the agent exited")


def test_an_agent_stopped_past_its_grace_hands_its_task_back_to_run_again(platform, tmp_path):
    # Given a task that outlives the 3 s grace the first time it runs, and is quick after
    pidfile, marker = tmp_path / "pid", tmp_path / "first-run"
    payload = (
        f"echo $$ >> {pidfile}; "
        f"if [ -e {marker} ]; then echo second; else touch {marker}; sleep 60; fi"
    )
    task, _ = platform.client.submit({"taskType": "SHELL", "payload": payload})
    first_pid = running_with_pid(platform, task.task_id, pidfile)
    agent = platform.agent_running(task.task_id)

    # When the agent is sent SIGTERM
    agent.terminate()

    # Then after the grace the first run is killed, the agent exits, and attempt 2 runs on
    # another agent to success: nothing was stranded RUNNING on the stopped agent
    eventually(lambda: not process_alive(first_pid), timeout=15, message="first run killed")
    eventually(lambda: not agent.alive(), timeout=15, message="the agent exited")
    done = finished(platform, task.task_id)
    assert (done.status, done.attempt, done.result) == (TaskStatus.SUCCESS, 2, "second\n")
    assert done.agent_id != agent.name
    handed_back = [
        h
        for h in platform.client.store.history(task.task_id)
        if h["state"] == "PENDING" and h.get("from") == "RUNNING"
    ]
    assert len(handed_back) == 1 and handed_back[0]["attempt"] == 2


def test_a_frozen_agent_kills_its_superseded_run_within_a_second_of_waking(platform, tmp_path):
    # Given a long task running on an agent
    pidfile = tmp_path / "pid"
    task, _ = platform.client.submit(
        {"taskType": "SHELL", "payload": f"echo $$ >> {pidfile}; sleep 60"}
    )
    first_pid = running_with_pid(platform, task.task_id, pidfile)
    agent = platform.agent_running(task.task_id)

    # When the agent freezes long enough for the platform to give the task to attempt 2
    agent.pause()
    try:
        eventually(
            lambda: (
                (t := platform.client.get(task.task_id)).attempt == 2
                and t.status == TaskStatus.RUNNING
            ),
            timeout=30,
            message="attempt 2 running elsewhere",
        )
        assert process_alive(first_pid)  # the old run went on while its agent was frozen
    finally:
        agent.resume()

    # Then the woken agent kills its superseded run within about a second
    eventually(lambda: not process_alive(first_pid), timeout=2.5, message="old run killed")
    assert "superseded by attempt 2" in eventually(
        lambda: "superseded" in agent.log_text() and agent.log_text(), timeout=5, message="logged"
    )
    # and attempt 2 is the one that runs on: cancel it to end the test quickly
    assert platform.client.get(task.task_id).attempt == 2
    platform.client.cancel(task.task_id)
