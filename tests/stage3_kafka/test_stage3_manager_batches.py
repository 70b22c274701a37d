"""The manager applies the status events it reads together in shared round trips, and still
settles each one on its own: applied, dead-lettered, or held back with everything behind it on
its partition.

The events are published before the manager starts, on one partition, so that its first read
returns them all at once, in order.
"""

from __future__ import annotations

from common import keys
from common.domain.transitions import TaskStatus
from common.messaging import dead_letter
from common.messaging.schemas import LogLine, StatusEvent
from common.messaging.topics import DEAD_LETTER, LOGS, STATUS
from common.testing import eventually

MISSING = "00000000-0000-4000-8000-000000000000"


def test_events_read_together_are_applied_in_rounds_and_each_is_settled_on_its_own(role, probe):
    # Given a task only DISPATCHED to agent-x, and two RUNNING there
    d, epoch = probe.running_task("agent-x", status=TaskStatus.DISPATCHED)
    a, _ = probe.running_task("agent-x")
    b, _ = probe.running_task("agent-x")

    def status(task_id: str, value: str, **fields: object) -> bytes:
        return StatusEvent(
            task_id=task_id, attempt=1, epoch=epoch, agent_id="agent-x", status=value, **fields
        ).encode()

    # When these wait, in this order, on one partition of the status topic: D's RUNNING and
    # SUCCESS (one task twice), a poison, a SUCCESS for no task, A's SUCCESS whose one log
    # line has not arrived, and B's SUCCESS behind it
    for key, value in [
        (d, status(d, "RUNNING")),
        (d, status(d, "SUCCESS")),
        (d, b"{not json"),
        (MISSING, status(MISSING, "SUCCESS")),
        (a, status(a, "SUCCESS", log_lines=1)),
        (b, status(b, "SUCCESS")),
    ]:
        probe.produce(STATUS, key, value, partition=0)
    # and the manager starts (holding a final status back for its lines for up to a minute)
    role("manager", "manager-1", manager_log_wait=60)

    # Then D went RUNNING then SUCCESS: its SUCCESS was judged after its RUNNING was applied
    # (a new round), so no RUNNING had to be implied
    eventually(lambda: probe.tasks.get(d).status == TaskStatus.SUCCESS, 30, message="D done")
    assert [h["state"] for h in probe.history(d)][-2:] == ["RUNNING", "SUCCESS"]
    assert probe.event_stats()["status_running_implied"] == 0
    # and the poison and the SUCCESS of no task are dead-lettered, each with its reason
    letters = probe.read(DEAD_LETTER, lambda got: len(got) >= 2)
    errors = sorted(probe.headers(m)[dead_letter.ERROR] for m in letters)
    assert errors[0] == f"no task {MISSING}" and errors[1].startswith("not JSON"), errors
    # and A waits for its line, with B, behind it on the partition, still RUNNING
    assert probe.tasks.get(a).status == TaskStatus.RUNNING
    assert probe.tasks.get(b).status == TaskStatus.RUNNING

    # When A's line arrives
    probe.produce(LOGS, a, LogLine(task_id=a, attempt=1, seq=1, line="a").encode())

    # Then A finishes, then B, in partition order
    eventually(lambda: probe.tasks.get(b).status == TaskStatus.SUCCESS, 15, message="B done")
    assert probe.tasks.get(a).status == TaskStatus.SUCCESS and probe.logs(a) == ["a"]
    a_done = probe.history(a)[-1]["at"]
    b_done = probe.history(b)[-1]["at"]
    assert float(a_done) <= float(b_done)
    # and every ledger entry is gone, each event counted once
    assert probe.redis.llen(keys.processing("agent-x")) == 0
    stats = probe.event_stats()
    assert (stats["status_applied"], stats["status_duplicate"], stats["status_stale"]) == (4, 0, 0)


def test_events_of_different_tasks_read_together_share_one_round_of_round_trips(role, probe):
    # Given three tasks only DISPATCHED to agent-x
    tasks = [probe.running_task("agent-x", status=TaskStatus.DISPATCHED) for _ in range(3)]

    # When their RUNNING events, then their SUCCESS events, wait on one partition, and the
    # manager starts
    for value in ("RUNNING", "SUCCESS"):
        for task_id, epoch in tasks:
            event = StatusEvent(
                task_id=task_id, attempt=1, epoch=epoch, agent_id="agent-x", status=value
            )
            probe.produce(STATUS, task_id, event.encode(), partition=0)
    role("manager", "manager-1")

    # Then every task ran through RUNNING to SUCCESS, each event applied once
    for task_id, _ in tasks:
        eventually(
            lambda t=task_id: probe.tasks.get(t).status == TaskStatus.SUCCESS, 30, message="done"
        )
        assert [h["state"] for h in probe.history(task_id)][-2:] == ["RUNNING", "SUCCESS"]
    stats = probe.event_stats()
    assert stats["status_applied"] == 6 and stats["status_running_implied"] == 0
    # in two rounds (the three RUNNINGs, then the three SUCCESSes: a task seen again starts
    # the next), three if the first read returned the events in two pieces
    assert 2 <= stats["status_rounds"] <= 3, stats
