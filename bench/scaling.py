"""Many agents, one leader: the scheduler's decisions per second and its placements' quality.

    python -m bench.scaling [--quick] [--agents 50] [--strategies least-load,random,...]
    make bench-scaling          # make bench-scaling BENCH_ARGS=--quick for a smoke run

One run starts Redis and ZooKeeper natively (bench.run.Context: free loopback ports, stopped
by PID at the end), then, once per placement strategy of common/scheduling/strategies.py, in
a shuffled order:

1. Stage 2's schedulers as a user runs them (bench.systems.TasklabSystem with no agents: two
   `tasklab run scheduler --stage 2` processes, one elected), in a fresh ZooKeeper chroot on a
   flushed Redis, with `TASKLAB_SCHEDULER_STRATEGY` set to the strategy.
2. The join: `--agents` light stage 2 agents (bench.scaling_agents: the real agent and
   registry, an executor that sleeps instead of spawning) start at once. Measured: the time
   until a view of /live-agents (the scheduler's own LiveAgentsView class, in this process)
   holds them all, how long after its node was created each agent appeared in it, and what
   ZooKeeper did for the join (`mntr`: watches fired, requests, per join).
3. Idle: a few seconds with nothing to do, to learn the background rates (agents polling
   their inboxes and heartbeating), subtracted from what the replay costs.
4. The replay: the recorded workload (bench/workloads/mixed.json), each task submitted at its
   recorded time as `sleep <its duration>`, open loop. Measured from the tasks' histories:
   placements per second of the leader's CPU and per wall second, queueing delay, how evenly
   the tasks sat on the agents, the deepest inbox, lost and duplicated; and Redis commands,
   Redis CPU and ZooKeeper writes and watch notifications per task.

The scheduler is driven only through its command line and its configuration, so the same
harness measures whatever the scheduler becomes. docs/scaling.md reads the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.measure import redis_counters, tree_cpu_seconds
from bench.run import Context
from bench.scaling_metrics import summarize, timeline
from bench.scaling_workload import DEFAULT_FILE, Workload, load
from bench.systems import REPO, TasklabSystem
from common import keys


@dataclass(frozen=True)
class Mode:
    name: str
    agents: int
    seconds: float  # how much of the workload is replayed
    reps: int


MODES = {
    "quick": Mode("quick", 10, 8.0, 1),
    "full": Mode("full", 50, math.inf, 1),
}
IDLE_SECONDS = 3.0
# ZooKeeper's `mntr` counters a join and a replay are charged with. The watch counters are
# summaries of "how many watchers one event fired": their zk_sum_ is the notifications sent.
WATCH_KINDS = ("created", "children", "changed", "deleted")


# -- what the services say ---------------------------------------------------------------------
def zk_mntr(hosts: str) -> dict[str, float]:
    from common.devstack.zookeeper import four_letter_word

    host, port = hosts.split(",")[0].rsplit(":", 1)
    out: dict[str, float] = {}
    for line in four_letter_word(host, int(port), "mntr", timeout=2.0).splitlines():
        name, _, value = line.partition("\t")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def zk_delta(after: dict[str, float], before: dict[str, float], chroot: str) -> dict[str, float]:
    """What ZooKeeper did between two `mntr` readings: requests, and for the run's chroot (a
    namespace of its own, the first component of the path) reads and writes and their bytes,
    and the watch notifications it sent."""
    ns = chroot.strip("/").split("/")[0]

    def d(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    out = {
        "requests": d("zk_packets_received"),
        "reads": d(f"zk_cnt_{ns}_read_per_namespace"),
        "writes": d(f"zk_cnt_{ns}_write_per_namespace"),
        "bytes_read": d(f"zk_sum_{ns}_read_per_namespace"),
        "bytes_written": d(f"zk_sum_{ns}_write_per_namespace"),
        **{f"watches_{k}": d(f"zk_sum_node_{k}_watch_count") for k in WATCH_KINDS},
    }
    out["watches_fired"] = sum(out[f"watches_{k}"] for k in WATCH_KINDS)
    return out


def cpu_of(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@dataclass
class Snapshot:
    at: float
    redis_commands: int
    redis_cpu: float
    leader_cpu: float
    standby_cpu: float
    agents_cpu: float
    zk_cpu: float
    zk: dict[str, float]


class Trial:
    """One strategy's run: schedulers, agents, the join, the idle, the replay."""

    def __init__(self, ctx: Context, strategy: str, agents: int, capacity: int, args) -> None:
        self.ctx = ctx
        self.strategy = strategy
        self.n_agents = agents
        self.capacity = capacity
        self.args = args
        self.system = TasklabSystem(2, ctx, 0, capacity, args.log_level)
        self.agents_proc: subprocess.Popen | None = None
        self.view_client = None
        self.leader_pid = 0
        self.standby_pids: list[int] = []
        self.zk_pid = next(s.pid for s in ctx.stack.load() if s.name == "zookeeper")
        self.env: dict[str, str] = {}

    # -- processes ------------------------------------------------------------------------
    def start_schedulers(self, log_dir: Path) -> None:
        # The strategy reaches the scheduler as a user would set it: its environment.
        os.environ["TASKLAB_SCHEDULER_STRATEGY"] = self.strategy
        self.system.start(log_dir)
        self.env = dict(self.system.procs[0].env)
        for name in ("TASKLAB_AGENT_ID", "TASKLAB_PROCESS_NAME"):
            self.env.pop(name, None)

    def start_agents(self, log_dir: Path) -> None:
        self._agents_log = open(log_dir / "agents.log", "ab")  # noqa: SIM115 - closed in stop()
        self.agents_proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scaling_agents", "--count", str(self.n_agents)],
            cwd=REPO,
            env=self.env,
            stdout=self._agents_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.agents_proc is not None:
            if self.agents_proc.poll() is None:
                self.agents_proc.send_signal(signal.SIGTERM)  # the parent stops its children
                try:
                    self.agents_proc.wait(60)
                except subprocess.TimeoutExpired:
                    # Only the group this run started: the parent and the agents it forked.
                    os.killpg(self.agents_proc.pid, signal.SIGKILL)
                    self.agents_proc.wait(10)
            self._agents_log.close()
            self.agents_proc = None
        self.system.stop()
        self.system.close()
        if self.view_client is not None:
            self.view_client.close()
            self.view_client = None

    # -- ZooKeeper ------------------------------------------------------------------------
    def open_view(self):
        from common.coordination.live_agents import LiveAgentsView
        from common.coordination.zk import zk_client

        self.view_client = zk_client(self.env["TASKLAB_ZK_HOSTS"], self.env["TASKLAB_ZK_CHROOT"])
        view = LiveAgentsView(self.view_client)
        view.start()
        return view

    def wait_for_leader(self, timeout: float = 60.0) -> None:
        from common.coordination.paths import SCHEDULER_LEADER

        pids = set(self.system.pids())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            contenders = self.view_client.raw.Lock(SCHEDULER_LEADER).contenders()
            if contenders:
                # A scheduler's id is `<host>-<pid>` (Settings.scheduler_id's default).
                pid = int(contenders[0].rsplit("-", 1)[1])
                if pid in pids and self.ctx.redis.get(keys.SCHEDULER_FENCE):
                    self.leader_pid = pid
                    self.standby_pids = sorted(pids - {pid})
                    return
            time.sleep(0.05)
        raise RuntimeError("no scheduler became leader")

    def snapshot(self) -> Snapshot:
        red = redis_counters(self.ctx.redis)
        return Snapshot(
            time.time(),
            red.commands,
            red.cpu,
            cpu_of(self.leader_pid),
            sum(cpu_of(p) for p in self.standby_pids),
            tree_cpu_seconds([self.agents_proc.pid]) if self.agents_proc else 0.0,
            cpu_of(self.zk_pid),
            zk_mntr(self.env["TASKLAB_ZK_HOSTS"]),
        )

    # -- the phases -----------------------------------------------------------------------
    def join(self, view, log_dir: Path) -> dict:
        from common.coordination.paths import agent_node

        before = zk_mntr(self.env["TASKLAB_ZK_HOSTS"])
        t0 = time.time()
        self.start_agents(log_dir)
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while len(seen) < self.n_agents:
            if time.monotonic() > deadline or self.agents_proc.poll() is not None:
                raise RuntimeError(f"only {len(seen)} of {self.n_agents} agents joined")
            now = time.time()
            for info in view.agents():
                seen.setdefault(info.agent_id, now)
            view.changed.clear()
            view.changed.wait(0.005)
        all_seen = max(seen.values())
        # Let the last notifications land before ZooKeeper's counters are read.
        time.sleep(1.0)
        delta = zk_delta(
            zk_mntr(self.env["TASKLAB_ZK_HOSTS"]), before, self.env["TASKLAB_ZK_CHROOT"]
        )
        lags = []
        for agent_id, when in seen.items():
            stat = self.view_client.exists(agent_node(agent_id))
            if stat is not None:
                lags.append(1e3 * (when - stat.ctime / 1000))
        lags.sort()
        n = self.n_agents
        return {
            "agents": n,
            "all_seen_s": all_seen - t0,
            "seen_after_node_p50_ms": lags[len(lags) // 2] if lags else math.nan,
            "seen_after_node_max_ms": lags[-1] if lags else math.nan,
            # /live-agents watchers: the two schedulers' views and this harness's.
            "views": 3,
            "watches_fired_per_join": delta["watches_fired"] / n,
            "children_watches_per_join": delta["watches_children"] / n,
            "zk_requests_per_join": delta["requests"] / n,
            "zk_reads_per_join": delta["reads"] / n,
            "zk_writes_per_join": delta["writes"] / n,
            "zk_bytes_read_per_join": delta["bytes_read"] / n,
        }

    def replay(self, workload: Workload) -> list[str]:
        """Submit every arrival at its recorded time (open loop: a late submit is not waited
        for, the next one goes at its own time); each task's PENDING time is its submit."""
        from common.adapters.redis_store import RedisTaskStore
        from common.client import TaskClient

        client = TaskClient(RedisTaskStore(self.ctx.redis))
        ids: list[str] = []
        t0 = time.monotonic()
        for arrival in workload.arrivals:
            delay = t0 + arrival.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            task, _ = client.submit(
                {
                    "taskName": "scaling",
                    "taskType": "SHELL",
                    "payload": f"sleep {arrival.duration:.3f}",
                }
            )
            ids.append(task.task_id)
        return ids

    def timelines(self, ids: list[str]):
        pipe = self.ctx.redis.pipeline(transaction=False)
        for tid in ids:
            pipe.lrange(keys.history(tid), 0, -1)
            pipe.hget(keys.task(tid), "agentId")
        got = pipe.execute()
        out = []
        for i, tid in enumerate(ids):
            agent = got[2 * i + 1]
            out.append(timeline(tid, got[2 * i], agent.decode() if agent else None))
        return out


def per_second(a: Snapshot, b: Snapshot) -> dict[str, float]:
    dt = b.at - a.at
    return {
        "redis_commands": (b.redis_commands - a.redis_commands) / dt,
        "redis_cpu": (b.redis_cpu - a.redis_cpu) / dt,
        "leader_cpu": (b.leader_cpu - a.leader_cpu) / dt,
        "agents_cpu": (b.agents_cpu - a.agents_cpu) / dt,
        "zk_requests": (b.zk["zk_packets_received"] - a.zk["zk_packets_received"]) / dt,
        "zk_cpu": (b.zk_cpu - a.zk_cpu) / dt,
    }


def run_trial(ctx: Context, strategy: str, workload: Workload, mode: Mode, args, log_dir: Path):
    ctx.flush()
    trial = Trial(ctx, strategy, mode.agents, args.capacity, args)
    try:
        trial.start_schedulers(log_dir)
        view = trial.open_view()
        trial.wait_for_leader()
        join = trial.join(view, log_dir)
        # The replay's watchers are the two schedulers only: this view and its watches go.
        view.stop()
        trial.view_client.close()
        trial.view_client = None
        idle0 = trial.snapshot()
        time.sleep(IDLE_SECONDS)
        idle1 = trial.snapshot()
        background = per_second(idle0, idle1)
        r0 = trial.snapshot()
        ids = trial.replay(workload)
        harness = trial.system.wait_done(ids, 120 + len(ids) * 0.05)
        r1 = trial.snapshot()
        timelines = trial.timelines(ids)
    finally:
        trial.stop()
    dt = r1.at - r0.at
    n = len(ids)
    leader_cpu = r1.leader_cpu - r0.leader_cpu
    agents = [f"sim-{i + 1:03d}" for i in range(mode.agents)]
    row = summarize(timelines, agents, leader_cpu)
    row["leader_cpu_share"] = leader_cpu / dt
    row["standby_cpu_ms_per_task"] = 1e3 * (r1.standby_cpu - r0.standby_cpu) / n
    # Commands and CPU the replay caused: minus the harness's own (its counters' INFO and the
    # wait's HGETs) and minus the idle background over the replay's duration.
    cmds = r1.redis_commands - r0.redis_commands - 2 - harness
    row["redis_cmds_per_task"] = (cmds - background["redis_commands"] * dt) / n
    row["redis_cpu_us_per_task"] = (
        1e6 * (r1.redis_cpu - r0.redis_cpu - background["redis_cpu"] * dt) / n
    )
    row["agents_cpu_ms_per_task"] = (
        1e3 * (r1.agents_cpu - r0.agents_cpu - background["agents_cpu"] * dt) / n
    )
    row["zk_cpu_us_per_task"] = 1e6 * (r1.zk_cpu - r0.zk_cpu - background["zk_cpu"] * dt) / n
    zk = zk_delta(r1.zk, r0.zk, trial.env["TASKLAB_ZK_CHROOT"])
    row["zk_requests_per_task"] = (zk["requests"] - background["zk_requests"] * dt) / n
    row["zk_writes_per_task"] = zk["writes"] / n
    row["zk_reads_per_task"] = zk["reads"] / n
    row["zk_watches_per_task"] = zk["watches_fired"] / n
    row["replay_s"] = dt
    return {"strategy": strategy, "join": join, "background_per_s": background, "replay": row}


# -- the table ----------------------------------------------------------------------------------
COLUMNS = (
    ("strategy", "strategy", "{}"),
    ("placements / leader CPU s", "decisions_per_cpu_s", "{:.0f}"),
    ("placements / s (peak 1 s)", "peak_decisions_per_s", "{:.0f}"),
    ("leader CPU ms / task", "leader_cpu_ms_per_task", "{:.2f}"),
    ("wait p50 ms", "wait_p50_ms", "{:.1f}"),
    ("wait p99 ms", "wait_p99_ms", "{:.0f}"),
    ("busiest agent above even, mean / max", ("mean_excess", "max_excess"), "{:.2f} / {}"),
    ("tasks per agent min-max", ("tasks_per_agent_min", "tasks_per_agent_max"), "{}-{}"),
    ("most waiting on one agent", "max_waiting_on_agent", "{}"),
    ("Redis cmds / task", "redis_cmds_per_task", "{:.1f}"),
    ("Redis CPU µs / task", "redis_cpu_us_per_task", "{:.0f}"),
    ("ZK writes / task", "zk_writes_per_task", "{:.2f}"),
    ("ZK watches fired / task", "zk_watches_per_task", "{:.2f}"),
    ("lost / dup", ("lost", "duplicated"), "{} / {}"),
)


def render(results: list[dict], mode: Mode, workload: Workload) -> str:
    head = [c[0] for c in COLUMNS]
    lines = [
        f"{workload.name}: {len(workload.arrivals)} tasks replayed on {mode.agents} agents",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results:
        row = {"strategy": r["strategy"], **r["replay"]}
        cells = []
        for _, key, fmt in COLUMNS:
            values = [row[k] for k in key] if isinstance(key, tuple) else [row[key]]
            cells.append(fmt.format(*values))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| strategy | all agents seen s | seen after its node p50 / max ms "
        "| watches fired / join | of which children | ZK reads / join | ZK writes / join "
        "| ZK bytes read / join |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        j = r["join"]
        lines.append(
            f"| {r['strategy']} | {j['all_seen_s']:.2f} | {j['seen_after_node_p50_ms']:.0f} / "
            f"{j['seen_after_node_max_ms']:.0f} | {j['watches_fired_per_join']:.1f} | "
            f"{j['children_watches_per_join']:.1f} | {j['zk_reads_per_join']:.1f} | "
            f"{j['zk_writes_per_join']:.1f} | {j['zk_bytes_read_per_join']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from common.scheduling.strategies import STRATEGIES

    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="10 agents, the first 8 s of the workload")
    p.add_argument("--agents", type=int, help="agents (full 50, quick 10)")
    p.add_argument("--capacity", type=int, default=2, help="slots per agent (2)")
    p.add_argument("--strategies", help=f"comma-separated (all: {','.join(sorted(STRATEGIES))})")
    p.add_argument("--reps", type=int, help="repetitions of every strategy (1)")
    p.add_argument("--workload", type=Path, default=DEFAULT_FILE)
    p.add_argument("--log-level", default="WARNING", help="log level of the started roles")
    p.add_argument("--seed", type=int, default=None, help="order seed (default: random)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    base = MODES["quick" if args.quick else "full"]
    mode = Mode(base.name, args.agents or base.agents, base.seconds, args.reps or base.reps)
    strategies = args.strategies.split(",") if args.strategies else sorted(STRATEGIES)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        p.error(f"unknown strategies {unknown} (have {sorted(STRATEGIES)})")
    workload = load(args.workload).until(mode.seconds)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    plan = [s for _ in range(mode.reps) for s in strategies]
    random.Random(seed).shuffle(plan)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = REPO / ".tasklab" / "bench" / f"scaling-{stamp}"
    args.out.mkdir(parents=True, exist_ok=True)

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ctx = Context(workdir)
    results: list[dict] = []
    load_before = os.getloadavg()
    try:
        ctx.start()
        reason = ctx.ensure_services(2)
        if reason:
            raise SystemExit(f"error: {reason}")
        print(
            f"-- {mode.name} run: {len(plan)} trials, {mode.agents} agents x {args.capacity} "
            f"slots, {len(workload.arrivals)} tasks, seed {seed}; logs in {workdir}",
            flush=True,
        )
        for i, strategy in enumerate(plan, 1):
            log_dir = workdir / f"{i:02d}-{strategy}"
            log_dir.mkdir(parents=True)
            result = run_trial(ctx, strategy, workload, mode, args, log_dir)
            results.append(result)
            r = result["replay"]
            print(
                f"[{i}/{len(plan)}] {strategy:<12} {r['placements']} placed, "
                f"{r['decisions_per_cpu_s']:.0f}/leader CPU s, wait p99 {r['wait_p99_ms']:.0f} ms, "
                f"lost {r['lost']} dup {r['duplicated']}; all agents seen in "
                f"{result['join']['all_seen_s']:.2f} s",
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted; stopping what this run started", file=sys.stderr)
        return 130
    finally:
        ctx.stop()
    noise = {
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    print(render(results, mode, workload))
    print(
        f"load average before / after: {load_before[0]:.1f} / {noise['loadavg_after'][0]:.1f} "
        f"on {noise['cpus']} cores"
    )
    path = args.out / f"scaling-{mode.name}-{stamp}.json"
    path.write_text(
        json.dumps(
            {"mode": mode.__dict__, "seed": seed, "noise": noise, "results": results},
            default=str,
        )
    )
    print(f"results: {path}")
    ok = all(r["replay"]["lost"] == 0 and r["replay"]["duplicated"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
