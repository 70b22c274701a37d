"""Break it: kill -9 an agent and the manager while tasks stream output, and freeze an agent.

Redelivery must be harmless: every task ends with one terminal state, each line of its final
attempt once and in order, and the platform says in the timeline who gave the work back.
"""

from __future__ import annotations

import time

from common.domain.transitions import TaskStatus
from common.messaging.topics import LOGS
from common.testing import eventually

STREAMING = "for i in $(seq 1 {n}); do echo line $i; sleep {pause}; done"


def finished(probe, task_id: str, timeout: float = 30):
    return eventually(
        lambda: (t := probe.tasks.get(task_id)).is_terminal and t,
        timeout,
        message=f"task {task_id} finished",
    )


def test_kill_9_of_an_agent_mid_stream_reruns_its_task_elsewhere_and_the_log_stays_ordered(
    role, probe
):
    # Given two agents with one slot each, and a task streaming 30 lines over three seconds
    role("scheduler", "scheduler-1")
    role("manager", "manager-1")
    agents = {name: role("agent", name) for name in ("agent-1", "agent-2")}
    probe.wait_for_agents(*agents)
    task, _ = probe.tasks.submit(
        {"taskType": "SHELL", "payload": STREAMING.format(n=30, pause=0.1)}
    )
    expected = [f"line {i}" for i in range(1, 31)]

    # When the agent running it is killed -9 once five lines are stored
    eventually(lambda: len(probe.logs(task.task_id)) >= 5, 15, message="five lines stored")
    victim = probe.tasks.get(task.task_id).agent_id
    agents[victim].kill()
    killed_at = time.time()

    # Then the task runs again, as attempt 2, on the other agent, to SUCCESS
    done = finished(probe, task.task_id)
    assert (done.status, done.attempt) == (TaskStatus.SUCCESS, 2)
    assert done.agent_id != victim
    [lost] = [h for h in probe.history(task.task_id) if h["state"] == "PENDING" and h.get("from")]
    assert lost["reason"] == f"agent {victim} lost"
    # and its log is the dead attempt's lines, then the new attempt's, each run in order
    logs = probe.logs(task.task_id)
    partial = logs[: len(logs) - 30]
    assert logs[len(partial) :] == expected
    assert len(partial) >= 5 and partial == expected[: len(partial)]
    given_back = float(lost["at"]) - killed_at
    print(f"\n{victim} killed after {len(partial)} lines; given back {given_back:.1f}s later")
    print(f"by {lost['actor']}")


def test_an_agent_frozen_past_the_heartbeat_timeout_is_failed_over_before_zookeeper_notices(
    role, probe
):
    # Given two agents whose ZooKeeper sessions last ten seconds, and a task on one of them
    role("scheduler", "scheduler-1")
    role("manager", "manager-1")
    agents = {name: role("agent", name, zk_session_timeout=10) for name in ("agent-1", "agent-2")}
    probe.wait_for_agents(*agents)
    task, _ = probe.tasks.submit(
        {"taskType": "SHELL", "payload": "echo started; sleep 4; echo finished"}
    )
    eventually(lambda: probe.logs(task.task_id) == ["started"], 15, message="task started")
    victim = probe.tasks.get(task.task_id).agent_id

    # When that agent is frozen (SIGSTOP): its process, heartbeats and ZooKeeper pings stop
    agents[victim].pause()
    frozen_at = time.time()
    try:
        # Then the manager, hearing the other agent but not this one, gives the task back
        # within seconds, long before the ten-second session could expire
        lost = eventually(
            lambda: next(
                (
                    h
                    for h in probe.history(task.task_id)
                    if h["state"] == "PENDING" and h.get("from")
                ),
                None,
            ),
            15,
            message="task given back",
        )
        assert lost["actor"] == "manager:manager-1 (missed heartbeats)"
        took = float(lost["at"]) - frozen_at
        # 3 s of silence, or up to 6 s when the manager itself started moments ago (it gives
        # every agent two timeouts to be heard first); either way before the 10 s session.
        assert took < 10, took
        assert victim in probe.live_agents()
        # and attempt 2 runs to the end on the other agent
        done = finished(probe, task.task_id)
        assert (done.status, done.attempt, done.result) == (
            TaskStatus.SUCCESS,
            2,
            "started\nfinished\n",
        )
    finally:
        agents[victim].resume()

    # And when the frozen agent wakes up, it kills its now superseded run (or, if the run
    # ended while the agent was frozen, reports it), and the manager finds that report stale:
    # the task keeps the one result of attempt 2
    eventually(lambda: probe.event_stats()["status_stale"] >= 1, 10, message="stale report read")
    assert probe.tasks.get(task.task_id).attempt == 2
    assert [h["state"] for h in probe.history(task.task_id)].count("SUCCESS") == 1
    print(f"\nfrozen {victim} failed over by the manager after {took:.1f}s")


def test_kill_9_of_the_manager_mid_stream_then_a_restart_applies_everything_exactly_once(
    role, probe
):
    # Given two agents with four slots each, and 16 tasks streaming 30 lines each
    role("scheduler", "scheduler-1")
    manager = role("manager", "manager-1")
    for name in ("agent-1", "agent-2"):
        role("agent", name, agent_capacity=4)
    probe.wait_for_agents("agent-1", "agent-2")
    ids = [
        probe.tasks.submit({"taskType": "SHELL", "payload": STREAMING.format(n=30, pause=0.05)})[
            0
        ].task_id
        for _ in range(16)
    ]
    expected = [f"line {i}" for i in range(1, 31)]

    # When the manager is killed -9 once it applied 100 lines (some not yet committed),
    eventually(lambda: probe.event_stats()["log_appended"] >= 100, 30, message="100 lines in")
    manager.kill()
    at_kill = probe.event_stats()["log_appended"]
    # the agents go on publishing while no manager runs,
    eventually(lambda: probe.end_offsets(LOGS) >= at_kill + 100, 30, message="lines pile up")
    # and a new manager starts in the same group
    role("manager", "manager-1")

    # Then every task ends SUCCESS once, with each of its lines once, in order
    eventually(lambda: probe.all_succeeded(ids), 60, message="all 16 SUCCESS")
    for task_id in ids:
        assert probe.logs(task_id) == expected, task_id
        states = [h["state"] for h in probe.history(task_id)]
        assert (states.count("RUNNING"), states.count("SUCCESS")) == (1, 1), states
    stats = probe.event_stats()
    assert stats["log_appended"] == 16 * 30
    print(
        f"\nmanager killed after {at_kill} lines; redelivered and skipped: "
        f"{stats['log_duplicate']} line(s), {stats['status_duplicate']} status(es)"
    )
