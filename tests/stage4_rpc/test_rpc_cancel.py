"""Cancel through the TaskService really cancels, on a running stage 4 platform.

A task cancelled before it was placed never starts; a running one has its whole process group
killed on its agent within a second (the agent's watcher reads the cancel in Redis, the
executor kills the group); CANCELLED stays, whatever that attempt reports late; a finished
task cannot be cancelled.

This module starts its agents itself: the first test needs a platform with none.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Producer
from rpc_support import final_status, shell

from common import keys
from common.messaging.clients import Bus
from common.messaging.schemas import StatusEvent
from common.messaging.topics import STATUS
from common.rpc.errors import details_of
from common.rpc.gen import task_service_pb2 as pb
from common.testing import eventually, process_alive

PLATFORM_ROLES = (("scheduler", 1), ("manager", 1))
AGENT = "agent-1"
# The promise: a cancel reaches a running task's processes within a second (the agent's
# watcher polls every 200 ms, the executor checks every 250 ms, then SIGTERM to the group).
KILL_WITHIN = 1.0


@pytest.fixture(scope="module")
def providers(stage4, proxy) -> list[str]:
    addresses = [stage4.start_provider("rpc-1"), stage4.start_provider("rpc-2")]
    eventually(lambda: sorted(proxy.providers()) == sorted(addresses), 10, message="discovered")
    return addresses


@pytest.fixture(scope="module")
def agent(stage4, proxy, providers) -> str:
    """One agent, started on first use; ready once a task has run on it."""
    stage4.start("agent", AGENT)
    probe = proxy.submit(shell("echo ready")).task.task_id
    assert final_status(proxy, probe, timeout=60) == pb.SUCCESS
    return AGENT


def states(proxy, task_id: str) -> list[int]:
    return [e.state for e in proxy.get_task_info(task_id).timeline]


def live_in_group(pgid: int) -> list[int]:
    """PIDs of the processes of group `pgid` that are not zombies (a zombie runs nothing:
    it is dead, only its exit status is left for a parent to read)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry))
    return members


def test_a_task_cancelled_before_it_was_placed_never_starts(
    stage4, proxy, providers, request, tmp_path
):
    # Given a task submitted while no agent is running, whose command would leave a mark
    mark = tmp_path / "ran"
    task_id = proxy.submit(shell(f"touch {mark}")).task.task_id
    # When it is cancelled before any agent could take it
    answer = proxy.cancel(task_id)
    assert answer.status == pb.CANCELLED
    assert answer.cancelled_from in (pb.PENDING, pb.SCHEDULED)
    # And an agent starts only now, and runs other work (the fixture waits for that)
    request.getfixturevalue("agent")
    # Then the scheduler dropped it from its queues, and it never ran: no mark, never placed,
    # still CANCELLED
    redis = stage4.tasks.store.client

    def queued() -> list[bytes]:
        lists = (keys.PENDING_QUEUE, keys.SCHEDULING_QUEUE, keys.agent_tasks(AGENT))
        return [m for q in lists for m in redis.lrange(q, 0, -1) if task_id.encode() in m]

    eventually(lambda: not queued(), 20, message="the cancelled task left every queue")
    assert not mark.exists()
    timeline = states(proxy, task_id)
    assert pb.RUNNING not in timeline and pb.DISPATCHED not in timeline
    assert timeline[-1] == pb.CANCELLED
    assert proxy.get_task_info(task_id).task.status == pb.CANCELLED


def test_cancelling_a_running_task_kills_its_whole_process_group_within_a_second(
    stage4, proxy, agent
):
    redis = stage4.tasks.store.client

    def duplicates() -> int:
        # Final reports the manager read for an attempt that had already ended.
        return int(redis.hget(keys.EVENT_STATS, "status_duplicate") or 0)

    # Given a running shell task with a background child in its process group, which says
    # its PIDs (the task's shell leads the group: its PID is the group id)
    payload = 'sleep 30 & echo "child $!"; echo "shell $$"; sleep 30'
    task_id = proxy.submit(shell(payload)).task.task_id

    def pids() -> dict[str, int]:
        logs = "\n".join(proxy.get_task_info(task_id).logs)
        found = dict(re.findall(r"^(child|shell) (\d+)$", logs, re.M))
        assert set(found) == {"child", "shell"}, found
        return {k: int(v) for k, v in found.items()}

    pid = eventually(pids, 30, message="the task printed its PIDs")
    group = pid["shell"]
    assert process_alive(pid["child"]) and process_alive(pid["shell"])
    assert set(pid.values()) <= set(live_in_group(group)), "both in the task's group"
    assert proxy.get_task_info(task_id).task.status == pb.RUNNING
    reported = duplicates()
    # When it is cancelled through the TaskService
    asked = time.monotonic()
    answer = proxy.cancel(task_id)
    assert answer.status == pb.CANCELLED and answer.cancelled_from == pb.RUNNING
    # Then within a second nothing of its group runs any more, the background child included
    eventually(
        lambda: not live_in_group(group) and not any(process_alive(p) for p in pid.values()),
        KILL_WITHIN,
        interval=0.01,
        message="the task's process group killed",
    )
    print(f"\ncancel -> process group gone: {time.monotonic() - asked:.3f}s")
    # And the agent's own report of the killed attempt, once read, leaves it CANCELLED
    eventually(lambda: duplicates() > reported, 20, message="the agent's report read")
    assert proxy.get_task_info(task_id).task.status == pb.CANCELLED

    # When a late SUCCESS of that attempt arrives on the bus (as from an agent that missed
    # the cancel and let the command finish)
    task = proxy.get_task_info(task_id).task
    before = duplicates()
    late = StatusEvent(
        task_id=task_id,
        attempt=task.attempt,
        epoch=task.epoch,
        agent_id=agent,
        status="SUCCESS",
        exit_code=0,
        result="finished anyway\n",
    )
    bus = Bus(stage4.env["TASKLAB_KAFKA_BOOTSTRAP"], stage4.env["TASKLAB_KAFKA_NAMESPACE"])
    producer = Producer({"bootstrap.servers": bus.bootstrap, "enable.idempotence": True})
    try:
        producer.produce(bus.topic(STATUS), key=task_id, value=late.encode())
        assert producer.flush(10) == 0
    finally:
        producer.close()  # or it keeps reconnecting to the broker after the module stops it
    # Then the manager reads it as a report of an attempt that already ended: CANCELLED stays
    eventually(lambda: duplicates() > before, 20, message="the late SUCCESS read")
    info = proxy.get_task_info(task_id)
    assert info.task.status == pb.CANCELLED and info.task.result != "finished anyway\n"
    timeline = [e.state for e in info.timeline]
    assert timeline[-1] == pb.CANCELLED and pb.SUCCESS not in timeline


@pytest.mark.parametrize(("payload", "final"), [("true", pb.SUCCESS), ("exit 4", pb.FAILED)])
def test_cancelling_a_finished_task_is_a_failed_precondition(proxy, agent, payload, final):
    task_id = proxy.submit(shell(payload)).task.task_id
    assert final_status(proxy, task_id) == final
    with pytest.raises(grpc.RpcError) as err:
        proxy.cancel(task_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (failure,) = details_of(err.value)
    assert failure.violations[0].description == pb.TaskStatus.Name(final)
    assert proxy.get_task_info(task_id).task.status == final
