"""Submit through the front door (stage 4): gRPC and REST next to the direct Redis client.

    python -m bench.front_door [--quick]        # make bench-stage4 / make bench-stage4-quick

Needs the bench extra (psutil, for the CPU of the providers and the API). One run starts
Redis and ZooKeeper natively (and Kafka, when the REST API runs: its readiness names Kafka),
two TaskService providers (`tasklab run rpc --stage 4`) and, once stage 4 has it, the REST API
(`tasklab run api --stage 4`), each as a user would start it. Then every path, in one shuffled
order repeated `--reps` times so that the machine's drift spreads over them:

1. throughput: `--threads` client threads submit `n` tasks, each thread as fast as its calls
   return; submits per second over the wall time, and p50/p99 of the calls' latencies.
2. fixed rate: `--rate` submits per second (100) for `--seconds`, on an open-loop schedule: a
   call's latency counts from when it was *due*, so a path that falls behind is charged for
   the wait instead of quietly sending less (no coordinated omission).
3. CPU per submit over the throughput phase: the client process, the server side (providers,
   API) and Redis. Where cores are short, throughput is CPU-bound: these say why a ratio is
   what it is, and what a machine with cores to spare would do with it.

The paths, each submitting the same small SHELL task:
- direct: `TaskClient.submit` on `RedisTaskStore` (validation, one Lua script), the floor;
- grpc: `TaskServiceProxy.submit` -> a provider (round robin over two) -> the same TaskClient;
  the proxy adds a requestId to every Submit (what makes its failover safe), so each gRPC
  submit also writes the idempotency key and its fingerprint;
- rest: httpx `POST /api/v1/tasks` -> the API -> its proxy -> a provider.
Figures are medians over the repetitions and, above all, ratios to the direct client of the
same run. No scheduler or agent runs: what is measured is the cost of getting a task accepted
(what a submit answers); running tasks is bench/run.py's subject.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench import front_door_report as report
from bench.measure import redis_counters, tree_cpu_seconds
from bench.run import Context
from bench.systems import REPO

BODY = {"taskName": "bench", "taskType": "SHELL", "payload": "true"}
# The API's per-caller rate limit (50/s by default, config [api.rate_limiting]) would measure
# the limiter's refusals, not the path: raised out of reach, so every request still pays for
# its token-bucket check in Redis but none is refused. `--api-env` overrides these.
API_ENV = {
    "TASKLAB_API__RATE_LIMITING__REQUESTS_PER_SECOND": "1000000",
    "TASKLAB_API__RATE_LIMITING__BURST": "10000000",
}


@dataclass(frozen=True)
class Mode:
    name: str
    reps: int
    n: int  # submits per throughput trial
    seconds: float  # length of a fixed-rate trial
    warmup: int


MODES = {
    # A smoke run (well under two minutes): every path and phase once; figures rough.
    "quick": Mode("quick", 1, 600, 5.0, 50),
    "full": Mode("full", 3, 5000, 30.0, 200),
}


# -- the two phases --------------------------------------------------------------------------
def throughput(submit: Callable[[], None], n: int, threads: int) -> dict:
    """`threads` threads share `n` submits, each sending its next as soon as one returns."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        mine: list[float] = []
        while True:
            with lock:
                i = next(counter)
            if i >= n:
                break
            t = time.perf_counter()
            try:
                submit()
            except Exception as exc:  # noqa: BLE001 - counted and shown, the run goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join(600)  # bounded: a hung path is reported with what it did by then
    wall = time.perf_counter() - start
    return {
        "n": n,
        "threads": threads,
        "seconds": wall,
        "per_s": len(latencies) / wall if wall > 0 else float("nan"),
        **report.latency_figures(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def fixed_rate(submit: Callable[[], None], rate: float, seconds: float, workers: int) -> dict:
    """Calls due at `rate` per second, each on a pool thread, timed from when it was due."""
    due = report.schedule(rate, seconds)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def call(at: float) -> None:
        try:
            submit()
        except Exception as exc:  # noqa: BLE001
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        done = time.perf_counter()
        with lock:
            latencies.append(done - at)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for offset in due:
            at = start + offset
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(call, at)
    return {
        "rate": rate,
        "seconds": seconds,
        "n": len(due),
        **report.latency_figures(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


# -- the paths -------------------------------------------------------------------------------
class FrontDoor:
    """The services and processes of one run, and a submit function per path."""

    def __init__(self, ctx: Context, log_dir: Path, log_level: str) -> None:
        self.ctx = ctx
        self.log_dir = log_dir
        self.log_level = log_level
        self.procs: list = []
        self.kinds: dict[str, list] = {"rpc": [], "api": []}
        self.chroot = f"/bench-{uuid.uuid4().hex[:8]}"
        self.zk = None
        self.proxy = None
        self.http = None
        self.api_url = ""

    @staticmethod
    def rest_unavailable() -> str | None:
        from common.stages import load_stage

        if "api" not in load_stage(4).roles:
            return "stage 4 has no `api` role yet (`tasklab run api --stage 4`, common.api)"
        return None

    def env(self, stage: int) -> dict[str, str]:
        return {
            **self.ctx.service_env(stage),
            "TASKLAB_ZK_CHROOT": self.chroot,
            # Production timers and limits (config/local.toml), not the test suite's.
            "TASKLAB_ENV": "local",
            "TASKLAB_LOG_LEVEL": self.log_level,
            "TASKLAB_LOG_FORMAT": "json",
        }

    def _start(self, role: str, name: str, stage: int, **extra: str):
        from common.devstack.roles import RoleProcess

        proc = RoleProcess(role, 4, {**self.env(stage), **extra}, self.log_dir, name).start()
        self.procs.append(proc)
        self.kinds.setdefault(role, []).append(proc)
        return proc

    def server_pids(self, path: str) -> list[int]:
        """The processes a path's submits run through besides the client and Redis."""
        roles = {"direct": (), "grpc": ("rpc",), "rest": ("rpc", "api")}[path]
        return [p.pid for role in roles for p in self.kinds.get(role, []) if p.alive()]

    def start_grpc(self, providers: int) -> None:
        from kazoo.client import KazooClient

        from common.devstack.base import free_port
        from common.rpc.proxy import TaskServiceProxy
        from common.rpc.registry import TASK_SERVICE

        hosts = self.ctx.service_env(2)["TASKLAB_ZK_HOSTS"]
        root = KazooClient(hosts=hosts)
        root.start(timeout=10)
        root.ensure_path(self.chroot + TASK_SERVICE)
        root.stop()
        root.close()
        addresses = []
        for i in range(providers):
            address = f"127.0.0.1:{free_port()}"
            self._start("rpc", f"bench-rpc-{i + 1}", 2, TASKLAB_RPC_ADDRESS=address)
            addresses.append(address)
        self.zk = KazooClient(hosts=hosts + self.chroot)
        self.zk.start(timeout=10)
        self.proxy = TaskServiceProxy(self.zk, default_timeout=10.0).start()
        deadline = time.monotonic() + 60
        while sorted(self.proxy.providers()) != sorted(addresses):
            if time.monotonic() > deadline or not all(p.alive() for p in self.procs):
                raise RuntimeError(f"providers did not register (logs in {self.log_dir})")
            time.sleep(0.1)

    def start_rest(self, extra_env: dict[str, str]) -> None:
        import httpx

        from common.devstack.base import free_port

        address = f"127.0.0.1:{free_port()}"
        proc = self._start("api", "bench-api", 4, **extra_env, TASKLAB_API_ADDRESS=address)
        self.api_url = f"http://{address}"
        self.http = httpx.Client(
            base_url=self.api_url,
            timeout=10.0,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not proc.alive():
                self.http.close()
                self.http = None
                tail = " | ".join(proc.log_text().strip().splitlines()[-3:])
                raise RuntimeError(f"the API did not answer /health: {tail or 'no output'}")
            time.sleep(0.2)

    def submitters(self) -> dict[str, Callable[[], None]]:
        from common.adapters.redis_store import RedisTaskStore
        from common.client import TaskClient

        direct = TaskClient(RedisTaskStore(self.ctx.redis))
        out: dict[str, Callable[[], None]] = {"direct": lambda: direct.submit(dict(BODY))}
        if self.proxy is not None:
            from common.rpc.gen import task_service_pb2 as pb

            request = pb.SubmitRequest(task_name="bench", task_type=pb.SHELL, payload="true")
            proxy = self.proxy
            out["grpc"] = lambda: proxy.submit(request)
        if self.http is not None:
            http = self.http

            def rest() -> None:
                answer = http.post("/api/v1/tasks", json=BODY)
                if answer.status_code != 201:
                    raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:200]}")

            out["rest"] = rest
        return out

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.proxy is not None:
            self.proxy.close()
        if self.zk is not None:
            self.zk.stop()
            self.zk.close()
        for proc in reversed(self.procs):
            proc.stop(timeout=20)


# -- the run ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.front_door", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="small smoke run (under two minutes)")
    p.add_argument("--reps", type=int, help="repetitions of every trial (full 3, quick 1)")
    p.add_argument("--n", type=int, help="submits per throughput trial")
    p.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--rate", type=float, default=100.0, help="fixed-rate submits/s (100)")
    p.add_argument("--seconds", type=float, help="length of a fixed-rate trial")
    p.add_argument("--providers", type=int, default=2, help="TaskService providers (2)")
    p.add_argument("--paths", default=",".join(report.PATHS), help="direct,grpc,rest")
    p.add_argument("--log-level", default="WARNING", help="log level of the started roles")
    p.add_argument(
        "--api-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the API process (repeatable), e.g. a rate limit to lift",
    )
    p.add_argument("--seed", type=int, default=None, help="shuffle seed (default: random)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = MODES["quick" if args.quick else "full"]
    mode = Mode(
        base.name,
        args.reps or base.reps,
        args.n or base.n,
        args.seconds or base.seconds,
        base.warmup,
    )
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = REPO / ".tasklab" / "bench" / f"front-door-{stamp}"
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    api_env = {**API_ENV, **dict(item.split("=", 1) for item in args.api_env if "=" in item)}
    if any("=" not in item for item in args.api_env):
        print("error: --api-env takes NAME=VALUE")
        return 2
    wanted = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(wanted) - set(report.PATHS))
    if unknown:
        print(f"error: unknown path(s) {', '.join(unknown)}; known: {', '.join(report.PATHS)}")
        return 2

    # A SIGTERM unwinds through the finally below: every process this run started is stopped
    # by its PID.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ctx = Context(workdir)
    door = FrontDoor(ctx, log_dir, args.log_level)
    skipped: dict[str, str] = {}
    trials: list[dict] = []
    started = time.time()
    try:
        ctx.start()
        if "grpc" in wanted or "rest" in wanted:
            err = ctx.ensure_services(2)
            if err:
                raise SystemExit(f"error: {err}")
            door.start_grpc(args.providers)
        if "rest" in wanted:
            reason = door.rest_unavailable() or ctx.ensure_services(4)
            if reason:
                skipped["rest"] = reason
                print(f"-- REST: skipped ({reason})", flush=True)
            else:
                try:
                    door.start_rest(api_env)
                except RuntimeError as exc:
                    # The other paths are still worth measuring: the REST row says why not.
                    skipped["rest"] = str(exc)
                    print(f"-- REST: skipped ({exc})", flush=True)
        submitters = {k: v for k, v in door.submitters().items() if k in wanted}
        for submit in submitters.values():
            for _ in range(mode.warmup):  # connections, channels, scripts loaded
                submit()
        plan = [(rep, name) for rep in range(mode.reps) for name in submitters]
        random.Random(seed).shuffle(plan)
        print(
            f"-- {mode.name} run: {len(plan)} trials, seed {seed}, {args.threads} client "
            f"threads, {args.providers} providers; logs in {log_dir}",
            flush=True,
        )
        for i, (rep, name) in enumerate(plan, 1):
            ctx.flush()  # every trial on an empty Redis: no path pays for another's keys
            t = time.monotonic()
            result = {"path": name, "rep": rep}
            servers = door.server_pids(name)
            cpu0, red0, client0 = (
                tree_cpu_seconds(servers),
                redis_counters(ctx.redis),
                time.process_time(),
            )
            result["throughput"] = throughput(submitters[name], mode.n, args.threads)
            client_s = time.process_time() - client0
            red1, cpu1 = redis_counters(ctx.redis), tree_cpu_seconds(servers)
            result["cpu"] = report.cpu_per_submit(
                mode.n, client_s, cpu1 - cpu0, red1.minus(red0).cpu
            )
            result["fixed_rate"] = fixed_rate(
                submitters[name], args.rate, mode.seconds, workers=args.threads
            )
            result["errors"] = result["throughput"]["errors"] + result["fixed_rate"]["errors"]
            trials.append(result)
            first = result["throughput"]["first_error"] or result["fixed_rate"]["first_error"]
            print(
                f"   [{i}/{len(plan)}] {name} rep {rep}: {report.one_line(result)} "
                f"({time.monotonic() - t:.1f}s)"
                + (f"\n      first error: {first}" if first else ""),
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted: stopping what this run started", file=sys.stderr)
        return 130
    finally:
        door.stop()
        ctx.stop()

    summary = report.summarize(trials)
    meta = {
        "mode": mode.__dict__,
        "reps": mode.reps,
        "threads": args.threads,
        "rate": args.rate,
        "seconds": mode.seconds,
        "providers": args.providers,
        "seed": seed,
        "started": started,
        "wall_seconds": time.time() - started,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "skipped": skipped,
        "command": " ".join(
            ["python -m bench.front_door", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    doc = {"meta": meta, "summary": summary, "trials": trials}
    out_json = args.out / f"front-door-{mode.name}-{stamp}.json"
    out_json.write_text(json.dumps(doc, indent=1))
    (args.out / f"latest-front-door-{mode.name}.json").write_text(json.dumps(doc, indent=1))
    print()
    print(report.table(summary, meta))
    print(f"\nJSON: {out_json}  ({meta['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
