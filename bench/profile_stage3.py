"""Profile the stage 3 roles under a burst: `python -m bench.profile_stage3 [noop|shell] [N]`.

Starts Redis, ZooKeeper and Kafka natively (as `python -m bench` does), runs the stage's own
topology (two schedulers, two agents x capacity 1, the manager) as real processes, warms them
up, then submits N tasks as fast as the client can while py-spy samples every role process by
its PID. Prints, per role:

- its CPU per task, split by thread: Python's threads apart from librdkafka's own (`rdk:*`),
  which no Python profiler sees;
- py-spy's hottest functions (self time, and inclusive time of tasklab's own functions),
  samples of the thread holding the GIL only (Python at work).

It needs py-spy (in the bench extra, which `make bench` installs; it reads other processes'
memory, so it runs as a user allowed to ptrace them). `--raw DIR` keeps py-spy's collapsed
stacks (one file per role) for a flame graph tool.

The latency of one task through the stage is shown by `--trace K`: K tasks submitted one at a
time on the idle stage, each hop's time taken from the task's history and the roles' logs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from bench.systems import TasklabSystem

REPO = Path(__file__).resolve().parents[1]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process and its children (librdkafka names its threads
    `rdk:main`, `rdk:broker1`, ...; Python's are all named after the process)."""
    import psutil

    out: Counter[str] = Counter()
    tick = os.sysconf("SC_CLK_TCK")
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    for proc in procs:
        task_dir = Path(f"/proc/{proc.pid}/task")
        try:
            tids = list(task_dir.iterdir())
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                comm = (tid / "comm").read_text().strip()
                fields = (tid / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            # utime and stime are fields 14 and 15 of stat; after the ")" they are 12 and 13.
            name = "librdkafka" if comm.startswith("rdk:") else "python"
            if proc.pid != pid:
                name = "task processes"
            out[name] += (int(fields[11]) + int(fields[12])) / tick
        if proc.pid == pid:
            # Reaped children (a task's own process once it exited).
            t = proc.cpu_times()
            out["task processes"] += t.children_user + t.children_system
    return dict(out)


def _parse_collapsed(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's raw output: `frame;frame;... count` per line, outermost first."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return own, inclusive, 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    return own, inclusive, total


def _short(frame: str) -> str:
    # "name (path/to/module.py:123)" -> "name (module.py)", lines merged.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(where).parts
    if "site-packages" in parts:
        where = "/".join(parts[parts.index("site-packages") + 1 :][:2])
    elif "common" in parts or "stage3_kafka" in parts:
        anchor = "common" if "common" in parts else "stage3_kafka"
        where = "/".join(parts[parts.index(anchor) :])
    else:
        where = Path(where).name
    return f"{name} ({where})"


def trace_hops(system: TasklabSystem, workload: str, k: int) -> None:
    """Submit K tasks one at a time on the idle stage; print each hop's p50 and p90 in ms.

    Every time comes from the task's own record: its history (each entry written by the role
    that made the transition, at its clock) and `startedAt` (the agent's clock as it began the
    task). One machine, one clock.
    """
    import json
    import statistics
    import threading

    from confluent_kafka import Consumer, TopicPartition

    from common.messaging.clients import Bus, consumer_config
    from common.messaging.topics import DISPATCH, STATUS

    # A reader of its own on the dispatch and status topics: when each message could first
    # be read, apart from when the agent or the manager acted on it.
    env = system.ctx.service_env(3)
    bus = Bus(env["TASKLAB_KAFKA_BOOTSTRAP"])
    seen: dict[tuple[str, str], float] = {}
    reader = Consumer(consumer_config(bus, f"trace-{time.time_ns()}", "trace"))
    parts = []
    for topic in (DISPATCH, STATUS):
        name = bus.topic(topic)
        meta = reader.list_topics(name, timeout=10).topics[name]
        for p in meta.partitions:
            _, high = reader.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            parts.append(TopicPartition(name, p, high))
    reader.assign(parts)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            msg = reader.poll(0.05)
            if msg is None or msg.error():
                continue
            try:
                body = json.loads(msg.value())
            except ValueError:
                continue  # not an event (a poisoned message a test left): nothing to time
            # One event per message, or a list of them.
            for event in body if isinstance(body, list) else [body]:
                if not isinstance(event, dict):
                    continue
                what = "dispatch" if msg.topic() == bus.topic(DISPATCH) else event.get("status")
                seen.setdefault((event.get("taskId"), what), time.time())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    time.sleep(1.0)
    hops: defaultdict[str, list[float]] = defaultdict(list)
    redis = system.ctx.redis
    for _ in range(k):
        tid = system.submit(workload)
        system.wait_done([tid], 30)
        at: dict[str, float] = {}
        for raw in redis.lrange(f"task:{tid}:history", 0, -1):
            entry = json.loads(raw)
            at.setdefault(entry["state"], float(entry["at"]))
        started = redis.hget(f"task:{tid}", "startedAt")
        if started is not None:
            at["agent began"] = float(started)
        time.sleep(0.05)  # the side reader has seen what it will see
        if (tid, "dispatch") in seen:
            at["dispatch readable"] = seen[(tid, "dispatch")]
        if (tid, "RUNNING") in seen:
            at["RUNNING readable"] = seen[(tid, "RUNNING")]
        order = [
            "PENDING",
            "SCHEDULED",
            "DISPATCHED",
            "dispatch readable",
            "agent began",
            "RUNNING readable",
            "RUNNING",
            "SUCCESS",
        ]
        stamped = [s for s in order if s in at]
        for a, b in zip(stamped, stamped[1:], strict=False):
            hops[f"{a} -> {b}"].append((at[b] - at[a]) * 1e3)
        if "RUNNING" in at:
            hops["submit -> RUNNING (the bench's start)"].append(
                (at["RUNNING"] - at["PENDING"]) * 1e3
            )
        time.sleep(0.05)  # idle between tasks: what a steady, modest rate sees
    stop.set()
    thread.join(5)
    reader.close()
    for name, values in hops.items():
        values.sort()
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"{name:42s} p50 {statistics.median(values):7.2f} ms   p90 {p90:7.2f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_stage3")
    p.add_argument("workload", choices=["noop", "shell"], nargs="?", default="noop")
    p.add_argument("n", type=int, nargs="?", default=1000)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks in this folder")
    p.add_argument("--stage", type=int, default=3)
    p.add_argument(
        "--trace", type=int, default=0, metavar="K", help="only trace K single tasks' hops"
    )
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(os.sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("error: py-spy is not installed (pip install py-spy)")

    from bench.run import Context

    workdir = Path(tempfile.mkdtemp(prefix="profile-stage3-"))
    raw_dir = args.raw or workdir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(workdir)
    system = TasklabSystem(args.stage, ctx, agents=2, capacity=1, log_level="INFO")
    spies: list[tuple[str, subprocess.Popen, Path]] = []
    try:
        ctx.start()
        reason = system.unavailable()
        if reason:
            raise SystemExit(f"error: {reason}")
        ctx.flush()
        (workdir / "logs").mkdir(exist_ok=True)
        system.start(workdir / "logs")
        warm = [system.submit(args.workload) for _ in range(50)]
        system.wait_done(warm, 120)
        if args.trace:
            trace_hops(system, args.workload, args.trace)
            return 0
        roles = {proc.name: proc.pid for proc in system.procs}
        before = {name: thread_cpu(pid) for name, pid in roles.items()}
        for name, pid in roles.items():
            out = raw_dir / f"{name}.txt"
            spy_proc = subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw"]
                # --gil: only the thread holding the GIL is sampled, i.e. Python running. A
                # thread waiting inside librdkafka or redis-py's socket read (GIL released)
                # would otherwise count as busy: py-spy cannot tell a C call that waits from
                # one that works.
                + ["--output", str(out), "--nonblocking", "--gil"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            spies.append((name, spy_proc, out))
        time.sleep(1.0)  # py-spy attached
        t0 = time.time()
        ids = [system.submit(args.workload) for _ in range(args.n)]
        system.wait_done(ids, 60 + args.n * 0.05)
        elapsed = time.time() - t0
        after = {name: thread_cpu(pid) for name, pid in roles.items()}
        for _, spy_proc, _ in spies:
            spy_proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for _, spy_proc, _ in spies:
            spy_proc.wait(30)
        recs = system.collect(ids)
        done = sum(1 for r in recs.values() if r.end is not None)
        print(
            f"{done}/{args.n} {args.workload} tasks in {elapsed:.2f}s: {done / elapsed:.0f}/s "
            f"(profiler attached to every role)\n"
        )
        total = 0.0
        for name in roles:
            cpu = {
                k: after[name].get(k, 0.0) - before[name].get(k, 0.0)
                for k in set(after[name]) | set(before[name])
            }
            role_total = sum(cpu.values())
            total += role_total
            split = ", ".join(f"{k} {v / args.n * 1e3:.2f}" for k, v in sorted(cpu.items()))
            print(f"== {name}: {role_total / args.n * 1e3:.2f} ms CPU per task ({split})")
            own, inclusive, samples = _parse_collapsed(raw_dir / f"{name}.txt")
            if not samples:
                print("   (no samples)")
                continue
            print(f"   self time ({samples} samples holding the GIL):")
            for frame, n in own.most_common(args.top):
                print(f"   {n / samples * 100:5.1f}%  {frame}")
            ours = Counter(
                {f: n for f, n in inclusive.items() if "common/" in f or "stage3_kafka/" in f}
            )
            print("   inclusive, tasklab's functions:")
            for frame, n in ours.most_common(args.top):
                print(f"   {n / samples * 100:5.1f}%  {frame}")
            print()
        print(f"all roles: {total / args.n * 1e3:.2f} ms CPU per task")
        by_kind: defaultdict[str, float] = defaultdict(float)
        for name in roles:
            for k in set(after[name]) | set(before[name]):
                by_kind[k] += after[name].get(k, 0.0) - before[name].get(k, 0.0)
        print(
            "   " + ", ".join(f"{k} {v / args.n * 1e3:.2f} ms" for k, v in sorted(by_kind.items()))
        )
        print(f"\nraw stacks: {raw_dir}\nrole logs: {workdir / 'logs'}")
    finally:
        for _, spy_proc, _ in spies:
            if spy_proc.poll() is None:
                spy_proc.kill()
                spy_proc.wait(5)
        system.stop()
        ctx.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
