"""Measure what stage 3's dispatch routing costs as agents are added.

    .venv/bin/python -m stage3_kafka.measure_dispatch --agents 1 3 6 12 --tasks 300

Each agent reads the partition of task-dispatch-topic it announced in ZooKeeper, and the
scheduler produces an agent's dispatches there, so reads per task stay at 1 as agents are
added, up to the topic's partitions (see the stage 3 README, "Trade-offs"). For each agent
count this starts the real stage natively (one scheduler, one manager, N agents with two
slots each, its own topic namespace, ZooKeeper chroot and empty Redis), runs the same batch of
tasks, stops the agents cleanly (each publishes its final counters in a last heartbeat) and
prints one markdown table row: dispatch messages read in total and per task, how many an agent
started, the agents' CPU, and the time from DISPATCHED in Redis to the agent's RUNNING report.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kazoo.client import KazooClient

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.coordination.paths import LIVE_AGENTS
from common.devstack import DevStack
from common.messaging.clients import Bus
from common.messaging.schemas import Heartbeat, decode
from common.messaging.topics import DISPATCH, HEARTBEAT
from common.testing.processes import RoleProcess


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def final_heartbeats(bus: Bus, names: list[str], timeout: float = 30.0) -> dict[str, Heartbeat]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bus.bootstrap, "group.id": "measure"})
    topic = bus.topic(HEARTBEAT)
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    final: dict[str, Heartbeat] = {}
    deadline = time.monotonic() + timeout
    try:
        while set(final) != set(names) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            beat = decode(Heartbeat, msg.value())
            if beat.stopping:
                final[beat.agent_id] = beat
    finally:
        consumer.close()
    return final


def dispatch_messages(bus: Bus) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bus.bootstrap, "group.id": "measure"})
    topic = bus.topic(DISPATCH)
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        )
    finally:
        consumer.close()


def measure(env: dict[str, str], agents: int, tasks: int, workdir: Path) -> str:
    run = f"m{agents}-{uuid.uuid4().hex[:6]}"
    env = {**env, "TASKLAB_KAFKA_NAMESPACE": run, "TASKLAB_ZK_CHROOT": f"/{run}"}
    client = TaskClient(RedisTaskStore(redis_client(env["TASKLAB_REDIS_URL"])))
    client.store.client.flushdb()
    names = [f"agent-{n + 1}" for n in range(agents)]
    others = [
        RoleProcess(
            "scheduler", 3, {**env, "TASKLAB_SCHEDULER_ID": "scheduler-1"}, workdir, run + "-s"
        ),
        RoleProcess("manager", 3, {**env, "TASKLAB_MANAGER_ID": "manager-1"}, workdir, run + "-m"),
    ]
    fleet = [
        RoleProcess(
            "agent",
            3,
            {**env, "TASKLAB_AGENT_ID": n, "TASKLAB_AGENT_CAPACITY": "2"},
            workdir,
            f"{run}-{n}",
        )
        for n in names
    ]
    for proc in others + fleet:
        proc.start()
    zk = KazooClient(hosts=env["TASKLAB_ZK_HOSTS"])
    live = f"/{run}{LIVE_AGENTS}"
    try:
        zk.start(timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if zk.exists(live) and len(zk.get_children(live)) == agents:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"{agents} agents did not register within 60 s")
        cpu_before = sum(cpu_seconds(p.pid) for p in fleet)
        started = time.monotonic()
        ids = [
            client.submit({"taskType": "SHELL", "payload": "true"})[0].task_id for _ in range(tasks)
        ]
        deadline = time.monotonic() + 300
        while not all(client.get(t).is_terminal for t in ids):
            if time.monotonic() > deadline:
                raise SystemExit("tasks did not finish within 300 s")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        cpu = sum(cpu_seconds(p.pid) for p in fleet) - cpu_before
        latencies = []
        for task_id in ids:
            dispatched = next(
                float(h["at"]) for h in client.store.history(task_id) if h["state"] == "DISPATCHED"
            )
            started_at = float(client.store.client.hget(f"task:{task_id}", "startedAt") or 0)
            latencies.append((started_at - dispatched) * 1000)
    finally:
        zk.stop()
        zk.close()
        for proc in fleet:
            proc.stop()
        for proc in others:
            proc.stop()
    bus = Bus(env["TASKLAB_KAFKA_BOOTSTRAP"], run)
    total = dispatch_messages(bus)
    beats = final_heartbeats(bus, names)
    read = sum(b.dispatch_read for b in beats.values())
    mine = [b.dispatch_mine for b in beats.values()]
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    return (
        f"| {agents} | {tasks} | {total} | {read} | {read / tasks:.2f} | "
        f"{min(mine)}-{max(mine)} | {cpu / tasks * 1000:.1f} | "
        f"{statistics.median(latencies):.1f} / {p95:.1f} | {elapsed:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stage3_kafka.measure_dispatch")
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 2, 4, 6])
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tasklab-measure-"))
    stack = DevStack(workdir / "devstack")
    try:
        env: dict[str, str] = {"TASKLAB_ENV": "test", "TASKLAB_LOG_FORMAT": "text"}
        for svc in stack.up(3):
            env.update(svc.env)
        print(
            "| agents | tasks | dispatch messages | read by all agents | reads per task | "
            "started per agent | agent CPU ms per task | DISPATCHED -> RUNNING ms p50 / p95 | "
            "wall s |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for n in args.agents:
            print(measure(env, n, args.tasks, workdir), flush=True)
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
