"""Stage 2 happy paths: one elected leader places tasks on registered agents."""

from __future__ import annotations

import subprocess
import time

from common import keys
from common.domain.transitions import TaskStatus
from common.testing.wait import eventually


def test_a_hand_pushed_message_runs_to_success_through_the_elected_scheduler(
    scheduler, agent, probe, redis_url
):
    # Given two schedulers (one leads) and one agent
    schedulers = [scheduler("sched-a"), scheduler("sched-b")]
    agent("agent-1")
    eventually(lambda: probe.live_agents() == ["agent-1"], 15, message="agent registered")
    eventually(probe.fence, 15, message="a leader raised the fence")

    # When a task is pushed by hand, exactly as in stage 1
    subprocess.run(
        [
            "redis-cli",
            "-u",
            redis_url,
            "LPUSH",
            "queue:pending",
            '{"taskType":"SHELL","payload":"echo hello"}',
        ],
        check=True,
        capture_output=True,
    )

    # Then it runs to SUCCESS, placed by the leader under its epoch
    def done():
        listed = probe.tasks.store.list_tasks()
        return listed and listed[0].status == TaskStatus.SUCCESS and listed[0]

    task = eventually(done, 15, message="hand-pushed task SUCCESS")
    assert task.result.strip() == "hello"
    assert task.agent_id == "agent-1"
    timeline = [(h["state"], h["epoch"]) for h in probe.history(task.task_id)]
    epoch = probe.fence()
    assert timeline == [
        ("PENDING", 0),
        ("SCHEDULED", epoch),
        ("DISPATCHED", epoch),
        ("RUNNING", epoch),
        ("SUCCESS", epoch),
    ]
    # and only one of the two schedulers ever led
    leaders = [s.name for s in schedulers if probe.log_lines(s, "became leader")]
    assert leaders == [probe.leader()], leaders


def test_an_agent_registers_an_ephemeral_node_with_its_data_and_current_load(agent, probe):
    # Given a registered agent
    proc = agent("agent-1", capacity=3)
    eventually(lambda: probe.live_agents() == ["agent-1"], 15, message="agent registered")
    data = probe.agent_data("agent-1")
    assert data["agentId"] == "agent-1"
    assert data["pid"] == proc.pid
    assert data["capacity"] == 3
    # The test profile registers example handlers (config/test.toml), so HANDLER is advertised.
    assert data["taskTypes"] == ["HANDLER", "PYTHON_SCRIPT", "SHELL"]
    assert data["load"] == 0
    assert data["host"] and data["startedAt"] > 0
    stat = probe.zk.exists("/live-agents/agent-1")
    assert stat.ephemeralOwner != 0

    # When SIGTERM stops it
    proc.stop()

    # Then its node is gone at once (a clean session close), not after a session timeout
    assert probe.live_agents() == []


def test_an_agent_reports_its_load_as_tasks_start_and_finish(scheduler, agent, probe):
    # Given a leader and an agent with two slots
    scheduler("sched-a")
    agent("agent-1", capacity=2)
    eventually(lambda: probe.live_agents() == ["agent-1"], 15, message="agent registered")

    # When two slow tasks run on it
    probe.submit_counted(2, extra="sleep 2")

    # Then its node reports load 2 while they run, and 0 after
    eventually(lambda: probe.agent_data("agent-1")["load"] == 2, 15, message="load 2")
    eventually(lambda: probe.agent_data("agent-1")["load"] == 0, 15, message="load back to 0")
    assert probe.runs() == {"t0": 1, "t1": 1}


def test_with_no_live_agent_a_task_stays_pending_and_runs_once_an_agent_registers(
    scheduler, agent, probe
):
    # Given a leader and no agent at all
    leader = scheduler("sched-a")
    eventually(probe.fence, 15, message="leader elected")
    (task_id,) = probe.submit_counted(1).values()

    # When nothing can take it for a while (a fact about an interval, so this waits it out)
    time.sleep(1.5)

    # Then it is still PENDING on its first attempt, and still in the queue: not spun around
    task = probe.tasks.get(task_id)
    assert (task.status, task.attempt) == (TaskStatus.PENDING, 1)
    assert probe.redis.llen(keys.PENDING_QUEUE) == 1
    assert probe.stats().get("accepted", 0) == 0

    # And when an agent registers, it runs
    agent("agent-1")
    eventually(lambda: probe.tasks.get(task_id).status == TaskStatus.SUCCESS, 15)
    assert probe.tasks.get(task_id).attempt == 1
    assert probe.log_lines(leader, "dispatched to agent-1")


# --8<-- [start:strategy-by-config]
def test_the_placement_strategy_is_chosen_by_configuration(scheduler, agent, probe):
    # Given a leader configured for round-robin, and two agents
    scheduler("sched-a", scheduler_strategy="round-robin")
    agent("agent-1", capacity=2)  # a slot beside the long task for the quick ones
    agent("agent-2", capacity=2)
    eventually(lambda: len(probe.live_agents()) == 2, 15, message="agents registered")

    # When one agent is busy with a long task and quick tasks arrive one after another (each
    # done before the next: least-load would send every one of them to the idle agent)
    (long_id,) = probe.submit_counted(1, prefix="long-", extra="sleep 30").values()
    eventually(lambda: probe.tasks.get(long_id).status.value == "RUNNING", 15)
    busy = probe.tasks.get(long_id).agent_id
    placed = []
    for i in range(4):
        (task_id,) = probe.submit_counted(1, prefix=f"rr{i}-").values()
        done = eventually(lambda t=task_id: probe.tasks.get(t).is_terminal, 15)
        assert done
        placed.append(probe.tasks.get(task_id).agent_id)

    # Then they take turns, the busy agent included: its turn comes whatever its load
    idle = ({"agent-1", "agent-2"} - {busy}).pop()
    assert placed == [idle, busy, idle, busy]
    probe.tasks.cancel(long_id)


# --8<-- [end:strategy-by-config]
