"""Break it: restart ZooKeeper itself while tasks flow.

Every client sees SUSPENDED: agents stop taking new work and the leader stops placing, because
none of them can tell whether its session will survive. ZooKeeper reloads its sessions from the
transaction log, so a restart shorter than the session timeout ends in CONNECTED on the same
sessions; a longer one expires them, and agents re-register and a leader is elected again.
Either way no task is lost and none runs twice.
"""

from __future__ import annotations

import time

from common.domain.transitions import TaskStatus
from common.testing.wait import eventually


def test_a_zookeeper_restart_pauses_placement_and_every_task_still_runs_exactly_once(
    scheduler, agent, probe, zookeeper_service
):
    # Given two schedulers, two agents and a stream of tasks
    scheduler("sched-a")
    scheduler("sched-b")
    agents = [agent("agent-1", capacity=2), agent("agent-2", capacity=2)]
    eventually(lambda: len(probe.live_agents()) == 2, 15, message="agents registered")
    eventually(probe.fence, 15, message="leader elected")
    before = probe.submit_counted(60, prefix="b", extra="sleep 0.05")
    eventually(lambda: probe.statuses(before.values())[TaskStatus.SUCCESS] >= 10, 30)

    # When ZooKeeper restarts on the same port, and more tasks arrive while it is down
    restart_started = time.monotonic()
    zookeeper_service.restart()
    restart_took = time.monotonic() - restart_started
    during = probe.submit_counted(40, prefix="d", extra="sleep 0.05")

    # Then both agents are registered again, and every task succeeds exactly once
    eventually(lambda: probe.live_agents() == ["agent-1", "agent-2"], 20, message="agents back")
    ids = list(before.values()) + list(during.values())
    eventually(lambda: probe.all_succeeded(ids), 60, message="all 100 SUCCESS")
    runs = probe.runs()
    assert len(runs) == 100 and all(n == 1 for n in runs.values()), runs
    # and the agents did see the outage (they paused rather than carrying on blind)
    assert all(probe.log_lines(a, "SUSPENDED") for a in agents)
    print(f"\nFIGURES zookeeper restart: tasks=100 restart_s={restart_took:.2f} reruns=0")
