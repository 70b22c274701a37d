"""Per-operation costs the scaling model (docs/scaling.md) extrapolates from.

    python -m bench.scaling_probe [--n 20000]

Starts Redis and ZooKeeper natively (bench.run.Context, stopped by PID at the end) and
measures, one operation kind at a time, the server's CPU per operation (from `INFO cpu` for
Redis, from the ZooKeeper JVM's process times) and the client's, as JSON lines:

- zk-set: `setData` of an agent-sized node (a `/live-agents/{id}` payload, ~200 bytes), the
  write every load report of an agent is; pipelined (async, 256 in flight) from one client.
- zk-get: `getData` of the same node, the read every watch notification makes a view do.
- redis-llen-pipeline: the leader's backlog read before each placement, one LLEN per live
  agent in one pipeline, at 1000 agents; cost per agent per placement.

Each ZooKeeper kind runs twice and only the second pass is kept (the first warms the JVM).
CPU per operation is what the model uses: on a shared two-core machine, operations per
second say more about the neighbours than about the server.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.run import Context
from bench.scaling import cpu_of

NODE = json.dumps(
    {
        "agentId": "sim-001",
        "host": "worker-node-17.example",
        "pid": 123456,
        "capacity": 2,
        "taskTypes": ["PYTHON_SCRIPT", "SHELL"],
        "startedAt": 1764487000.123,
        "load": 1,
        "draining": False,
    },
    separators=(",", ":"),
).encode()


def probe_zk(hosts: str, zk_pid: int, n: int) -> list[dict]:
    from kazoo.client import KazooClient

    client = KazooClient(hosts=hosts)
    client.start(timeout=15)
    try:
        client.ensure_path("/probe")
        client.create("/probe/node", NODE)
        rows = []
        # The first pass warms the JVM's JIT (its compile work would be charged to the ops);
        # the second is measured.
        for kind in ("zk-set", "zk-get", "zk-set", "zk-get"):
            server0, client0, t0 = cpu_of(zk_pid), time.process_time(), time.time()
            inflight = []
            for _ in range(n):
                if kind == "zk-set":
                    inflight.append(client.set_async("/probe/node", NODE))
                else:
                    inflight.append(client.get_async("/probe/node"))
                if len(inflight) >= 256:
                    for r in inflight:
                        r.get(timeout=30)
                    inflight = []
            for r in inflight:
                r.get(timeout=30)
            wall = time.time() - t0
            rows = [r for r in rows if r["op"] != kind]
            rows.append(
                {
                    "op": kind,
                    "n": n,
                    "server_cpu_us_per_op": 1e6 * (cpu_of(zk_pid) - server0) / n,
                    "client_cpu_us_per_op": 1e6 * (time.process_time() - client0) / n,
                    "ops_per_s_here": n / wall,
                }
            )
        return rows
    finally:
        client.stop()
        client.close()


def probe_llen(ctx: Context, agents: int, placements: int) -> dict:
    from bench.measure import redis_counters

    redis = ctx.redis
    keys = [f"agent:sim-{i:04d}:tasks" for i in range(agents)]
    before, client0 = redis_counters(redis), time.process_time()
    for _ in range(placements):
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        pipe.execute()
    after = redis_counters(redis)
    ops = agents * placements
    return {
        "op": "redis-llen-pipeline",
        "agents": agents,
        "placements": placements,
        "server_cpu_us_per_agent": 1e6 * (after.cpu - before.cpu) / ops,
        "client_cpu_us_per_agent": 1e6 * (time.process_time() - client0) / ops,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling_probe", description=__doc__)
    p.add_argument("--n", type=int, default=20000, help="operations per ZooKeeper probe")
    args = p.parse_args(argv)
    ctx = Context(Path(tempfile.mkdtemp(prefix="scaling-probe-")))
    try:
        ctx.start()
        reason = ctx.ensure_services(2)
        if reason:
            raise SystemExit(f"error: {reason}")
        hosts = ctx.service_env(2)["TASKLAB_ZK_HOSTS"]
        zk_pid = next(s.pid for s in ctx.stack.load() if s.name == "zookeeper")
        for row in probe_zk(hosts, zk_pid, args.n):
            print(json.dumps(row), flush=True)
        print(json.dumps(probe_llen(ctx, 1000, 200)), flush=True)
    finally:
        ctx.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
