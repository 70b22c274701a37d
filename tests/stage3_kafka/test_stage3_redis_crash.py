"""Break it: kill -9 Redis in the middle of a hundred tasks, and start it again.

The manager commits a Kafka offset only once the effect behind it is durable in Redis (see
common/messaging/durability.py). If it committed earlier and Redis lost the effect, the event
would never be read again: a SUCCESS lost that way strands its task RUNNING for good. So after
the crash every task must still reach one final state, and a task may run twice only if its
history says why (a failover), never silently.

This test starts its own Redis (not the session's), with the devstack's configuration, so it
can kill it and bring it back on the same port with the same data directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from common import keys
from common.devstack.base import ServiceUnavailable, pid_alive
from common.devstack.redis import RedisService
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.messaging.durability import EVERYSEC_HORIZON
from common.messaging.schemas import Heartbeat, StatusEvent
from common.messaging.topics import HEARTBEAT, STATUS
from common.testing import eventually
from common.testing.pytest_plugin import unavailable

pytestmark = pytest.mark.slow

# The probe's own Kafka clients, silenced as in conftest.py.
QUIET = logging.getLogger("tests.stage3.kafka-probe")
QUIET.setLevel(logging.CRITICAL)


class CrashableRedis:
    def __init__(self, workdir: Path) -> None:
        self.service = RedisService()
        self.running = self.service.start(workdir)
        self.url = self.running.env["TASKLAB_REDIS_URL"]

    def copy_aof(self, to: Path) -> Path:
        """The AOF as it is now (what a host crash a moment later could leave on disk)."""
        return Path(shutil.copytree(Path(self.running.workdir) / "appendonlydir", to))

    def kill_and_restart(self, aof: Path | None = None) -> None:
        """kill -9 by PID, then the same port and data dir: what Redis had on disk comes back.
        With `aof`, it comes back with that older AOF instead: a host crash that lost the
        writes the kernel had not flushed yet."""
        running = self.running
        os.kill(running.pid, signal.SIGKILL)
        eventually(lambda: not pid_alive(running.pid), 10, message="redis-server dead")
        if aof is not None:
            shutil.rmtree(Path(running.workdir) / "appendonlydir")
            shutil.copytree(aof, Path(running.workdir) / "appendonlydir")
        self.running = self.service.start(Path(running.workdir).parent, port=running.port)

    def stop(self) -> None:
        self.service.stop(self.running)


@pytest.fixture
def crashable_redis(tmp_path):
    try:
        redis = CrashableRedis(tmp_path / "own-redis")
    except ServiceUnavailable as exc:
        unavailable(f"redis: {exc}")
    yield redis
    redis.stop()


@pytest.fixture
def start_role(crashable_redis, start_role):
    """The roles, stopped before this test's Redis is: with Redis gone first, the manager could
    not apply the agents' last reports, and each agent waited 10 s for them on its way out."""
    return start_role


@pytest.fixture
def redis_url(crashable_redis) -> str:
    """Every fixture of the stage (roles, probe, task client) uses this test's own Redis."""
    return crashable_redis.url


def test_kill_9_of_redis_under_100_tasks_strands_none_and_reruns_none_without_a_failover(
    role, probe, crashable_redis
):
    # Given the whole stage on a Redis of its own: a scheduler, a manager, three agents
    role("scheduler", "scheduler-1")
    manager = role("manager", "manager-1")
    agents = ("agent-1", "agent-2", "agent-3")
    for name in agents:
        role("agent", name, agent_capacity=4)
    probe.wait_for_agents(*agents)

    # When 100 tasks are submitted and Redis is killed -9 once 30 of them are done
    labels = probe.submit_counted(100, extra="sleep 0.1")
    ids = list(labels.values())
    eventually(lambda: probe.statuses(ids)["SUCCESS"] >= 30, 60, message="30 tasks done first")
    done_before = probe.statuses(ids)["SUCCESS"]
    crashable_redis.kill_and_restart()

    # Then every task reaches a final state (none left RUNNING or DISPATCHED), bounded
    def all_final() -> bool:
        counts = probe.statuses(ids)
        return sum(counts[s] for s in TERMINAL_STATES) == len(ids) and counts

    counts = eventually(all_final, 120, interval=0.5, message="all 100 tasks final")
    assert counts["SUCCESS"] == 100, counts
    # each with exactly one final state in its history
    runs = probe.runs()
    assert set(runs) == set(labels), set(labels) - set(runs)
    rerun = []
    for label, task_id in labels.items():
        history = probe.history(task_id)
        states = [h["state"] for h in history]
        assert sum(s in TERMINAL_STATES for s in states) == 1, states
        task = probe.tasks.get(task_id)
        # An attempt after the first exists only with the history saying who gave the task
        # back (a failover, or a recovery of what the scheduler held when Redis went away)
        given_back = [h for h in history if h["state"] == "PENDING" and h.get("from")]
        assert task.attempt == 1 + len(given_back), (label, runs[label], history)
        # and it ran at most once per attempt: never twice without a give-back in between
        assert len(runs[label]) <= task.attempt, (label, runs[label], history)
        if task.attempt > 1:
            rerun.append((label, len(runs[label]), [h.get("actor") for h in given_back]))
    # and the manager said at start-up what a Redis crash after a commit can cost
    assert "durability (fsync-everysec)" in manager.log_text()
    stats = probe.event_stats()
    print(
        f"\nRedis killed -9 after {done_before} done; given back (label, runs, by): {rerun}; "
        f"redelivered and skipped: {stats['status_duplicate']} status(es), "
        f"{stats['log_duplicate']} line(s)"
    )


def committed(probe, topic: str, partition: int) -> int:
    """The manager group's committed offset of one partition (negative: none yet)."""
    consumer = Consumer(
        {
            "bootstrap.servers": probe.bus.bootstrap,
            "group.id": probe.bus.group("tasklab-manager"),
            "enable.auto.commit": False,
            "logger": QUIET,
        }
    )
    try:
        [tp] = consumer.committed([TopicPartition(probe.bus.topic(topic), partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def test_the_manager_commits_an_offset_only_once_redis_has_had_time_to_fsync_its_effect(
    role, probe
):
    # Given a manager reading (on a Redis with appendfsync everysec and no WAITAOF), and a
    # task RUNNING on agent-x
    manager = role("manager", "manager-1")

    def reading() -> bool:
        beat = Heartbeat(agent_id="warm-up", load=0, capacity=1, seq=1)
        probe.produce(HEARTBEAT, "warm-up", beat.encode())
        return bool(probe.redis.exists(keys.heartbeat("warm-up")))

    eventually(reading, 30, interval=0.5, message="manager reading")
    task_id, epoch = probe.running_task("agent-x")

    # When its SUCCESS is published and applied
    done = StatusEvent(
        task_id=task_id, attempt=1, epoch=epoch, agent_id="agent-x", status="SUCCESS"
    )
    msg = probe.produce(STATUS, task_id, done.encode())
    eventually(lambda: probe.tasks.get(task_id).status == TaskStatus.SUCCESS, 10, message="applied")
    applied_at = time.monotonic()

    # Then the offset behind it is committed, but not before everysec's fsync had its
    # chance (the manager's horizon is 2 s; before it, a host crash could still lose it)
    eventually(
        lambda: committed(probe, STATUS, msg.partition()) == msg.offset() + 1,
        15,
        interval=0.2,
        message="offset committed",
    )
    gap = time.monotonic() - applied_at
    assert gap >= EVERYSEC_HORIZON - 0.5, gap
    assert "durability (fsync-everysec)" in manager.log_text()
    print(f"\nSUCCESS applied, offset committed {gap:.1f}s later")


def test_a_redis_back_without_a_status_the_manager_applied_gets_it_again_before_any_commit(
    role, probe, crashable_redis, tmp_path
):
    # Given a manager reading, and a task RUNNING on agent-x, on disk in Redis's AOF
    manager = role("manager", "manager-1")

    def reading() -> bool:
        beat = Heartbeat(agent_id="warm-up", load=0, capacity=1, seq=1)
        probe.produce(HEARTBEAT, "warm-up", beat.encode())
        return bool(probe.redis.exists(keys.heartbeat("warm-up")))

    eventually(reading, 30, interval=0.5, message="manager reading")
    task_id, epoch = probe.running_task("agent-x")
    before_success = crashable_redis.copy_aof(tmp_path / "aof-before-success")

    # When its SUCCESS is applied, and Redis then crashes and comes back without it (a host
    # crash that lost the last second of writes), before the manager commits the offset
    done = StatusEvent(
        task_id=task_id, attempt=1, epoch=epoch, agent_id="agent-x", status="SUCCESS"
    )
    msg = probe.produce(STATUS, task_id, done.encode())
    eventually(lambda: probe.tasks.get(task_id).status == TaskStatus.SUCCESS, 10, message="applied")
    crashable_redis.kill_and_restart(aof=before_success)
    assert probe.tasks.get(task_id).status == TaskStatus.RUNNING  # the loss, as simulated

    # Then the manager notices the new server, reads the status again and applies it again:
    # the task is not stranded RUNNING on an agent that finished it
    eventually(
        lambda: probe.tasks.get(task_id).status == TaskStatus.SUCCESS,
        20,
        interval=0.2,
        message="SUCCESS applied again",
    )
    assert "Redis restarted" in manager.log_text()
    eventually(
        lambda: committed(probe, STATUS, msg.partition()) == msg.offset() + 1,
        15,
        interval=0.2,
        message="offset committed once the effect is back",
    )
    assert probe.redis.llen(keys.processing("agent-x")) == 0
