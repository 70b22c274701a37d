"""Client CPU per Redis command by reply parser: `python -m bench.redis_client_cpu [--n N]`.

Starts a throw-away Redis (the devstack's `RedisService`) and runs, in this one process, the
command shapes the roles send most, each through a client built by
`common.adapters.redis_client.new_redis_client` (the roles' options, a pool of its own):

- `hgetall`: `HGETALL` of a finished task's hash (written by the real store: 16 fields), as
  the manager reads a task for each status event and the API for each `GET`.
- `evalsha`: `EVALSHA` of a script answering the claim's shape, `{1, 'accepted', 'RUNNING', 1,
  HGETALL}`: a nested list, as `claim.lua` returns the claimed task to the agent.
- `pipeline`: the manager's read of a batch, 4 task hashes and a processing list in one
  5-command pipeline.
- `lpush+blmove`: a message onto a list and moved to a processing list (a stage 1 submit and
  take): 2 commands.
- `stage 1 task`: one task's whole Redis path in stage 1, through the real adapters as
  stage1_mvp/bootstrap.py wires them (as tests/stage1_mvp/test_chained_peek.py does): the
  client's submit, the agent's take and claim, its report. The CPU per task includes the
  adapters' own Python (JSON, the domain), so this row says what the parser is worth per task.

Each shape runs through three clients that differ only in how replies are parsed or commands
packed: `python` (redis-py's `_RESP3Parser`: the roles until hiredis was installed),
`hiredis` (hiredis parses replies, Python packs commands: the roles now), and `hiredis+C`
(hiredis packs commands too, redis-py's default with hiredis: not usable by the roles, whose
bad bytes it refuses; shown for what the packer still costs). Measured: this process's CPU
time (`time.process_time`, Redis's own CPU is in its process) per operation, after a warm-up.
Repetitions interleave the clients, their order rotated each time, so a change in the
machine's load touches each alike; the ratio is taken per repetition (same minute) and its
min-max over the repetitions stated as the noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from redis import Redis
from redis._parsers import _HiredisParser, _RESP3Parser
from redis.connection import HiredisRespSerializer

from bench.measure import scratch_service
from common import keys
from common.adapters.redis_agent import (
    RedisChainedReport,
    RedisEventSink,
    RedisListIntake,
    ReliableClaim,
)
from common.adapters.redis_client import new_redis_client
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_queue import RedisWorkQueue
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.domain.backoff import ExponentialBackoff
from common.domain.outcome import AttemptReport
from common.domain.transitions import TaskStatus

WARM_UP = 300
CLAIM_SHAPE = "return {1, 'accepted', 'RUNNING', 1, redis.call('HGETALL', KEYS[1])}"
MESSAGE = (
    '{"taskId": "6f1c2b1e-3f55-4c1a-9a53-0d7e3c0b2a11", "taskType": "SHELL", '
    '"payload": "echo hello", "attempt": 1, "epoch": 0}'
)


def clients(url: str) -> dict[str, Redis]:
    both_c = new_redis_client(url, parser_class=_HiredisParser)
    # Before the pool makes its first connection: every connection packs in C, as redis-py
    # does by default once hiredis is installed.
    both_c.connection_pool.connection_kwargs["command_packer"] = HiredisRespSerializer()
    return {
        "python": new_redis_client(url, parser_class=_RESP3Parser),
        "hiredis": new_redis_client(url, parser_class=_HiredisParser),
        "hiredis+C": both_c,
    }


def finished_tasks(client: Redis, n: int) -> list[str]:
    """`n` tasks taken to SUCCESS through the real store: hashes with every field a finished
    task has."""
    store = RedisTaskStore(client)
    tasks = TaskClient(store)
    ids = []
    for _ in range(n):
        task, _ = tasks.submit({"taskType": "SHELL", "payload": "echo hello"})
        store.transition(
            task.task_id,
            TaskStatus.RUNNING,
            attempt=1,
            actor="agent-1",
            fields={"agentId": "agent-1", "startedAt": repr(time.time())},
        )
        store.transition(
            task.task_id,
            TaskStatus.SUCCESS,
            attempt=1,
            actor="agent-1",
            fields={"exitCode": 0, "result": "hello\n", "finishedAt": repr(time.time())},
        )
        ids.append(task.task_id)
    return ids


class Stage1Task:
    """One task through stage 1's client and agent adapters, on the client it is called with."""

    AGENT = "bench-agent"
    OK = AttemptReport(success=True, exit_code=0, result="ok")

    def __init__(self) -> None:
        self.sides: dict[int, tuple[TaskClient, RedisListIntake, RedisChainedReport]] = {}

    def side(self, client: Redis) -> tuple[TaskClient, RedisListIntake, RedisChainedReport]:
        if id(client) not in self.sides:
            store = RedisTaskStore(client)
            queue = RedisWorkQueue(client, store)
            intake = RedisListIntake(queue, self.AGENT, ReliableClaim())
            writer = RedisOutcomeWriter(client, store, ExponentialBackoff(1.0, 2.0))
            chain = RedisChainedReport(intake, RedisEventSink(queue, writer, self.AGENT, 10))
            self.sides[id(client)] = (TaskClient(store), intake, chain)
        return self.sides[id(client)]

    def __call__(self, client: Redis) -> object:
        tasks, intake, chain = self.side(client)
        tasks.submit({"taskType": "SHELL", "payload": "true"})
        taken = intake.take(1.0)
        assert taken is not None, "the task just submitted was not taken"
        nothing = chain.finish_and_take(taken, self.OK, [])
        assert nothing is None, "a task was left on queue:pending"
        return None


def workloads(setup: Redis) -> dict[str, tuple[int, Callable[[Redis], object]]]:
    """name -> (commands per operation, one operation on a client)."""
    ids = finished_tasks(setup, 4)
    setup.delete(keys.PENDING_QUEUE)  # their messages, which the stage 1 path would take first
    task_keys = [keys.task(t) for t in ids]
    sha = setup.script_load(CLAIM_SHAPE)
    setup.rpush(keys.processing("agent-1"), MESSAGE, MESSAGE)
    # The shapes read what they expect, or the comparison would be of two different replies.
    assert len(setup.hgetall(task_keys[0])) >= 15, setup.hgetall(task_keys[0])

    def hgetall(c: Redis) -> object:
        return c.hgetall(task_keys[0])

    def evalsha(c: Redis) -> object:
        return c.evalsha(sha, 1, task_keys[0])

    def pipeline(c: Redis) -> object:
        pipe = c.pipeline(transaction=False)
        for key in task_keys:
            pipe.hgetall(key)
        pipe.lrange(keys.processing("agent-1"), 0, -1)
        return pipe.execute()

    def lpush_blmove(c: Redis) -> object:
        c.lpush("bench:queue", MESSAGE)
        return c.blmove("bench:queue", "bench:processing", 1, "RIGHT", "LEFT")

    return {
        "hgetall": (1, hgetall),
        "evalsha": (1, evalsha),
        "pipeline": (5, pipeline),
        "lpush+blmove": (2, lpush_blmove),
        # submit, BLMOVE, claim, report (counted with redis-py's commands in a test run)
        "stage 1 task": (4, Stage1Task()),
    }


def measure(client: Redis, op: Callable[[Redis], object], n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per operation, over `n` operations."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        op(client)
    return (
        (time.process_time() - cpu0) / n * 1e6,
        (time.perf_counter() - wall0) / n * 1e6,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.redis_client_cpu")
    p.add_argument("--n", type=int, default=500, help="operations per measurement")
    # Many short repetitions: the two halves of a ratio are seconds apart, not minutes.
    p.add_argument("--reps", type=int, default=25)
    args = p.parse_args(argv)

    from common.devstack.redis import RedisService

    with scratch_service(RedisService()) as running:
        url = running.env["TASKLAB_REDIS_URL"]
        by_label = clients(url)
        shapes = workloads(by_label["python"])
        # Each client gives the same answer to each shape: the parsers are interchangeable.
        for name, (_, op) in shapes.items():
            if name not in ("lpush+blmove", "stage 1 task"):
                answers = [op(c) for c in by_label.values()]
                assert all(a == answers[0] for a in answers), (name, answers)
        for client in by_label.values():
            for _, op in shapes.values():
                measure(client, op, WARM_UP)
        print(f"load average at start: {os.getloadavg()}", flush=True)
        cpu: dict[tuple[str, str], list[float]] = {}
        wall: dict[tuple[str, str], list[float]] = {}
        labels = list(by_label)
        for rep in range(args.reps):
            order = labels[rep % len(labels) :] + labels[: rep % len(labels)]
            for name, (_, op) in shapes.items():
                for label in order:
                    c, w = measure(by_label[label], op, args.n)
                    cpu.setdefault((name, label), []).append(c)
                    wall.setdefault((name, label), []).append(w)
            by_label["python"].delete("bench:processing")
        print(f"load average at end:   {os.getloadavg()}")
    report(shapes, labels, cpu, wall, args)
    return 0


def report(shapes, labels, cpu, wall, args) -> None:
    print(
        f"\nclient CPU per operation, µs: median (min-max) of {args.reps} repetitions of "
        f"{args.n} operations; ratio = hiredis / python per repetition"
    )
    print(
        "| shape | commands | python | hiredis | hiredis / python | hiredis+C | "
        "saved per command, µs | wall python / hiredis |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, (commands, _) in shapes.items():
        cells = []
        for label in labels:
            runs = cpu[(name, label)]
            cells.append(f"{statistics.median(runs):.1f} ({min(runs):.1f}–{max(runs):.1f})")
        ratios = [
            h / py for h, py in zip(cpu[(name, "hiredis")], cpu[(name, "python")], strict=True)
        ]
        # Paired, as the ratio: two medians taken apart would mix different minutes.
        saved = sorted(
            (py - h) / commands
            for py, h in zip(cpu[(name, "python")], cpu[(name, "hiredis")], strict=True)
        )
        print(
            f"| {name} | {commands} | {cells[0]} | {cells[1]} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | "
            f"{cells[2]} | {statistics.median(saved):.1f} ({saved[0]:.1f}–{saved[-1]:.1f}) | "
            f"{statistics.median(wall[(name, 'python')]):.0f} / "
            f"{statistics.median(wall[(name, 'hiredis')]):.0f} µs |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
