"""Break it: agents die (kill -9), hang past their session (SIGSTOP), and come back.

The leader learns an agent is gone only from ZooKeeper (its ephemeral node expires one session
timeout after its last heartbeat), and gives its DISPATCHED and RUNNING tasks back as a new
attempt. The attempt number is what keeps a late report from the old owner out.
"""

from __future__ import annotations

import time

from common import keys
from common.domain.transitions import TaskStatus
from common.testing.wait import eventually

SESSION = 3.0


def lost_transitions(history: list[dict]) -> list[dict]:
    return [h for h in history if h["state"] == "PENDING" and "lost" in h.get("reason", "")]


def on_agent(probe, task_ids, agent_id: str) -> dict[str, str]:
    """taskId -> status, for tasks placed on `agent_id` and not finished."""
    pipe = probe.redis.pipeline(transaction=False)
    for tid in task_ids:
        pipe.hmget(keys.task(tid), "status", "agentId")
    out = {}
    for tid, (status, owner) in zip(task_ids, pipe.execute(), strict=True):
        if owner and owner.decode() == agent_id and status.decode() in ("DISPATCHED", "RUNNING"):
            out[tid] = status.decode()
    return out


def test_kill_9_of_busy_agents_loses_no_task_and_reruns_only_the_tasks_in_flight(
    scheduler, agent, probe
):
    # Given two schedulers, three agents with four slots each, and 300 short tasks
    scheduler("sched-a")
    scheduler("sched-b")
    agents = {name: agent(name, capacity=4) for name in ("agent-1", "agent-2", "agent-3")}
    eventually(lambda: len(probe.live_agents()) == 3, 15, message="agents registered")
    labels = probe.submit_counted(300, extra="sleep 0.05")
    ids = list(labels.values())
    started = time.monotonic()

    # When two busy agents are killed -9 at different points of the run (a fresh agent
    # replaces the first, so the run keeps its capacity)
    killed: dict[str, tuple[float, dict[str, str]]] = {}
    for victim, after in (("agent-1", 60), ("agent-2", 180)):
        eventually(
            lambda after=after: probe.statuses(ids)[TaskStatus.SUCCESS] >= after,
            60,
            message=f"{after} tasks done",
        )
        eventually(lambda v=victim: on_agent(probe, ids, v), 10, message=f"{victim} is busy")
        agents[victim].kill()
        killed[victim] = (time.time(), on_agent(probe, ids, victim))
        if victim == "agent-1":
            agent("agent-4", capacity=4)

    # Then every task succeeds
    eventually(lambda: probe.all_succeeded(ids), 90, message="all 300 tasks SUCCESS")
    elapsed = time.monotonic() - started

    # and none was lost or ran twice, except the ones a killed agent was running
    runs = probe.runs()
    assert set(runs) == set(labels), set(labels) - set(runs)
    held_at_kill = {tid for _, held in killed.values() for tid in held}
    reruns, moved, failover_delays = 0, 0, []
    for label, tid in labels.items():
        history = probe.history(tid)
        lost = lost_transitions(history)
        claims = [h for h in history if h["state"] == "RUNNING"]
        # Every failover names a killed agent (the leader kept dispatching to a dead agent
        # until its session expired, so more tasks than it held at the kill may be moved).
        assert {h["reason"].split()[1] for h in lost} <= set(killed), (label, history)
        if tid in held_at_kill:
            assert lost, (label, history)
        in_flight = [h["from"] for h in lost].count("RUNNING")
        if in_flight:
            # in flight when its agent died: re-run exactly once per agent it was running on
            # when that agent died (both victims, if the second took it after the first's
            # failover), each time on a new attempt; a loss from DISPATCHED (placed on the
            # second victim before its session expired) never started, so it is not a run
            assert len(claims) == 1 + in_flight, (label, history)
            assert 1 <= runs[label] <= 1 + in_flight, (label, runs[label])
            reruns += in_flight
        else:
            # never started, or never touched by a failure: run exactly once
            assert len(claims) == 1 and runs[label] == 1, (label, runs[label], history)
            moved += bool(lost)
        assert probe.tasks.get(tid).attempt == 1 + len(lost)
        for entry in lost:
            agent_id = entry["reason"].split()[1]
            failover_delays.append(float(entry["at"]) - killed[agent_id][0])

    assert reruns >= 2  # each victim was running something when it died
    # Failover follows the session timeout, not a heartbeat of our own making
    assert all(SESSION - 1.0 <= d <= SESSION + 2.0 for d in failover_delays), failover_delays
    print(
        f"\nFIGURES kill-9 agents: tasks=300 kills=2 in_flight_reruns={reruns} "
        f"dispatched_but_unstarted_moved={moved} failover_s=min {min(failover_delays):.2f} "
        f"max {max(failover_delays):.2f} run_s={elapsed:.1f} "
        f"stale_rejections={probe.stats().get('rejected_stale_attempt', 0)}"
    )


# --8<-- [start:zombie]
def test_a_zombie_agents_late_report_is_rejected_and_the_reruns_result_stands(
    scheduler, agent, probe
):
    # Given a leader and one agent running a task that reports which agent ran it
    scheduler("sched-a")
    zombie = agent("agent-z")
    eventually(lambda: probe.live_agents() == ["agent-z"], 15, message="agent registered")
    task, _ = probe.tasks.submit(
        {"taskType": "SHELL", "payload": 'sleep 1.5; echo "ran on $TASKLAB_AGENT_ID"'}
    )
    eventually(lambda: probe.tasks.get(task.task_id).status == TaskStatus.RUNNING, 15)

    # When the agent is SIGSTOPped for longer than its session (its task's own process group
    # runs on and finishes), and a healthy agent is there to take over
    zombie.pause()
    paused_at = time.monotonic()
    agent("agent-b")
    eventually(
        lambda: probe.tasks.get(task.task_id).agent_id == "agent-b", 15, message="re-dispatched"
    )
    failover_after = time.monotonic() - paused_at
    eventually(lambda: probe.tasks.get(task.task_id).status == TaskStatus.SUCCESS, 15)
    zombie.resume()

    # Then the zombie's late write does not land. Woken, it races two ways, both safe: its run's
    # end reaches the report first, which the store rejects as stale and counts; or its watcher
    # reads the newer attempt first, and it drops the run as superseded without writing.
    def refused() -> str | None:
        if probe.stats().get("rejected_stale_attempt", 0) >= 1 and probe.log_lines(
            zombie, "report rejected as stale_attempt"
        ):
            return "rejected"
        if probe.log_lines(zombie, "task SUPERSEDED"):
            return "dropped as superseded"
        return None

    late_report = eventually(refused, 15, message="the zombie's late report refused or dropped")
    # and the re-run's result stands
    final = probe.tasks.get(task.task_id)
    assert (final.status, final.attempt, final.agent_id) == (TaskStatus.SUCCESS, 2, "agent-b")
    assert final.result.strip() == "ran on agent-b"
    assert [h["state"] for h in probe.history(task.task_id)][-1] == "SUCCESS"
    # and the zombie, once awake, noticed its session was lost and registered again
    eventually(lambda: "agent-z" in probe.live_agents(), 15, message="zombie re-registered")
    assert probe.log_lines(zombie, "session LOST")
    assert SESSION - 0.5 <= failover_after <= SESSION + 2.0, failover_after
    print(f"\nFIGURES zombie agent: failover_s={failover_after:.2f} late_report={late_report}")


# --8<-- [end:zombie]


def test_an_agent_restarted_under_the_same_id_does_not_resurrect_stale_work(
    scheduler, agent, probe
):
    # Given an agent with a running task and two more waiting in its inbox
    scheduler("sched-a")
    first = agent("agent-1")
    eventually(lambda: probe.live_agents() == ["agent-1"], 15, message="agent registered")
    labels = probe.submit_counted(3, extra="sleep 1")
    ids = list(labels.values())
    eventually(
        lambda: (
            sorted(on_agent(probe, ids, "agent-1").values())
            == ["DISPATCHED", "DISPATCHED", "RUNNING"]
        ),
        15,
        message="one running, two waiting on agent-1",
    )

    # When it is killed -9 and restarted at once under the same id
    first.kill()
    second = agent("agent-1")

    # Then every task runs to SUCCESS on a new attempt, none of them twice over
    eventually(lambda: probe.all_succeeded(ids), 30, message="all SUCCESS")
    for label, tid in labels.items():
        history = probe.history(tid)
        assert probe.tasks.get(tid).attempt == 2, history
        # given back exactly once (by the leader's failover or the agent's own start-up
        # recovery, whichever ran first), and the old attempt never claimed again
        assert len(lost_transitions(history)) == 1, history
        assert [h["attempt"] for h in history if h["state"] == "RUNNING"][-1] == 2
        assert probe.runs()[label] in (1, 2)
    assert sum(probe.runs().values()) <= 4  # at most the one in flight ran twice
    # The new incarnation never hid the old one's death: it found the old node and waited for
    # it to expire, or gave the old run's work back itself, or (on a loaded machine, where its
    # start-up outlasts the session timeout) came up after the leader had given it back.
    waited = probe.log_lines(second, "left by a previous run")
    reaped_by_leader = all(
        lost_transitions(probe.history(tid))[0]["actor"] != "agent-1" for tid in ids
    )
    assert waited or reaped_by_leader, [probe.history(tid) for tid in ids]
    assert probe.redis.llen(keys.agent_tasks("agent-1")) == 0
    assert probe.redis.llen(keys.processing("agent-1")) == 0
