"""Break it: restart the broker in the middle of hundreds of tasks.

While the broker is away, producers keep what they cannot deliver and retry (idempotently, so
a retried batch is not written twice), consumers reconnect by themselves, the scheduler keeps
recording dispatches in Redis and its relay publishes again what waits too long, and the
manager fails nobody over: the whole bus is silent, not one agent.
"""

from __future__ import annotations

import time

import pytest

from common.domain.transitions import TERMINAL_STATES
from common.testing import eventually

# A Break-it fault test: it waits out a broker restart under 300 tasks, the longest single
# test of the suite (a minute or more), so `make test-fast` leaves it to `make test`.
pytestmark = pytest.mark.slow


def test_a_broker_restart_in_the_middle_of_300_tasks_loses_none_and_finishes_each_once(
    role, probe, kafka_service
):
    # Given the whole stage: two schedulers, three agents with four slots each, a manager
    role("scheduler", "scheduler-1")
    role("scheduler", "scheduler-2")
    role("manager", "manager-1")
    agents = ("agent-1", "agent-2", "agent-3")
    for name in agents:
        role("agent", name, agent_capacity=4)
    probe.wait_for_agents(*agents)

    # When 300 tasks are submitted and the broker restarts once 100 of them are done
    labels = probe.submit_counted(300, extra="sleep 0.02")
    ids = list(labels.values())
    started = time.monotonic()
    eventually(lambda: probe.statuses(ids)["SUCCESS"] >= 100, 60, message="100 tasks done first")
    before = probe.statuses(ids)["SUCCESS"]
    down = time.monotonic()
    kafka_service.restart()
    outage = time.monotonic() - down

    # Then all 300 succeed
    eventually(lambda: probe.all_succeeded(ids), 120, message="all 300 tasks SUCCESS")
    elapsed = time.monotonic() - started
    # none was lost, and each ran exactly once: no failover, no second run, one terminal state
    runs = probe.runs()
    assert set(runs) == set(labels), set(labels) - set(runs)
    assert all(len(agents_that_ran) == 1 for agents_that_ran in runs.values()), {
        label: ran for label, ran in runs.items() if len(ran) > 1
    }
    for task_id in ids:
        states = [h["state"] for h in probe.history(task_id)]
        assert sum(s in TERMINAL_STATES for s in states) == 1, states
        assert states.count("RUNNING") == 1 and states.count("PENDING") == 1, states
    stats = probe.event_stats()
    assert stats["agent_failovers"] == 0
    print(
        f"\n300 tasks in {elapsed:.1f}s; broker down {outage:.1f}s after {before} were done; "
        f"{probe.dispatches()} dispatch messages for 300 tasks; redelivered and skipped: "
        f"{stats['status_duplicate']} status(es), {stats['log_duplicate']} line(s)"
    )
