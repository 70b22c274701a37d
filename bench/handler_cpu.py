"""Where a HANDLER task's CPU goes: `python -m bench.handler_cpu [--n N] [--reps R]`.

Starts a throw-away Redis and, for each case in turn, one real stage 1 agent (capacity 1) as
`tasklab run agent` starts it; after a warm-up it submits N tasks and waits until the agent
has drained them. Reported per task: CPU of the agent process, of its pool (zygotes, warm
workers and every task process, reaped ones included) and of Redis. The cases, interleaved:
a no-op handler in a warm worker (`agent_handler_mode=warm`), the same forked per call
(`fork`), and a `PYTHON_SCRIPT` `pass` for reference. CPU time, not throughput: on a shared
machine it moves far less with the load than a rate does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import psutil

from bench.measure import scratch_service
from bench.systems import HANDLER_NOOP, TASKLAB_WORKLOADS

# (workload, agent_handler_mode, label); the script's mode is moot (it is always forked).
CASES = [
    ("handler-noop", "warm", "HANDLER no-op, warm worker"),
    ("handler-noop", "fork", "HANDLER no-op, fork per call"),
    ("noop", "warm", "PYTHON_SCRIPT pass"),
]
WARM_UP = 50


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _tree(root: psutil.Process) -> dict[int, float]:
    out = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            out[proc.pid] = _cpu(proc)
        except psutil.NoSuchProcess:
            pass  # a task process that ended meanwhile: its zygote's children times have it
    return out


def _redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _drain(client, redis, workload: str, n: int, agent_id: str) -> None:
    for _ in range(n):
        client.submit({**TASKLAB_WORKLOADS[workload], "taskName": "cpu"})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if redis.llen("queue:pending") == 0 and redis.llen(f"processing:{agent_id}") == 0:
            return
        time.sleep(0.02)
    raise TimeoutError(f"{n} {workload} tasks not drained in 600 s")


def measure(url: str, log_dir: Path, workload: str, mode: str, n: int) -> dict[str, float]:
    from common.adapters.redis_client import redis_client
    from common.adapters.redis_store import RedisTaskStore
    from common.client import TaskClient
    from common.devstack.roles import RoleProcess

    redis = redis_client(url)
    client = TaskClient(RedisTaskStore(redis))
    agent_id = f"cpu-{workload}-{mode}"
    env = {
        "TASKLAB_ENV": "local",
        "TASKLAB_REDIS_URL": url,
        "TASKLAB_AGENT_ID": agent_id,
        "TASKLAB_AGENT_CAPACITY": "1",
        "TASKLAB_LOG_FORMAT": "json",
        "TASKLAB_LOG_LEVEL": "INFO",
        "TASKLAB_AGENT_HANDLERS": json.dumps([HANDLER_NOOP]),
        "TASKLAB_AGENT_HANDLER_MODE": mode,
    }
    role = RoleProcess("agent", 1, env, log_dir, agent_id).start()
    try:
        _drain(client, redis, workload, WARM_UP, agent_id)
        root = psutil.Process(role.pid)
        before, redis_before = _tree(root), _redis_cpu(redis)
        _drain(client, redis, workload, n, agent_id)
        after, redis_after = _tree(root), _redis_cpu(redis)
    finally:
        role.stop()
    # A process started during the run (a replaced or recycled worker) counts from zero.
    agent = after.pop(role.pid) - before.pop(role.pid)
    pool = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return {
        "agent": agent / n * 1e3,
        "pool": pool / n * 1e3,
        "redis": (redis_after - redis_before) / n * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.handler_cpu")
    p.add_argument("--n", type=int, default=2000, help="tasks per case and repetition")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)

    from common.devstack.redis import RedisService

    results: dict[str, list[dict[str, float]]] = {label: [] for _, _, label in CASES}
    with scratch_service(RedisService()) as running:
        url = running.env["TASKLAB_REDIS_URL"]
        for rep in range(args.reps):
            for workload, mode, label in CASES:
                got = measure(url, Path(running.workdir), workload, mode, args.n)
                results[label].append(got)
                print(
                    f"   rep {rep} {label}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in got.items())
                    + " ms per task",
                    flush=True,
                )
    print("\n| case | agent ms | pool ms | agent + pool ms (spread) | Redis ms |")
    print("|---|---|---|---|---|")
    for label, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("agent", "pool", "redis")}
        totals = sorted(r["agent"] + r["pool"] for r in runs)
        print(
            f"| {label} | {med['agent']:.2f} | {med['pool']:.2f} | "
            f"{med['agent'] + med['pool']:.2f} ({totals[0]:.2f}–{totals[-1]:.2f}) | "
            f"{med['redis']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
