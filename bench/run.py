"""tasklab side by side with Celery, in one run: `python -m bench [--quick]`.

One run starts its own Redis (and ZooKeeper / Kafka for the stages that need them) natively,
then runs every (system, workload) trial `--reps` times in one shuffled order, so that the
machine's drift over the run spreads evenly over the systems. Each trial starts the system's
worker side fresh on a flushed Redis and measures, in order:

1. drain: a backlog is enqueued before any worker runs; then the workers start. Time to first
   task (process start included) and the drain rate.
2. burst: the client enqueues N tasks as fast as it can; throughput = N / (last finish - first
   submit). CPU per task of the worker side and of the client, Redis commands and Redis CPU
   per task, memory of the worker side.
3. steady: N tasks at a fixed modest rate; submit->start and end-to-end latency percentiles.
4. (first repetition only) monitor: a small batch under Redis MONITOR, to count round trips
   per task (commands sent by clients) apart from the commands run inside Lua scripts.

Results are medians over the repetitions and, above all, ratios to Celery measured in the
same run. See docs/performance.md for how to read them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from redis import Redis

from bench import floors, report
from bench.measure import (
    INFO_COMMANDS,
    percentile,
    redis_counters,
    self_cpu_seconds,
    tree_cpu_seconds,
    tree_memory,
)
from bench.systems import (
    REPO,
    WORKLOADS,
    CelerySystem,
    FrontDoorSystem,
    System,
    TasklabSystem,
)


@dataclass(frozen=True)
class Mode:
    name: str
    reps: int
    drain_n: int
    burst_n: int
    steady_n: int
    steady_rate: float
    monitor_n: int
    spawn_floor_n: int
    redis_floor_n: int


MODES = {
    # A smoke run: every system, workload and phase once, small; figures too rough to publish.
    "quick": Mode("quick", 1, 50, 200, 40, 40.0, 20, 100, 1000),
    "full": Mode("full", 3, 500, 2000, 2000, 50.0, 200, 2000, 20000),
}


class Context:
    """The services of one benchmark run, shared by every system."""

    def __init__(self, workdir: Path) -> None:
        from common.devstack import DevStack

        self.workdir = workdir
        self.stack = DevStack(state_dir=workdir / "devstack")
        self._failed: dict[int, str] = {}
        self._started: set[int] = set()
        self.redis_url = ""
        self.redis: Redis | None = None

    def start(self) -> None:
        err = self.ensure_services(1)
        if err:
            raise SystemExit(f"error: cannot start Redis: {err}")
        self.redis_url = self.service_env(1)["TASKLAB_REDIS_URL"]
        self.redis = Redis.from_url(self.redis_url)

    def ensure_services(self, stage: int) -> str | None:
        from common.devstack import ServiceUnavailable

        if stage in self._failed:
            return self._failed[stage]
        if stage not in self._started:
            try:
                self.stack.up(stage)
                self._started.add(stage)
            except (ServiceUnavailable, ValueError, OSError) as exc:
                self._failed[stage] = f"services for stage {stage} did not start: {exc}"
                return self._failed[stage]
        return None

    def service_env(self, stage: int) -> dict[str, str]:
        from common.devstack import services_for_stage

        wanted = set(services_for_stage(stage))
        env: dict[str, str] = {}
        for svc in self.stack.load():
            if svc.name in wanted:
                env.update(svc.env)
        return env

    def service_pids(self) -> dict[str, int]:
        """The services other than Redis (whose CPU `INFO` reports), by name: a stage's
        broker and coordinator run on the same cores as the roles and count against them."""
        return {svc.name: svc.pid for svc in self.stack.load() if svc.name != "redis"}

    def flush(self) -> None:
        assert self.redis is not None
        self.redis.flushall()

    def stop(self) -> None:
        self.stack.down()


# -- one trial -------------------------------------------------------------------------------
def _submit_all(system: System, workload: str, n: int) -> list[str]:
    return system.submit_many(workload, n)


def _outcomes(records: dict) -> tuple[int, int, int]:
    lost = sum(1 for r in records.values() if r.end is None)
    failed = sum(1 for r in records.values() if r.end is not None and not r.ok)
    duplicated = sum(1 for r in records.values() if r.runs > 1)
    return lost, duplicated, failed


def _wait_timeout(n: int) -> float:
    return 60.0 + n * 0.05  # generous: a slow system is measured, not cut off


def run_trial(ctx: Context, system: System, workload: str, mode: Mode, log_dir: Path, rep: int):
    redis = ctx.redis
    assert redis is not None
    ctx.flush()
    out: dict = {"system": system.name, "workload": workload, "rep": rep}
    lost = duplicated = failed = 0
    try:
        # 1. drain: backlog first, then the workers (a front door, if any, is up already).
        system.prepare(log_dir)
        ids = _submit_all(system, workload, mode.drain_n)
        spawned = time.time()
        system.start(log_dir)
        system.wait_done(ids, _wait_timeout(mode.drain_n))
        recs = system.collect(ids)
        starts = [r.start for r in recs.values() if r.start is not None]
        ends = [r.end for r in recs.values() if r.end is not None]
        first = min(starts) if starts else float("nan")
        out["drain"] = {
            "n": mode.drain_n,
            "time_to_first_task_s": first - spawned,
            "tasks_per_s": len(ends) / (max(ends) - first) if len(ends) > 1 else float("nan"),
        }
        lost, duplicated, failed = _outcomes(recs)

        # 2. burst, on warm workers.
        pids = system.pids()
        services = {name: pid for name, pid in ctx.service_pids().items() if system.uses(name)}
        svc0 = {name: tree_cpu_seconds([pid]) for name, pid in services.items()}
        cpu0, red0 = tree_cpu_seconds(pids), redis_counters(redis)
        client0 = self_cpu_seconds()
        t0 = time.time()
        ids = _submit_all(system, workload, mode.burst_n)
        submitted = time.time()
        client_cpu = self_cpu_seconds() - client0
        harness_cmds = system.wait_done(ids, _wait_timeout(mode.burst_n))
        red1 = redis_counters(redis)
        cpu1 = tree_cpu_seconds(pids)
        svc1 = {name: tree_cpu_seconds([pid]) for name, pid in services.items()}
        memory = tree_memory(pids)
        recs = system.collect(ids)
        ends = [r.end for r in recs.values() if r.end is not None]
        n = mode.burst_n
        delta = red1.minus(red0)
        services_ms = {name: (svc1[name] - svc0[name]) / n * 1e3 for name in services}
        out["burst"] = {
            "n": n,
            "tasks_per_s": len(ends) / (max(ends) - t0) if ends else float("nan"),
            "submit_per_s": n / (submitted - t0),
            "worker_cpu_ms_per_task": (cpu1 - cpu0) / n * 1e3,
            "client_cpu_ms_per_task": client_cpu / n * 1e3,
            "redis_cmds_per_task": (delta.commands - INFO_COMMANDS - harness_cmds) / n,
            "redis_cpu_us_per_task": delta.cpu / n * 1e6,
            "services_cpu_ms_per_task": services_ms,
            "services_cpu_ms_total": sum(services_ms.values()),
        }
        # Everything the machine spent per task, client aside: the system's processes, Redis,
        # and the broker and coordinator it runs on. On two cores, throughput is its inverse.
        burst = out["burst"]
        burst["all_cpu_ms_per_task"] = (
            burst["worker_cpu_ms_per_task"]
            + burst["redis_cpu_us_per_task"] / 1e3
            + burst["services_cpu_ms_total"]
        )
        out["memory"] = {
            "pss_mb": memory.pss_mb,
            "rss_mb": memory.rss_mb,
            "processes": memory.processes,
        }
        lo, du, fa = _outcomes(recs)
        lost, duplicated, failed = lost + lo, duplicated + du, failed + fa

        # 3. steady rate.
        sent: dict[str, float] = {}
        t0 = time.monotonic()
        for i in range(mode.steady_n):
            delay = t0 + i / mode.steady_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            at = time.time()
            sent[system.submit(workload)] = at
        ids = list(sent)
        system.wait_done(ids, _wait_timeout(mode.steady_n))
        recs = system.collect(ids)
        start_ms = [(r.start - sent[t]) * 1e3 for t, r in recs.items() if r.start is not None]
        e2e_ms = [(r.end - sent[t]) * 1e3 for t, r in recs.items() if r.end is not None]
        out["steady"] = {
            "n": mode.steady_n,
            "rate": mode.steady_rate,
            "start_p50_ms": percentile(start_ms, 50),
            "start_p99_ms": percentile(start_ms, 99),
            "e2e_p50_ms": percentile(e2e_ms, 50),
            "e2e_p99_ms": percentile(e2e_ms, 99),
            "start_ms": [round(v, 3) for v in start_ms],
        }
        lo, du, fa = _outcomes(recs)
        lost, duplicated, failed = lost + lo, duplicated + du, failed + fa

        # 4. round trips, once per system and workload.
        if rep == 0 and mode.monitor_n:
            out["monitor"] = monitor_phase(ctx, system, workload, mode.monitor_n)
    finally:
        system.stop()
        system.close()
    out["lost"], out["duplicated"], out["failed"] = lost, duplicated, failed
    return out


def monitor_phase(ctx: Context, system: System, workload: str, n: int) -> dict:
    """Count, under MONITOR, the commands clients send per task and those Lua runs per task."""
    mon_client = Redis.from_url(ctx.redis_url)
    finished = threading.Event()
    counts: Counter[str] = Counter()
    by_command: Counter[str] = Counter()
    state = {"on": False, "terminal": 0}

    def watch() -> None:
        with mon_client.monitor() as m:
            ready.set()
            deadline = time.monotonic() + _wait_timeout(n)
            while time.monotonic() < deadline:
                cmd = m.next_command()
                text = cmd["command"]
                if text.startswith("ECHO bench-monitor-"):
                    state["on"] = text.endswith("start")
                    if not state["on"]:
                        return
                    continue
                if not state["on"]:
                    continue
                name = text.split(" ", 1)[0].upper()
                counts[cmd["client_type"]] += 1
                by_command[f"{cmd['client_type']}:{name}"] += 1
                # tasklab's history is the contract: a terminal entry means a finished task.
                if (
                    name == "RPUSH"
                    and ":history" in text
                    and ("SUCCESS" in text or "FAILED" in text)
                ):
                    state["terminal"] += 1
                    if state["terminal"] >= n:
                        finished.set()

    ready = threading.Event()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(10)
    ctx.redis.echo("bench-monitor-start")
    ids = _submit_all(system, workload, n)
    if system.family == "tasklab":
        finished.wait(_wait_timeout(n))
    else:
        system.wait_done(ids, _wait_timeout(n))
    ctx.redis.echo("bench-monitor-stop")
    thread.join(10)
    mon_client.close()
    tcp = sum(v for k, v in counts.items() if k != "lua")
    return {
        "n": n,
        "round_trips_per_task": tcp / n,
        "lua_cmds_per_task": counts["lua"] / n,
        "by_command_per_task": {k: v / n for k, v in by_command.most_common()},
    }


def floor_trial(ctx: Context, mode: Mode, parallel: int, rep: int) -> dict:
    assert ctx.redis is not None
    ctx.flush()
    return {
        "system": "floor",
        "rep": rep,
        "redis_list": floors.redis_list_floor(ctx.redis, mode.redis_floor_n),
        # A fresh interpreter costs ~30x a fork: fewer of them give the same precision.
        **{
            f"spawn_{kind}": floors.spawn_floor(
                kind, mode.spawn_floor_n // (10 if kind == "python" else 1), parallel
            )
            for kind in floors.KINDS
        },
    }


# A JVM compiles its hot paths during its first minutes under load: stage 3's broker measured
# 5.2, 3.6, 2.3, 2.2, 1.8, 1.5 ms of CPU per task over its first six trials, then 1.1-1.4 ms
# for good. Left in, that compiling lands on whichever trials the shuffle put first.
WARM_UP_TRIALS = 3


def warm_up_jvms(ctx: Context, systems: list[System], workload: str, mode: Mode, log_dir: Path):
    """Run unrecorded trials of the first system whose tasks pass through Kafka (else
    ZooKeeper), so that its services are warm, as a long-running broker is, when measuring
    begins."""
    for service in ("kafka", "zookeeper"):
        system = next((s for s in systems if s.uses(service)), None)
        if system is not None:
            break
    else:
        return
    warm = replace(mode, burst_n=max(mode.burst_n, 1000), steady_n=10, monitor_n=0)
    for i in range(WARM_UP_TRIALS):
        t = time.monotonic()
        try:
            run_trial(ctx, system, workload, warm, log_dir, rep=-1 - i)
        except Exception as exc:  # noqa: BLE001 - a failed warm-up is a slower first trial
            print(f"   warm-up {system.name}: FAILED: {exc}", flush=True)
            return
        print(
            f"   warm-up {i + 1}/{WARM_UP_TRIALS}: {system.name} {workload}, not recorded "
            f"({time.monotonic() - t:.1f}s)",
            flush=True,
        )


def baseline_checkout(ref: str, workdir: Path) -> Path:
    """A detached worktree of `ref`, for its roles to import their code from."""
    path = workdir / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), ref], check=True
    )
    if (path / "common" / "rpc" / "codegen.py").exists():
        # Its gRPC code is generated, not committed (`make setup` does it here): generate it
        # from its own .proto, as its setup would, so that its stage 4 roles can start.
        env = {**os.environ, "PYTHONPATH": str(path), "PYTHONSAFEPATH": "1"}
        subprocess.run([sys.executable, "-m", "common.rpc.codegen"], cwd=path, env=env, check=True)
    return path


def remove_checkout(path: Path) -> None:
    if path.exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False
        )


# -- the run ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke run (a minute or two)")
    p.add_argument("--reps", type=int, help="repetitions of every trial (full 3, quick 1)")
    p.add_argument(
        "--stages", default="", help="tasklab stages to include if installed (default: all)"
    )
    p.add_argument("--no-celery", action="store_true", help="tasklab only")
    p.add_argument(
        "--no-warm-up",
        action="store_true",
        help="measure from a cold broker (default: unrecorded trials warm the JVMs first)",
    )
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--agents", type=int, default=2, help="tasklab agents (default 2)")
    p.add_argument("--capacity", type=int, default=1, help="tasks per agent at once (default 1)")
    p.add_argument("--rate", type=float, help="steady-phase submissions per second")
    p.add_argument("--steady-n", type=int, help="steady-phase task count")
    p.add_argument("--burst-n", type=int, help="burst-phase task count")
    p.add_argument("--log-level", default="INFO", help="worker log level, both systems")
    p.add_argument("--seed", type=int, default=None, help="shuffle seed (default: random)")
    p.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the --stages given (stage 1 if none) as of this git commit: "
        "before/after in the same run",
    )
    p.add_argument(
        "--baseline-stages",
        default="",
        help="the stages --baseline runs, if not those of --stages (e.g. 3)",
    )
    p.add_argument(
        "--front-door-threads",
        type=int,
        default=8,
        help="client threads submitting a burst through stage 4's REST API (default 8)",
    )
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--plot", type=Path, help="also write the latency plot here")
    return p.parse_args(argv)


# What the harness itself needs beyond tasklab (the `bench` extra; `make bench` installs it).
# Celery is not here: a run without it reports Celery as missing and measures the rest.
BENCH_MODULES = ("psutil",)


def missing_bench_modules() -> list[str]:
    """The bench extra's modules that do not import: without them every trial would fail
    after starting its processes, so the run checks before the first one."""
    import importlib.util

    return [name for name in BENCH_MODULES if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_bench_modules()
    if missing:
        print(
            f"bench: missing {', '.join(missing)}; install the bench extra "
            "(`make bench-quick` does, or pip install -e '.[bench]')",
            file=sys.stderr,
        )
        return 2
    base = MODES["quick" if args.quick else "full"]
    mode = Mode(
        base.name,
        args.reps or base.reps,
        base.drain_n,
        args.burst_n or base.burst_n,
        args.steady_n or base.steady_n,
        args.rate or base.steady_rate,
        base.monitor_n,
        base.spawn_floor_n,
        base.redis_floor_n,
    )
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = REPO / ".tasklab" / "bench" / stamp
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    workloads = [w for w in args.workloads.split(",") if w]
    concurrency = args.agents * args.capacity

    # A SIGTERM (make interrupted, CI timeout) unwinds through the finally blocks below, so
    # every worker and service this run started is stopped by its PID.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ctx = Context(workdir)
    trials: list[dict] = []
    failed_trials: list[str] = []
    missing: dict[str, str] = {}
    started = time.time()
    try:
        ctx.start()
        from common.stages import installed_stages

        chosen = [int(s) for s in args.stages.split(",") if s]
        stages = chosen or installed_stages()

        def system_for(stage: int, **kw) -> System:
            if stage == 4:
                # The stage 4 path: every task through the REST API.
                return FrontDoorSystem(
                    ctx,
                    args.agents,
                    args.capacity,
                    args.log_level,
                    threads=args.front_door_threads,
                    **kw,
                )
            return TasklabSystem(stage, ctx, args.agents, args.capacity, args.log_level, **kw)

        systems: list[System] = [system_for(s) for s in stages]
        if args.baseline:
            source = baseline_checkout(args.baseline, workdir)
            again = [int(s) for s in args.baseline_stages.split(",") if s]
            for stage in again or chosen or [1]:
                systems.append(system_for(stage, source=source, label=f"@{args.baseline[:10]}"))
        if not args.no_celery:
            systems += [
                CelerySystem(False, ctx, concurrency, args.log_level),
                CelerySystem(True, ctx, concurrency, args.log_level),
            ]
        ready: list[System] = []
        for system in systems:
            reason = system.unavailable()
            if reason:
                missing[system.name] = reason
                print(f"-- {system.name}: missing ({reason})", flush=True)
            else:
                ready.append(system)
        if not args.no_warm_up:
            warm_up_jvms(ctx, ready, workloads[0], mode, log_dir)
        plan: list[tuple[int, System | None, str]] = [
            (rep, system, wl) for rep in range(mode.reps) for system in ready for wl in workloads
        ]
        plan += [(rep, None, "floor") for rep in range(mode.reps)]
        random.Random(seed).shuffle(plan)
        print(
            f"-- {mode.name} run: {len(plan)} trials, seed {seed}, "
            f"{args.agents} agents x capacity {args.capacity} vs Celery prefork "
            f"--concurrency {concurrency}; logs in {log_dir}",
            flush=True,
        )
        for i, (rep, system, wl) in enumerate(plan, 1):
            t = time.monotonic()
            if system is None:
                result = floor_trial(ctx, mode, concurrency, rep)
            else:
                try:
                    result = run_trial(ctx, system, wl, mode, log_dir, rep)
                except Exception as exc:  # noqa: BLE001 - one broken trial must not end the run
                    # Reported, never replaced by a figure: its system's row lacks this trial.
                    failed_trials.append(f"{system.name} {wl} rep {rep}: {exc}")
                    print(f"   [{i}/{len(plan)}] {system.name} {wl} rep {rep}: FAILED: {exc}")
                    continue
            trials.append(result)
            print(
                f"   [{i}/{len(plan)}] {result['system']} {wl} rep {rep}: "
                f"{report.one_line(result)} ({time.monotonic() - t:.1f}s)",
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted: stopping what this run started", file=sys.stderr)
        return 130
    finally:
        ctx.stop()
        if args.baseline:
            remove_checkout(workdir / "baseline")

    summary = report.summarize(trials, workloads)
    meta = {
        "mode": mode.__dict__,
        "seed": seed,
        "started": started,
        "seconds": time.time() - started,
        "agents": args.agents,
        "capacity": args.capacity,
        "celery_concurrency": concurrency,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "missing": missing,
        "failed_trials": failed_trials,
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
    }
    doc = {"meta": meta, "summary": summary, "trials": trials}
    out_json = args.out / f"bench-{mode.name}-{stamp}.json"
    out_json.write_text(json.dumps(doc, indent=1))
    (args.out / f"latest-{mode.name}.json").write_text(json.dumps(doc, indent=1))
    png = args.out / f"latency-{mode.name}-{stamp}.png"
    report.plot(trials, workloads, png)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        report.plot(trials, workloads, args.plot)
    print()
    print(report.table(summary, meta))
    print(f"\nJSON: {out_json}\nplot: {png}" + (f"\n      {args.plot}" if args.plot else ""))
    return 0
