"""What the harness reads around each phase: CPU of process trees, memory, Redis counters."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

# psutil (the `bench` extra) is imported where it is used, so the pure helpers below (and the
# report built on them) work without it.


def _tree(pids: list[int]) -> list:
    import psutil

    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs.append(root)
            procs.extend(root.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return procs


def tree_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of every process under `pids`, including children they have reaped.

    A task's own process (a shell, a forked Python child) counts once it has been reaped, in
    its parent's `children_*` times: the work a worker pays for a task is the work it caused.
    """
    import psutil

    total = 0.0
    for proc in _tree(pids):
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def self_cpu_seconds() -> float:
    # CLOCK_PROCESS_CPUTIME_ID: nanosecond resolution, where psutil's times tick in 10 ms.
    return time.process_time()


@dataclass
class Memory:
    pss_mb: float  # proportional set size: shared pages split between the processes sharing them
    rss_mb: float
    processes: int


def tree_memory(pids: list[int]) -> Memory:
    import psutil

    pss = rss = 0.0
    n = 0
    for proc in _tree(pids):
        try:
            full = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += full.pss
        rss += full.rss
        n += 1
    return Memory(pss / 2**20, rss / 2**20, n)


@dataclass
class RedisCounters:
    commands: int  # every command Redis executed, including those run inside Lua scripts
    cpu: float  # seconds of Redis server CPU (user + sys)

    def minus(self, other: RedisCounters) -> RedisCounters:
        return RedisCounters(self.commands - other.commands, self.cpu - other.cpu)


def redis_counters(client: Redis) -> RedisCounters:
    # INFO itself is counted by the next INFO: the caller subtracts the harness's own commands.
    stats = client.info("stats")
    cpu = client.info("cpu")
    return RedisCounters(
        int(stats["total_commands_processed"]),
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    )


INFO_COMMANDS = 2  # one redis_counters() call issues two INFO commands


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else float("nan")


@contextmanager
def scratch_service(service):
    """A devstack service (`RedisService()`, `KafkaService()`) started in a temporary directory
    for one measurement, stopped by its PID when the block ends, however it ends."""
    with tempfile.TemporaryDirectory() as tmp:
        running = service.start(Path(tmp))
        try:
            yield running
        finally:
            service.stop(running)
