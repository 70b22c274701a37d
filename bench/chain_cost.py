"""The agent's own cost per task on the chained-report path, without running any task.

    python -m bench.chain_cost --redis-url redis://127.0.0.1:6399/0 [--n 2000] [--agents 2]

Submits `--n` tasks, then `--agents` processes drain them the way a busy stage 1 agent does
(take one, then report each as succeeded with `RedisChainedReport.finish_and_take`, which
brings the next one back), with no executor: what is left is the Redis side of a task. Prints
one JSON line: tasks/s, agent CPU per task (user + system of the draining processes), commands
the agents sent per task, and Redis commands processed per task (scripts' inner commands
included). Before/after in one run: run it from two checkouts, interleaved, against the same
Redis, e.g. with `PYTHONPATH=<a worktree of the old commit>` for the old one. It flushes the
database it is given.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time

import redis


def _drain(url: str, agent_id: str, out) -> None:
    from common.adapters.redis_agent import (
        RedisChainedReport,
        RedisEventSink,
        RedisListIntake,
        ReliableClaim,
    )
    from common.adapters.redis_outcome import RedisOutcomeWriter
    from common.adapters.redis_queue import RedisWorkQueue
    from common.adapters.redis_store import RedisTaskStore
    from common.domain.backoff import ExponentialBackoff
    from common.domain.outcome import AttemptReport

    sent = [0]

    class Counting(redis.Redis):
        def execute_command(self, *args, **options):
            sent[0] += 1
            return super().execute_command(*args, **options)

    client = Counting.from_url(url)
    store = RedisTaskStore(client)
    queue = RedisWorkQueue(client, store)
    intake = RedisListIntake(queue, agent_id, ReliableClaim())
    writer = RedisOutcomeWriter(client, store, ExponentialBackoff(1.0, 2.0))
    chain = RedisChainedReport(intake, RedisEventSink(queue, writer, agent_id, 10))
    ok = AttemptReport(success=True, exit_code=0, result="ok")
    done = 0
    client.ping()  # connected before the clock starts
    start, cpu = time.time(), os.times()
    running = intake.take(0.2)
    while running is not None:
        nxt = chain.finish_and_take(running, ok, [])
        done += 1
        running = nxt if nxt is not None else intake.take(0.2)
    end = os.times()
    out.put(
        (done, (end.user - cpu.user) + (end.system - cpu.system), sent[0] - 1, start, time.time())
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.chain_cost")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--agents", type=int, default=2)
    args = p.parse_args()
    from common.adapters.redis_store import RedisTaskStore
    from common.client import TaskClient

    admin = redis.Redis.from_url(args.redis_url)
    admin.flushdb()
    tasks = TaskClient(RedisTaskStore(admin))
    for i in range(args.n):
        tasks.submit({"taskType": "SHELL", "payload": f"true {i}"})
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_drain, args=(args.redis_url, f"bench-{i}", out))
        for i in range(args.agents)
    ]
    before = int(admin.info("stats")["total_commands_processed"])
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    # From the first agent's first take to the last one's end: start-up (imports) excluded.
    wall = max(r[4] for r in results) - min(r[3] for r in results)
    for proc in procs:
        proc.join(60)
    # Minus the INFO calls and each agent's PING.
    processed = int(admin.info("stats")["total_commands_processed"]) - before - 1 - len(procs)
    done = sum(r[0] for r in results)
    print(
        json.dumps(
            {
                "tasks": done,
                "tasks_per_s": round(done / wall),
                "agent_cpu_us_per_task": round(1e6 * sum(r[1] for r in results) / done),
                "sent_per_task": round(sum(r[2] for r in results) / done, 2),
                "redis_commands_per_task": round(processed / done, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
